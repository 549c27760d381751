package nft

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// span is an inclusive address range [from, to] of one family.
type span struct {
	from, to netip.Addr
}

// spanOf returns the inclusive range a prefix covers. It does not
// allocate: it is called for every prefix of every policy.
func spanOf(p netip.Prefix) span {
	p = p.Masked()
	from := p.Addr()
	b := from.As16()
	bits := p.Bits()
	if from.Is4() {
		bits += 96
	}
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	switch {
	case bits <= 0:
		hi, lo = ^uint64(0), ^uint64(0)
	case bits < 64:
		hi |= ^uint64(0) >> bits
		lo = ^uint64(0)
	case bits < 128:
		lo |= ^uint64(0) >> (bits - 64)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	to := netip.AddrFrom16(b)
	if from.Is4() {
		to = to.Unmap()
	}
	return span{from: from, to: to}
}

// mergeSpans returns the union of the valid prefixes in ps as sorted,
// non-overlapping, non-adjacent ranges: IPv4 first, then IPv6.
func mergeSpans(ps []netip.Prefix) []span {
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		spans = append(spans, spanOf(p))
	}
	slices.SortFunc(spans, func(a, b span) int {
		if c := a.from.Compare(b.from); c != 0 {
			return c
		}
		return b.to.Compare(a.to) // wider first
	})
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.from.Is4() == s.from.Is4() {
				next := last.to.Next() // invalid when last.to is the family's last address
				if !next.IsValid() || s.from.Compare(next) <= 0 {
					if s.to.Compare(last.to) > 0 {
						last.to = s.to
					}
					continue
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// prefixes returns the minimal list of prefixes covering exactly s.
func (s span) prefixes() []netip.Prefix {
	var out []netip.Prefix
	from := s.from
	total := from.BitLen()
	for {
		// The widest prefix starting at from that stays inside s.
		bits := total
		for bits > 0 {
			p := netip.PrefixFrom(from, bits-1)
			if p.Masked().Addr() != from || spanOf(p).to.Compare(s.to) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(from, bits)
		out = append(out, p)
		end := spanOf(p).to
		if end == s.to {
			return out
		}
		from = end.Next()
	}
}

// prefix returns s as a single prefix when it is exactly one.
func (s span) prefix() (netip.Prefix, bool) {
	ps := s.prefixes()
	if len(ps) != 1 {
		return netip.Prefix{}, false
	}
	return ps[0], true
}

// Merge returns the union of the valid prefixes in ps as a sorted list of
// non-overlapping prefixes (IPv4 first, then IPv6), with overlapping and
// adjacent prefixes merged. Invalid prefixes are ignored. Addresses are not
// unmapped: an IPv4-mapped IPv6 prefix stays an IPv6 prefix.
func Merge(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range mergeSpans(ps) {
		out = append(out, s.prefixes()...)
	}
	return out
}

// comparePrefix orders prefixes by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// normalize sorts disjoint ranges and joins adjacent ones.
func normalize(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return a.from.Compare(b.from) })
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && out[n-1].to.Next() == s.from {
			out[n-1].to = s.to
			continue
		}
		out = append(out, s)
	}
	return out
}
