package nft

import (
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
	return mergeSorted(sortedSpans(ps))
}

// sortedSpans returns the ranges of the valid prefixes in ps, sorted by
// compareSpan.
func sortedSpans(ps []netip.Prefix) []span {
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			spans = append(spans, spanOf(p))
		}
	}
	slices.SortFunc(spans, compareSpan)
	return spans
}

// compareSpan orders ranges by start, the wider first.
func compareSpan(a, b span) int {
	if c := a.from.Compare(b.from); c != 0 {
		return c
	}
	return b.to.Compare(a.to)
}

// mergeSorted returns the union of ranges sorted by compareSpan as
// sorted, non-overlapping, non-adjacent ranges. It does not modify spans.
func mergeSorted(spans []span) []span {
	out := make([]span, 0, len(spans))
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

// maxInputDelta is the most prefixes an incremental compile takes out of
// and puts into a list; a larger change is compiled from scratch.
const maxInputDelta = 4096

// patchSorted returns the sorted ranges of next, given those of prev
// (sorted by sortedSpans). Callers change lists in place, append to them
// or cut from them, so the prefixes of prev and next that differ are found
// between their common head and common tail, in linear time and without
// sorting; ok is false when that part is larger than maxInputDelta.
func patchSorted(prev []netip.Prefix, sorted []span, next []netip.Prefix) (out []span, ok bool) {
	i := 0
	for i < len(prev) && i < len(next) && prev[i] == next[i] {
		i++
	}
	j := 0
	for j < len(prev)-i && j < len(next)-i && prev[len(prev)-1-j] == next[len(next)-1-j] {
		j++
	}
	removed, added := prev[i:len(prev)-j], next[i:len(next)-j]
	if len(removed)+len(added) > maxInputDelta {
		return nil, false
	}
	rs, as := sortedSpans(removed), sortedSpans(added)
	out = make([]span, 0, len(sorted)-len(rs)+len(as))
	for _, s := range sorted {
		for len(as) > 0 && compareSpan(as[0], s) < 0 {
			out = append(out, as[0])
			as = as[1:]
		}
		if len(rs) > 0 && rs[0] == s {
			rs = rs[1:]
			continue
		}
		out = append(out, s)
	}
	if len(rs) > 0 {
		return nil, false // prev and sorted disagree
	}
	return append(out, as...), true
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
