// Package dns is the platform's authoritative DNS server for the service
// zone: `<svc-id>.<proj-id>.<domain>` for public services and
// `<svc-id>.<proj-id>.vpc.<domain>` for services attached to a VPC (both
// published; the private name resolves to the private address).
//
// A Zone is computed by a pure function (Build) from services and nodes; a
// Server answers queries from the Zone it was last given (SetZone, a
// lock-free atomic swap), and Watch rebuilds the zone on every change of the
// store's desired-state revision. So that names resolve while the control
// plane is down or restarting, Watch can also write each zone to a file
// (WriteZoneFile, atomic) that a server in another process follows
// (FollowZoneFile, `moat dns serve`), answering from the last zone it read.
// The server is authoritative only: it never recurses, refuses names
// outside its zone and serves IPv4 addresses only.
//
// Imported by the control plane's wiring (internal/cli, internal/up) and tests; it
// imports domain (which names services) and store, never a provider or
// the simulator.
package dns

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/domain"
)

// DefaultDomain is the service zone when none is configured.
const DefaultDomain = "moat.test"

// Nameserver is a server named in the zone's NS records. When Name lies
// inside the zone and Addr is set, the zone also publishes Name's A record
// (glue).
type Nameserver struct {
	Name string
	Addr netip.Addr
}

// Record is one A record of a zone.
type Record struct {
	Name string     `json:"name"` // canonical: lower case, fully qualified
	Addr netip.Addr `json:"addr"`
}

// Zone is an immutable snapshot of the service zone. Build makes one; a
// Server answers from it.
type Zone struct {
	origin string // canonical FQDN, "moat.test."
	serial uint32
	ns     []string                // canonical FQDNs
	hosts  map[string][]netip.Addr // owner → A records
	ents   map[string]bool         // empty non-terminals: names with data only below them
}

// Build computes the zone for origin (such as "moat.test") from the store's
// services and nodes at desired-state revision serial. For every running or
// migrating service it publishes one name, holding the address of the
// service's primary node (Service.IsPrimary): the public name when the service is
// public, the private name when it is attached to a VPC; and under it the
// read-only name ro.<name>, holding its running replicas' addresses. The other name of
// the service does not exist (NXDOMAIN). Services whose primary has no IPv4
// address yet publish nothing.
//
// The apex carries SOA and NS records; with no nameservers given, the
// single nameserver is "ns.<origin>" without an address. Build does no I/O
// and errs only on an invalid origin or nameserver.
func Build(origin string, serial int64, services []*domain.Service, nodes []*domain.Node, nameservers ...Nameserver) (*Zone, error) {
	o, err := canonicalOrigin(origin)
	if err != nil {
		return nil, err
	}
	z := &Zone{origin: o, serial: uint32(serial), hosts: map[string][]netip.Addr{}, ents: map[string]bool{}}
	if len(nameservers) == 0 {
		nameservers = []Nameserver{{Name: "ns." + o}}
	}
	for _, ns := range nameservers {
		name := miekg.CanonicalName(ns.Name)
		if _, ok := miekg.IsDomainName(name); !ok || name == "." {
			return nil, fmt.Errorf("nameserver %q: not a domain name", ns.Name)
		}
		if ns.Addr.IsValid() && !ns.Addr.Unmap().Is4() {
			return nil, fmt.Errorf("nameserver %s: address %s: only IPv4 is served", ns.Name, ns.Addr)
		}
		if slices.Contains(z.ns, name) {
			continue
		}
		z.ns = append(z.ns, name)
		if ns.Addr.IsValid() && miekg.IsSubDomain(o, name) && name != o {
			z.add(name, ns.Addr.Unmap())
		}
	}

	primaries := primaries(services, nodes)
	replicas := map[string][]*domain.Node{}
	for _, n := range nodes {
		if n.State == domain.StateRunning && n.Address != "" {
			replicas[n.ServiceID] = append(replicas[n.ServiceID], n)
		}
	}
	zoneName := strings.TrimSuffix(o, ".")
	for _, svc := range services {
		if !domain.Serving(svc.State) {
			continue
		}
		if !validLabel(svc.ID) || !validLabel(svc.ProjectID) {
			continue
		}
		p := primaries[svc.ID]
		if p == nil {
			continue
		}
		addr, err := netip.ParseAddr(p.Address)
		if err != nil || !addr.Unmap().Is4() {
			continue
		}
		z.add(miekg.CanonicalName(domain.ServiceName(svc, zoneName)), addr.Unmap())
		for _, r := range replicas[svc.ID] {
			ra, err := netip.ParseAddr(r.Address)
			if r.ID == p.ID || err != nil || !ra.Unmap().Is4() {
				continue
			}
			z.add(miekg.CanonicalName(domain.ReadOnlyName(svc, zoneName)), ra.Unmap())
		}
	}
	z.findENTs()
	return z, nil
}

// findENTs records the empty non-terminals: the names between the origin
// and a name with records that have none of their own.
func (z *Zone) findENTs() {
	for name := range z.hosts {
		for parent := parentName(name); parent != z.origin && parent != ""; parent = parentName(parent) {
			if _, ok := z.hosts[parent]; !ok {
				z.ents[parent] = true
			}
		}
	}
}

func (z *Zone) add(name string, a netip.Addr) {
	if !slices.Contains(z.hosts[name], a) {
		z.hosts[name] = append(z.hosts[name], a)
		slices.SortFunc(z.hosts[name], netip.Addr.Compare)
	}
}

// primaries maps a service ID to its primary node: the live node with
// an address holding the service's primary role (Service.IsPrimary), a
// running one before any other, then the lowest ID (so the result does
// not depend on the order of nodes).
func primaries(services []*domain.Service, nodes []*domain.Node) map[string]*domain.Node {
	rank := func(n *domain.Node) int {
		if n.State == domain.StateRunning {
			return 0
		}
		return 1
	}
	svcs := map[string]*domain.Service{}
	for _, s := range services {
		svcs[s.ID] = s
	}
	out := map[string]*domain.Node{}
	for _, n := range nodes {
		svc := svcs[n.ServiceID]
		if svc == nil || !svc.IsPrimary(n) || n.Address == "" || domain.Going(n.State) {
			continue
		}
		cur := out[n.ServiceID]
		if cur == nil || rank(n) < rank(cur) || rank(n) == rank(cur) && n.ID < cur.ID {
			out[n.ServiceID] = n
		}
	}
	return out
}

func canonicalOrigin(origin string) (string, error) {
	o := miekg.CanonicalName(origin)
	if _, ok := miekg.IsDomainName(o); !ok || o == "." || strings.Contains(o, `\`) {
		return "", fmt.Errorf("zone %q: not a domain name", origin)
	}
	return o, nil
}

// validLabel reports whether s is usable as one DNS label of a name we
// publish: 1 to 63 letters, digits and hyphens.
func validLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parentName strips the first label of a canonical name without escapes;
// "" for the root.
func parentName(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return ""
	}
	return name[i+1:]
}

// Origin is the zone's apex, canonical and fully qualified ("moat.test.").
func (z *Zone) Origin() string { return z.origin }

// Serial is the SOA serial: the desired-state revision, modulo 2^32.
func (z *Zone) Serial() uint32 { return z.serial }

// Nameservers are the names in the apex NS records.
func (z *Zone) Nameservers() []string { return slices.Clone(z.ns) }

// Lookup returns the A records of name (any case, with or without the
// final dot).
func (z *Zone) Lookup(name string) []netip.Addr {
	return slices.Clone(z.hosts[miekg.CanonicalName(name)])
}

// Records lists every A record of the zone, sorted by name then address.
func (z *Zone) Records() []Record {
	var out []Record
	for name, addrs := range z.hosts {
		for _, a := range addrs {
			out = append(out, Record{Name: name, Addr: a})
		}
	}
	slices.SortFunc(out, func(a, b Record) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), a.Addr.Compare(b.Addr))
	})
	return out
}
