package nft

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCompileFromMatchesCompile checks the incremental compile against a
// compile from scratch, over random edits of random lists.
func TestCompileFromMatchesCompile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randPrefix := func(v4 bool) netip.Prefix {
		if v4 {
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
			return netip.PrefixFrom(a, 20+r.IntN(13)).Masked()
		}
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), byte(r.IntN(256))})
		return netip.PrefixFrom(a, 40+r.IntN(9)).Masked()
	}
	randList := func(n int, v4 bool) []netip.Prefix {
		var out []netip.Prefix
		for range n {
			out = append(out, randPrefix(v4))
		}
		return out
	}
	edit := func(l []netip.Prefix, v4 bool) []netip.Prefix {
		l = slices.Clone(l)
		switch op := r.IntN(6); {
		case op == 0 && len(l) > 0: // replace one
			l[r.IntN(len(l))] = randPrefix(v4)
		case op == 1: // insert some
			i := r.IntN(len(l) + 1)
			l = slices.Insert(l, i, randList(1+r.IntN(3), v4)...)
		case op == 2 && len(l) > 0: // delete some
			i := r.IntN(len(l))
			l = slices.Delete(l, i, min(len(l), i+1+r.IntN(3)))
		case op == 3: // append, with a duplicate
			l = append(l, randPrefix(v4))
			if len(l) > 1 {
				l = append(l, l[0])
			}
		case op == 4 && len(l) > 0: // truncate
			l = l[:r.IntN(len(l))]
		default: // reorder: a different list for the patch
			r.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
		}
		return l
	}
	for range 50 {
		p := Policy{Port: 5432, AllowV4: randList(r.IntN(300), true), AllowV6: randList(r.IntN(50), false), Peers: randList(3, true)}
		_, src, err := compileFrom(&source{}, p)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			p = Policy{Port: 5432, AllowV4: edit(p.AllowV4, true), AllowV6: edit(p.AllowV6, false), Peers: edit(p.Peers, true)}
			var got compiled
			got, src, err = compileFrom(src, p)
			if err != nil {
				t.Fatal(err)
			}
			want, err := compile(p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want.policy(), got.policy(), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
				t.Fatalf("compileFrom differs from compile (-want +got):\n%s", diff)
			}
			if !slices.Equal(got.cut4, want.cut4) || !slices.Equal(got.cut6, want.cut6) {
				t.Fatalf("compileFrom cuts %v %v, want %v %v", got.cut4, got.cut6, want.cut4, want.cut6)
			}
		}
	}
}

func TestShards(t *testing.T) {
	c, err := compile(bigPolicy(5*shardElems/4, 0, 0, netip.MustParsePrefix("255.255.255.255/32")))
	if err != nil {
		t.Fatal(err)
	}
	f := c.families()[0]
	if len(f.shards) != 3 {
		t.Fatalf("%d shards, want 3", len(f.shards))
	}
	var all []span
	for k, sh := range f.shards {
		n := 0
		for _, s := range sh.spans {
			n += elemCount(s)
			if s.from.Compare(sh.from) < 0 || sh.end.IsValid() && s.to.Compare(sh.end) >= 0 {
				t.Errorf("shard %d [%v, %v) holds %v-%v", k, sh.from, sh.end, s.from, s.to)
			}
		}
		if n > shardElems {
			t.Errorf("shard %d has %d elements, want at most %d", k, n, shardElems)
		}
		all = append(all, sh.spans...)
	}
	if !slices.Equal(all, c.allow4) {
		t.Errorf("shards do not hold allow4 exactly")
	}
	if !fits(c.allow4, c.cut4) {
		t.Errorf("fits(allow4, its own cuts) = false")
	}
	// A range across a cut does not fit.
	wide := mergeSpans([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if fits(wide, c.cut4) {
		t.Errorf("fits(a range across the cuts) = true")
	}
}

// TestShardedIncremental changes one shard, then a range across every
// cut (the Firewall re-shards), then back.
func TestShardedIncremental(t *testing.T) {
	n := newNS(t)
	fw := newFirewall(t, n.Handle)
	pol := bigPolicy(2*shardElems, shardElems, 0)
	steps := []func(){
		func() {},
		func() { pol.AllowV4[10] = netip.MustParsePrefix("192.0.2.0/24") },
		func() { pol.AllowV4 = append(pol.AllowV4, netip.MustParsePrefix("10.0.0.0/8")) },
		func() { pol.AllowV4 = pol.AllowV4[:len(pol.AllowV4)-1] },
		func() { pol.AllowV6 = pol.AllowV6[:100] },
	}
	for i, step := range steps {
		step()
		if err := fw.Apply(pol); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, err := Current(n.Handle)
		if err != nil {
			t.Fatal(err)
		}
		if want := merged(pol); !equalPolicy(got, want) {
			t.Fatalf("step %d: Current() has %d v4 and %d v6 prefixes, want %d and %d", i, len(got.AllowV4), len(got.AllowV6), len(want.AllowV4), len(want.AllowV6))
		}
	}
}

// TestVerifyLocksDown checks that a table that is not the intended one is
// replaced by a locked-down one.
func TestVerifyLocksDown(t *testing.T) {
	n := newNS(t)
	written, err := compile(bigPolicy(2*shardElems, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	tbl := newNSTable(n.Handle)
	defer tbl.socks.wait()
	if err := tbl.write(&written); err != nil {
		t.Fatal(err)
	}
	want, err := compile(bigPolicy(2*shardElems, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.verify(&want); !errors.Is(err, ErrMismatch) {
		t.Fatalf("verify of another policy = %v, want ErrMismatch", err)
	}
	got, err := Current(n.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !equalPolicy(got, Policy{Port: pgPort}) {
		t.Errorf("after a mismatch Current() = %d v4 prefixes, want a locked-down table", len(got.AllowV4))
	}
}
