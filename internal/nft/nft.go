// Package nft renders and atomically applies a node's firewall.
//
// A node's firewall is one nftables table, "inet moat", in the node's network
// namespace. Its input chain drops everything except loopback, replies to
// connections the node itself opened (by conntrack direction, never by a
// blanket "established" rule), neighbour discovery, and TCP to the
// PostgreSQL port from the sources in the policy, held in interval sets.
// Because inbound packets of client connections are checked against the sets
// whatever their connection state, revoking a source also cuts its
// established connections.
//
// [Apply] replaces the table in one netlink transaction; [Firewall.Apply]
// does the same but sends only the changed set elements when the table
// already holds the previous policy it applied. [Render] returns the same
// ruleset as nft(8) text, for golden tests and for comparison with nft -f.
//
// A failed request is classified by its errno (retry.go): a transient one
// (EBUSY, EAGAIN, ENOBUFS, EINTR, ENOMEM) is retried with a bounded backoff
// and never makes the table be recreated; only a table the kernel refuses
// to change in place (EINVAL, ENOENT, EEXIST, EOPNOTSUPP, ...) is deleted
// and created again, in the same transaction, so that no packet ever sees
// no table. A Firewall closes its sockets off the path of Apply;
// [Firewall.Close] waits for them.
//
// Files: firewall.go (the API), write.go (whole tables), delta.go (the
// changed elements between two policies), verify.go (reading back and
// comparing), batch.go and commit.go (one transaction as raw netlink
// messages, elements in chunks under the 64 KiB attribute limit, and the
// committer that sends it), kernel.go (requests the library lacks),
// conn.go (sockets), retry.go (error classes), and the compile steps:
// merge.go, shard.go, rules.go, render.go.
//
// It is imported by the agent (and by tests and benchmarks); it holds no
// policy logic: what is allowed is decided by internal/domain.
package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// TableName is the name of the inet table Moat owns in a node's namespace.
const TableName = "moat"

// Names of the interval sets in the table.
const (
	setAllow4 = "allow4"
	setAllow6 = "allow6"
	setPeer4  = "peer4"
	setPeer6  = "peer6"
)

// Policy is what a node's firewall admits besides loopback, neighbour
// discovery and replies to the node's own connections.
type Policy struct {
	// Port is the TCP port clients and peers may reach (PostgreSQL, 5432).
	Port uint16
	// AllowV4 and AllowV6 are the client sources allowed to reach Port.
	AllowV4 []netip.Prefix
	AllowV6 []netip.Prefix
	// Peers are the service's other nodes (either family), allowed to reach
	// Port for replication.
	Peers []netip.Prefix
	// Refuse closes the firewall to everyone and answers TCP connections
	// to Port with a reset instead of silence, so that a client trying
	// several hosts moves to the next one at once instead of waiting for
	// its connect timeout. It is for a fenced node, and only valid with
	// no allowed sources (AllowV4, AllowV6 and Peers empty). Other
	// traffic is still dropped silently.
	Refuse bool
}

// ErrInvalidPolicy is returned (wrapped) for a policy that cannot be
// compiled: no port, an invalid prefix, or a prefix in the wrong list.
var ErrInvalidPolicy = errors.New("invalid firewall policy")

// Validate reports whether p can be compiled.
func (p Policy) Validate() error {
	if p.Port == 0 {
		return fmt.Errorf("%w: port 0", ErrInvalidPolicy)
	}
	check := func(field string, ps []netip.Prefix, want4, want6 bool) error {
		for _, q := range ps {
			switch {
			case !q.IsValid():
				return fmt.Errorf("%w: %s: invalid prefix %v", ErrInvalidPolicy, field, q)
			case q.Addr().Is4() && !want4, !q.Addr().Is4() && !want6:
				return fmt.Errorf("%w: %s: prefix %v of the wrong family", ErrInvalidPolicy, field, q)
			}
		}
		return nil
	}
	if err := check("allow_v4", p.AllowV4, true, false); err != nil {
		return err
	}
	if err := check("allow_v6", p.AllowV6, false, true); err != nil {
		return err
	}
	if err := check("peers", p.Peers, true, true); err != nil {
		return err
	}
	if p.Refuse && len(p.AllowV4)+len(p.AllowV6)+len(p.Peers) > 0 {
		return fmt.Errorf("%w: refuse: a refusing firewall admits no one; leave allow_v4, allow_v6 and peers empty or unset refuse", ErrInvalidPolicy)
	}
	return nil
}

// compiled is a validated policy with its sets' merged ranges.
type compiled struct {
	port uint16
	// refuse adds a last rule to the input chain that resets TCP
	// connections to port (Policy.Refuse).
	refuse         bool
	allow4, allow6 []span
	peer4, peer6   []span
	// cut4 and cut6 split allow4 and allow6 into shards (see shard.go):
	// shard k holds the ranges from cut[k-1] (the family's first address
	// for k = 0) up to cut[k] excluded (the family's last address for the
	// last shard). No range crosses a cut.
	cut4, cut6 []netip.Addr
	// gen tells the sets' generation in the kernel, "a" or "b": a full
	// apply fills new sets of the other generation and deletes the old.
	gen string
}

// name returns the name in the kernel of the set, map or chain base.
func (c *compiled) name(base string) string {
	g := c.gen
	if g == "" {
		g = "a"
	}
	return base + "_" + g
}

func compile(p Policy) (compiled, error) {
	c, _, err := compileFrom(nil, p)
	return c, err
}

// source is what an incremental compile starts from: the lists of the
// last policy compiled (AllowV4, AllowV6, Peers), as the caller gave
// them, and their ranges sorted before merging.
type source struct {
	lists  [3][]netip.Prefix
	sorted [3][]span
}

// compileFrom compiles p; when prev is not nil it is the source of the
// last policy, and the ranges of lists that changed little are patched
// instead of sorted again. It returns the source of p when prev is not
// nil.
func compileFrom(prev *source, p Policy) (compiled, *source, error) {
	if err := p.Validate(); err != nil {
		return compiled{}, nil, err
	}
	lists := [3][]netip.Prefix{p.AllowV4, p.AllowV6, p.Peers}
	var next source
	for i, l := range lists {
		ok := false
		if prev != nil {
			next.sorted[i], ok = patchSorted(prev.lists[i], prev.sorted[i], l)
		}
		if !ok {
			next.sorted[i] = sortedSpans(l)
		}
	}
	c := compiled{port: p.Port, refuse: p.Refuse, allow4: mergeSorted(next.sorted[0]), allow6: mergeSorted(next.sorted[1])}
	c.peer4, c.peer6 = splitFamilies(mergeSorted(next.sorted[2]))
	c.cut4, c.cut6 = cutsOf(c.allow4), cutsOf(c.allow6)
	if prev == nil {
		return c, nil, nil
	}
	for i, l := range lists {
		next.lists[i] = slices.Clone(l)
	}
	return c, &next, nil
}

// splitFamilies splits sorted spans into their IPv4 and IPv6 parts.
func splitFamilies(spans []span) (v4, v6 []span) {
	i := 0
	for i < len(spans) && spans[i].from.Is4() {
		i++
	}
	return spans[:i:i], spans[i:]
}

// sets returns the compiled plain sets in table order: the shards of
// allow4, those of allow6, then peer4 and peer6.
func (c *compiled) sets() []namedSet {
	var out []namedSet
	for _, f := range c.families() {
		for _, sh := range f.shards {
			out = append(out, namedSet{sh.name, f.v4, sh.spans})
		}
	}
	return append(out,
		namedSet{c.name(setPeer4), true, c.peer4},
		namedSet{c.name(setPeer6), false, c.peer6})
}

type namedSet struct {
	name  string
	v4    bool
	spans []span
}

// policy converts c back to a Policy with merged prefixes.
func (c *compiled) policy() Policy {
	p := Policy{Port: c.port, Refuse: c.refuse}
	for _, s := range c.allow4 {
		p.AllowV4 = append(p.AllowV4, s.prefixes()...)
	}
	for _, s := range c.allow6 {
		p.AllowV6 = append(p.AllowV6, s.prefixes()...)
	}
	for _, s := range append(append([]span(nil), c.peer4...), c.peer6...) {
		p.Peers = append(p.Peers, s.prefixes()...)
	}
	return p
}
