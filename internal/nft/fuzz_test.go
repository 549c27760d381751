package nft

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
)

// lookup answers as the kernel's interval set does: the element with the
// greatest key not above a decides; a start admits, an interval end or no
// element at all does not.
func lookup(elems []nftables.SetElement, a netip.Addr) bool {
	best := -1
	var bestKey netip.Addr
	for i, e := range elems {
		k, _ := netip.AddrFromSlice(e.Key)
		if k.Compare(a) <= 0 && (best < 0 || k.Compare(bestKey) > 0) {
			best, bestKey = i, k
		}
	}
	return best >= 0 && !elems[best].IntervalEnd
}

// FuzzPolicy checks the security invariant of the compiled sets: an address
// is admitted by the elements Apply writes iff it is inside one of the
// policy's prefixes, and what Current would read back is the same set.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 10, 0, 1, 0, 24}, []byte{10, 1, 2, 3, 11, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0}, []byte{255, 255, 255, 255})
	f.Add([]byte{255, 255, 255, 255, 32, 255, 255, 255, 254, 31}, []byte{255, 255, 255, 253, 255, 255, 255, 254})
	f.Add([]byte{198, 18, 0, 2, 31, 198, 18, 0, 4, 32}, []byte{198, 18, 0, 1, 198, 18, 0, 5, 198, 18, 0, 4})
	f.Fuzz(func(t *testing.T, prefixData, probeData []byte) {
		// Prefixes: 4 address bytes and a length; the first address byte's
		// top bit picks IPv6 for a handful of shapes so both families run.
		var v4, v6 []netip.Prefix
		for b := prefixData; len(b) >= 5; b = b[5:] {
			a4 := netip.AddrFrom4([4]byte(b[:4]))
			v4 = append(v4, netip.PrefixFrom(a4, int(b[4])%33))
			var a16 [16]byte
			binary.BigEndian.PutUint32(a16[:], binary.BigEndian.Uint32(b[:4]))
			a16[15] = b[3]
			v6 = append(v6, netip.PrefixFrom(netip.AddrFrom16(a16), int(b[4])%129))
		}
		p := Policy{Port: 5432, AllowV4: v4, AllowV6: v6}
		c, err := compile(p)
		if err != nil {
			t.Fatalf("compile(%+v): %v", p, err)
		}
		e4, e6 := elements(c.allow4), elements(c.allow6)
		for b := probeData; len(b) >= 4; b = b[4:] {
			a4 := netip.AddrFrom4([4]byte(b[:4]))
			var a16 [16]byte
			binary.BigEndian.PutUint32(a16[:], binary.BigEndian.Uint32(b[:4]))
			a16[15] = b[3]
			for _, probe := range []struct {
				a     netip.Addr
				in    []netip.Prefix
				elems []nftables.SetElement
			}{{a4, v4, e4}, {netip.AddrFrom16(a16), v6, e6}} {
				want := slices.ContainsFunc(probe.in, func(q netip.Prefix) bool { return q.Contains(probe.a) })
				if got := lookup(probe.elems, probe.a); got != want {
					t.Fatalf("sets for %v admit %v = %v, want %v", probe.in, probe.a, got, want)
				}
				// Merge must also keep exactly the same addresses.
				merged := Merge(probe.in)
				if got := slices.ContainsFunc(merged, func(q netip.Prefix) bool { return q.Contains(probe.a) }); got != want {
					t.Fatalf("Merge(%v) = %v contains %v = %v, want %v", probe.in, merged, probe.a, got, want)
				}
			}
		}
		// Through the verdict map and the shard it jumps to, the table
		// admits what the whole set does.
		for _, f := range c.families() {
			jumps := jumpElements(f.jumps())
			for b := probeData; len(b) >= 4; b = b[4:] {
				a := netip.AddrFrom4([4]byte(b[:4]))
				whole := e4
				if !f.v4 {
					var a16 [16]byte
					binary.BigEndian.PutUint32(a16[:], binary.BigEndian.Uint32(b[:4]))
					a16[15] = b[3]
					a, whole = netip.AddrFrom16(a16), e6
				}
				got := false
				if chain := route(jumps, a); chain != "" {
					for _, sh := range f.shards {
						if sh.name == chain {
							got = lookup(elements(sh.spans), a)
						}
					}
				}
				if want := lookup(whole, a); got != want {
					t.Fatalf("through the shards %v is admitted = %v, want %v", a, got, want)
				}
			}
		}
		// Reading the elements back gives the compiled ranges.
		for _, s := range c.sets() {
			got, err := spansOf(elements(s.spans), s.v4)
			if err != nil {
				t.Fatalf("spansOf(elements(%v)): %v", s.spans, err)
			}
			if !slices.Equal(got, s.spans) {
				t.Fatalf("spansOf(elements(%v)) = %v", s.spans, got)
			}
		}
		// Merged prefixes are sorted, disjoint and not mergeable further.
		for _, m := range [][]netip.Prefix{Merge(v4), Merge(v6)} {
			for i := 1; i < len(m); i++ {
				prev, cur := spanOf(m[i-1]), spanOf(m[i])
				if prev.to.Compare(cur.from) >= 0 {
					t.Fatalf("Merge: %v and %v overlap or are out of order", m[i-1], m[i])
				}
			}
		}
	})
}

// route returns the chain the verdict map elements send a to, "" for none.
func route(elems []nftables.SetElement, a netip.Addr) string {
	best := -1
	var bestKey netip.Addr
	for i, e := range elems {
		k, _ := netip.AddrFromSlice(e.Key)
		if k.Compare(a) <= 0 && (best < 0 || k.Compare(bestKey) > 0 || k == bestKey && !e.IntervalEnd) {
			best, bestKey = i, k
		}
	}
	if best < 0 || elems[best].IntervalEnd {
		return ""
	}
	return elems[best].VerdictData.Chain
}
