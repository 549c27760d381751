package nft

import (
	"fmt"
	"net/netip"
	"slices"
)

// Sharding. Each family's allowed ranges are split by address into shards
// of at most shardElems set elements, each shard its own interval set.
// A verdict map of the shards' address ranges (allow4_a, allow6_a) jumps
// to the shard's chain, which looks the source up in the shard's set: two
// lookups per packet whatever the list's length. Reading a set back costs
// the kernel a walk from the set's first element for every dump message,
// quadratic in the set's size; shards make it linear in the list's length,
// and an incremental change rebuilds only the lookup array of the shards
// it touches. See docs/design/0003-firewall.md.

// shardElems is the most set elements a full compile puts in one shard.
const shardElems = 8192

// maxShardElems is the most set elements a shard may grow to before the
// Firewall re-shards with a full replace.
const maxShardElems = 2 * shardElems

// family is one family's allowed ranges and their shards.
type family struct {
	v4     bool
	vmap   string // the verdict map's name
	shards []shard
}

// shard is one shard of a family: the ranges in [from, end), end invalid
// for the last shard, whose set and chain are both called name.
type shard struct {
	name      string
	from, end netip.Addr
	spans     []span
}

// families returns the shards of allow4 and allow6.
func (c *compiled) families() []family {
	return []family{
		{true, c.name(setAllow4), shardsOf(c.name(setAllow4), c.allow4, c.cut4, netip.IPv4Unspecified())},
		{false, c.name(setAllow6), shardsOf(c.name(setAllow6), c.allow6, c.cut6, netip.IPv6Unspecified())},
	}
}

// shardsOf splits spans at cuts. No span may cross a cut (fits).
func shardsOf(base string, spans []span, cuts []netip.Addr, zero netip.Addr) []shard {
	out := make([]shard, 0, len(cuts)+1)
	from := zero
	for k := 0; k <= len(cuts); k++ {
		var end netip.Addr
		n := len(spans)
		if k < len(cuts) {
			end = cuts[k]
			n, _ = slices.BinarySearchFunc(spans, end, func(s span, a netip.Addr) int { return s.from.Compare(a) })
		}
		out = append(out, shard{fmt.Sprintf("%s%d", base, k), from, end, spans[:n:n]})
		spans = spans[n:]
		from = end
	}
	return out
}

// elemCount is the number of set elements of s: a start, and an interval
// end unless s reaches the family's last address.
func elemCount(s span) int {
	if s.to.Next().IsValid() {
		return 2
	}
	return 1
}

// cutsOf chooses the cuts of sorted, merged spans: a new shard starts
// where the current one would pass shardElems elements.
func cutsOf(spans []span) []netip.Addr {
	var cuts []netip.Addr
	n := 0
	for _, s := range spans {
		e := elemCount(s)
		if n > 0 && n+e > shardElems {
			cuts = append(cuts, s.from)
			n = 0
		}
		n += e
	}
	return cuts
}

// fits reports whether spans can keep the shards cut at cuts: no span
// crosses a cut and no shard holds more than maxShardElems elements.
func fits(spans []span, cuts []netip.Addr) bool {
	prev := 0
	for k := 0; k <= len(cuts); k++ {
		n := len(spans)
		if k < len(cuts) {
			n, _ = slices.BinarySearchFunc(spans, cuts[k], func(s span, a netip.Addr) int { return s.from.Compare(a) })
			if n > 0 && spans[n-1].to.Compare(cuts[k]) >= 0 {
				return false // spans[n-1] crosses the cut
			}
		}
		if 2*(n-prev) > maxShardElems {
			return false
		}
		prev = n
	}
	return true
}

// mapElem is one element of a verdict map: a key, and the chain a start
// jumps to (none for an interval end).
type mapElem struct {
	key   netip.Addr
	end   bool
	chain string
}

// mapElems returns the verdict map of f: each shard's range jumps to the
// shard's chain.
func (f family) mapElems() []mapElem {
	var out []mapElem
	for _, sh := range f.shards {
		out = append(out, mapElem{sh.from, false, sh.name})
		if sh.end.IsValid() {
			out = append(out, mapElem{sh.end, true, ""})
		}
	}
	return out
}

// jumps returns the ranges of f's verdict map and their chains.
func (f family) jumps() []jump {
	var out []jump
	for _, sh := range f.shards {
		out = append(out, jump{sh.span(f.v4), sh.name})
	}
	return out
}

// sortMapElems sorts map elements as the sets' elements are sorted.
func sortMapElems(els []mapElem) {
	slices.SortFunc(els, func(a, b mapElem) int {
		return compareElem(elem{a.key, a.end}, elem{b.key, b.end})
	})
}

// tableSet is a set or verdict map of the table, in the order both Apply
// and Render create them.
type tableSet struct {
	name  string
	v4    bool
	vmap  bool
	spans []span // a set's ranges
	jumps []jump // a map's ranges and chains
}

type jump struct {
	span  span
	chain string
}

// tableSets returns the sets and maps of c: per family the verdict map
// and its shards, then the peers.
func (c *compiled) tableSets() []tableSet {
	var out []tableSet
	for _, f := range c.families() {
		out = append(out, tableSet{name: f.vmap, v4: f.v4, vmap: true, jumps: f.jumps()})
		for _, sh := range f.shards {
			out = append(out, tableSet{name: sh.name, v4: f.v4, spans: sh.spans})
		}
	}
	return append(out,
		tableSet{name: c.name(setPeer4), v4: true, spans: c.peer4},
		tableSet{name: c.name(setPeer6), v4: false, spans: c.peer6})
}

// span returns the addresses routed to sh.
func (sh shard) span(v4 bool) span {
	if sh.end.IsValid() {
		return span{sh.from, sh.end.Prev()}
	}
	last := lastAddr(v4)
	return span{sh.from, last}
}

func lastAddr(v4 bool) netip.Addr {
	if v4 {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}
