package domain

import (
	"fmt"
	"net/netip"
	"strings"
)

// rfc1918 lists the private IPv4 ranges a VPC may use.
var rfc1918 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

// ParsePrefix parses s as a CIDR in canonical form for field. With bareAddr,
// a bare address means a host prefix (/32 or /128). A prefix with host bits
// set is refused with a hint naming the canonical form.
func ParsePrefix(field, s string, bareAddr bool) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, Invalidf(CodeRequired, field, "give a CIDR such as 10.0.0.0/16", "a CIDR is required")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, Invalidf(CodeInvalidCIDR, field, "write it as ADDRESS/LENGTH, e.g. 10.0.0.0/16", "%q is not a CIDR", s)
		}
		if !bareAddr {
			return netip.Prefix{}, Invalidf(CodeInvalidCIDR, field, fmt.Sprintf("add a prefix length, e.g. %s/%d", a, a.BitLen()), "%q is an address, not a CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, Invalidf(CodeInvalidCIDR, field, "write it as ADDRESS/LENGTH, e.g. 10.0.0.0/16", "%q is not a CIDR", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, Invalidf(CodeInvalidCIDR, field, "write IPv4 ranges in dotted form, e.g. 10.0.0.0/16", "%q is an IPv4-mapped IPv6 range", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, Invalidf(CodeNonCanonicalCIDR, field, "use "+m.String(), "%q has host bits set", s)
	}
	// netip accepts leading zeros in neither family, and prints canonically;
	// a round trip catches spellings such as upper-case IPv6 or "::0".
	if p.String() != s {
		return netip.Prefix{}, Invalidf(CodeNonCanonicalCIDR, field, "use "+p.String(), "%q is not written canonically", s)
	}
	return p, nil
}

// IsPrivate4 reports whether p lies wholly inside RFC 1918 space.
func IsPrivate4(p netip.Prefix) bool {
	for _, r := range rfc1918 {
		if p.Addr().Is4() && r.Contains(p.Addr()) && p.Bits() >= r.Bits() {
			return true
		}
	}
	return false
}

// Contains reports whether outer contains every address of inner.
func Contains(outer, inner netip.Prefix) bool {
	return outer.Addr().BitLen() == inner.Addr().BitLen() &&
		outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// ParseVPCCIDR validates a VPC's CIDR: IPv4, RFC 1918, /16 to /24, canonical.
func ParseVPCCIDR(s string) (netip.Prefix, error) {
	const field = "cidr"
	p, err := ParsePrefix(field, s, false)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return p, Invalidf(CodeCIDRFamily, field, "use an IPv4 range such as 10.0.0.0/16", "a VPC range must be IPv4, got %s", p)
	}
	if p.Bits() < 16 || p.Bits() > 24 {
		return p, Invalidf(CodeCIDRPrefixLength, field, "use a prefix length from /16 to /24", "prefix length /%d is out of range", p.Bits())
	}
	if !IsPrivate4(p) {
		return p, Invalidf(CodeCIDRNotPrivate, field, "use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", "%s is not a private (RFC 1918) range", p)
	}
	return p, nil
}

// ParsePeerCIDR validates one CIDR of a peer network: IPv4, /16 to /28, canonical.
func ParsePeerCIDR(field, s string) (netip.Prefix, error) {
	p, err := ParsePrefix(field, s, false)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return p, Invalidf(CodeCIDRFamily, field, "use the peer VPC's IPv4 range, e.g. 172.31.0.0/16", "a peer range must be IPv4, got %s", p)
	}
	if p.Bits() < 16 || p.Bits() > 28 {
		return p, Invalidf(CodeCIDRPrefixLength, field, "use a prefix length from /16 to /28", "prefix length /%d is out of range", p.Bits())
	}
	return p, nil
}
