package postgres

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Policy is who may connect to a node over the network.
type Policy struct {
	// Allow are the client sources (IPv4 and IPv6) allowed to log in, with
	// TLS and SCRAM, as any role but Superuser and the replication role.
	Allow []netip.Prefix
	// Replicas are the service's other nodes, each allowed to replicate
	// from its own address only, with a client certificate whose common
	// name is its own Name (pg_ident maps that name, and no other, to the
	// replication role for that address).
	Replicas []Replica
	// ReplicationUser is the replication role. Default ReplicationUser.
	ReplicationUser string
}

// Replica is one of the service's other nodes.
type Replica struct {
	// Name is the common name of the node's replication client
	// certificate: its node ID. Letters, digits, '-', '_' and '.'; at most
	// 63 bytes.
	Name string
	// Addr is the node's address (a prefix: /32 or /128 normally).
	Addr netip.Prefix
}

// replicaNameRE is what a replica's name may be: it is written unquoted
// in pg_hba.conf's map option and in pg_ident.conf.
var replicaNameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,62}$`)

// replicaMap is the pg_ident map of the replica named name.
func replicaMap(name string) string { return "moat_repl_" + name }

// roleRE is what RenderHBA accepts as a role name: PostgreSQL's unquoted
// identifiers, lowercase, at most 63 bytes. Names are quoted as well, so
// keywords such as "all" or "replication" stay names.
var roleRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

const roleRule = "use lowercase letters, digits and '_', starting with a letter or '_', at most 63 bytes"

// RenderHBA renders pg_hba.conf for p. It is pure. In order:
//
//   - local connections: Superuser and MonitorUser only, by peer identity
//     through the map "moat" (the agent's management path, its base
//     backups over the replication protocol, its statistics scrapes);
//   - Superuser, the replication role and MonitorUser never log in over
//     the network;
//   - hostssl replication from each replica's address, certificate
//     authentication through that replica's own map (RenderIdent);
//   - hostssl from each allowed source, scram-sha-256;
//   - hostssl for members of SupportGroup from the node's own addresses
//     (samehost), scram-sha-256: an operator's support session while the
//     tenant's support grant lasts (the group has no members otherwise);
//   - a catch-all reject: plaintext and every other source are refused
//     with SQLSTATE 28000.
//
// Prefixes are masked, IPv4-mapped IPv6 prefixes become IPv4, duplicates
// are dropped and the lines sorted. An invalid or zoned prefix or an
// invalid role name is an error: nothing in p can escape its line.
func RenderHBA(p Policy) (string, error) {
	repl := p.ReplicationUser
	if repl == "" {
		repl = ReplicationUser
	}
	if !roleRE.MatchString(repl) {
		return "", fmt.Errorf("render pg_hba: replication user %q: %s", repl, roleRule)
	}
	allow, err := canonical(p.Allow)
	if err != nil {
		return "", fmt.Errorf("render pg_hba: allowed sources: %w", err)
	}
	replicas, err := canonicalReplicas(p.Replicas)
	if err != nil {
		return "", fmt.Errorf("render pg_hba: %w", err)
	}
	var b strings.Builder
	line := func(typ, db, user, addr, method string) {
		fmt.Fprintf(&b, "%-7s %-11s %-18s %-43s %s\n", typ, db, user, addr, method)
	}
	su, ru, mu := `"`+Superuser+`"`, `"`+repl+`"`, `"`+MonitorUser+`"`
	b.WriteString("# Written by Moat from the node's policy: do not edit.\n")
	b.WriteString("# TYPE  DATABASE    USER               ADDRESS                                     METHOD\n")
	b.WriteString("# Management: the Unix socket, the superuser and the monitoring role only, by peer identity.\n")
	line("local", "all", su, "", "peer map=moat")
	line("local", "replication", su, "", "peer map=moat")
	line("local", "all", mu, "", "peer map=moat")
	line("local", "all", "all", "", "reject")
	line("local", "replication", "all", "", "reject")
	b.WriteString("# The superuser, the replication and the monitoring roles never log in over the network.\n")
	for _, r := range []string{su, ru, mu} {
		line("host", "all", r, "0.0.0.0/0", "reject")
		line("host", "all", r, "::/0", "reject")
	}
	b.WriteString("# Replication: each of the service's other nodes, from its address, TLS and\n# a client certificate naming that node (pg_ident.conf's map for it).\n")
	for _, r := range replicas {
		line("hostssl", "replication", ru, r.Addr.String(), "cert map="+replicaMap(r.Name))
	}
	b.WriteString("# Clients: the allowed sources, TLS and SCRAM.\n")
	for _, a := range allow {
		line("hostssl", "all", "all", a.String(), "scram-sha-256")
	}
	b.WriteString("# Operator support sessions (design 0012): members of " + SupportGroup + ", temporary roles\n")
	b.WriteString("# that exist only while the tenant's support grant lasts, from the node itself.\n")
	line("hostssl", "all", "+"+SupportGroup, "samehost", "scram-sha-256")
	b.WriteString("# Everything else, plaintext included, is rejected (SQLSTATE 28000).\n")
	for _, db := range []string{"all", "replication"} {
		line("host", db, "all", "0.0.0.0/0", "reject")
		line("host", db, "all", "::/0", "reject")
	}
	return b.String(), nil
}

// canonicalReplicas checks the replicas' names and addresses, masks,
// sorts (by address) and deduplicates them. Two names at one address are
// an error: only the first line for an address would ever be used.
func canonicalReplicas(rs []Replica) ([]Replica, error) {
	out := make([]Replica, 0, len(rs))
	for _, r := range rs {
		if !replicaNameRE.MatchString(r.Name) {
			return nil, fmt.Errorf("replica name %q: use letters, digits, '-', '_', '.', at most 63 bytes", r.Name)
		}
		a, ok := hostLine(r.Addr)
		if !ok {
			return nil, fmt.Errorf("replica %s: prefix %q is not a valid, unzoned IP prefix", r.Name, r.Addr)
		}
		out = append(out, Replica{Name: r.Name, Addr: a})
	}
	slices.SortFunc(out, func(a, b Replica) int {
		if c := comparePrefix(a.Addr, b.Addr); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	out = slices.Compact(out)
	for i := 1; i < len(out); i++ {
		if out[i].Addr == out[i-1].Addr {
			return nil, fmt.Errorf("replicas %s and %s are both at %s", out[i-1].Name, out[i].Name, out[i].Addr)
		}
	}
	return out, nil
}

// RenderIdent renders pg_ident.conf: the map "moat" lets each of osUsers
// (the agent's OS user first, then the one the server runs as) log in as
// Superuser over the Unix socket, and the agent's as MonitorUser; each
// replica's map lets its certificate's name, and no other, log in as the
// replication role. It is pure; p is checked as RenderHBA checks it.
func RenderIdent(p Policy, osUsers ...string) (string, error) {
	repl := p.ReplicationUser
	if repl == "" {
		repl = ReplicationUser
	}
	if !roleRE.MatchString(repl) {
		return "", fmt.Errorf("render pg_ident: replication user %q: %s", repl, roleRule)
	}
	replicas, err := canonicalReplicas(p.Replicas)
	if err != nil {
		return "", fmt.Errorf("render pg_ident: %w", err)
	}
	var b strings.Builder
	b.WriteString("# Written by Moat: do not edit.\n# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n")
	var seen []string
	for _, u := range osUsers {
		if u == "" || slices.Contains(seen, u) {
			continue
		}
		if !identRE.MatchString(u) {
			return "", fmt.Errorf("render pg_ident: OS user %q cannot be named", u)
		}
		seen = append(seen, u)
		fmt.Fprintf(&b, "moat %s %s\n", u, Superuser)
	}
	if len(seen) > 0 {
		fmt.Fprintf(&b, "moat %s %s\n", seen[0], MonitorUser)
	}
	for _, r := range replicas {
		fmt.Fprintf(&b, "%s %s %s\n", replicaMap(r.Name), r.Name, repl)
	}
	return b.String(), nil
}

// canonical checks, masks, sorts and deduplicates prefixes.
func canonical(ps []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		q, ok := hostLine(p)
		if !ok {
			return nil, fmt.Errorf("prefix %q is not a valid, unzoned IP prefix", p)
		}
		out = append(out, q)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// inside reports whether a is inside one of ps.
func inside(a netip.Addr, ps []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range ps {
		if q, ok := hostLine(p); ok && q.Contains(a) {
			return true
		}
	}
	return false
}
