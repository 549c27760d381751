package domain

import (
	"net/netip"
	"slices"
)

// Access is the compiled source policy of one service: which client sources
// its nodes accept on the PostgreSQL port. The firewall, pg_hba and the
// session terminator are all rendered from it, so the layers agree.
type Access struct {
	// V4 and V6 are the admitted client sources.
	V4, V6 []netip.Prefix
	// Peers are the service's other nodes (replication), one /32 each.
	Peers []netip.Prefix
}

// CompileAccess computes what svc's nodes admit. A public service admits its
// allowlist. A service attached to vpc admits the allowlist intersected with
// the VPC's CIDR and the CIDRs of its active peerings, and nothing from the
// internet: no IPv6 (the VPCs are IPv4) and no public range. peers are the
// addresses of the service's other nodes.
func CompileAccess(svc *Service, vpc *VPC, peerings []*Peering, peers []netip.Addr) Access {
	allow := AllowlistPrefixes(svc.AllowedIPs)
	var out Access
	if svc.VPCID == "" || vpc == nil {
		for _, p := range allow {
			if p.Addr().Is4() {
				out.V4 = append(out.V4, p)
			} else {
				out.V6 = append(out.V6, p)
			}
		}
	} else {
		var scope []netip.Prefix
		if p, err := netip.ParsePrefix(vpc.CIDR); err == nil {
			scope = append(scope, p)
		}
		for _, pc := range peerings {
			if pc.State != StateActive || pc.VPCID != vpc.ID {
				continue
			}
			for _, s := range pc.PeerCIDRs {
				if p, err := netip.ParsePrefix(s); err == nil {
					scope = append(scope, p)
				}
			}
		}
		out.V4 = Intersect(allow, scope)
	}
	for _, a := range peers {
		a = a.Unmap()
		out.Peers = append(out.Peers, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// Intersect returns the prefixes covering exactly the addresses inside both
// a and b. Two prefixes either nest or are disjoint, so each overlapping
// pair contributes the narrower one.
func Intersect(a, b []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range a {
		for _, y := range b {
			if !x.Overlaps(y) {
				continue
			}
			if x.Bits() >= y.Bits() {
				out = append(out, x)
			} else {
				out = append(out, y)
			}
		}
	}
	slices.SortFunc(out, func(p, q netip.Prefix) int {
		if c := p.Addr().Compare(q.Addr()); c != 0 {
			return c
		}
		return p.Bits() - q.Bits()
	})
	return slices.Compact(out)
}

// Admits reports whether the compiled policy admits a client from addr.
func (a Access) Admits(addr netip.Addr) bool {
	addr = addr.Unmap()
	set := a.V4
	if addr.Is6() {
		set = a.V6
	}
	for _, p := range set {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
