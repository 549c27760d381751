package nft

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
)

// TestIncrementalEdgeRanges walks the incremental path through the ranges
// at the ends of the address space (0.0.0.0/0 has no interval-end element)
// and back; each Apply must finish promptly and install exactly the policy.
// Nothing the Firewall started outlives its Close.
func TestIncrementalEdgeRanges(t *testing.T) {
	testenv.CheckGoroutines(t)
	n := newNS(t)
	fw := newFirewall(t, n.Handle)
	p := func(v4, v6 []string) Policy {
		pol := Policy{Port: 5432}
		for _, s := range v4 {
			pol.AllowV4 = append(pol.AllowV4, netip.MustParsePrefix(s))
		}
		for _, s := range v6 {
			pol.AllowV6 = append(pol.AllowV6, netip.MustParsePrefix(s))
		}
		return pol
	}
	steps := []Policy{
		p([]string{"0.0.0.0/0"}, []string{"::/0"}),
		p([]string{"203.0.113.9/32"}, nil),
		p([]string{"0.0.0.0/0"}, []string{"::/0"}),
		p([]string{"255.255.255.255/32", "0.0.0.0/32"}, []string{"ffff::/16"}),
		p([]string{"0.0.0.0/1", "128.0.0.0/1"}, nil),
		p(nil, nil),
		p([]string{"0.0.0.0/0"}, []string{"::/0"}),
	}
	fallbacks := fw.t.fallbacks.Load()
	for i, pol := range steps {
		done := make(chan error, 1)
		go func() { done <- fw.Apply(pol) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("step %d: Apply(%v) = %v", i, pol, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("step %d: Apply(%v) did not return within 5s", i, pol)
		}
		got, err := Current(n.Handle)
		if err != nil {
			t.Fatal(err)
		}
		if want := merged(pol); !equalPolicy(got, want) {
			t.Fatalf("step %d: Current() = %v, want %v", i, got, want)
		}
	}
	// Every lookup must be answered: the deadline and the full read-back
	// are a safety net, not the path these changes take.
	if n := fw.t.fallbacks.Load() - fallbacks; n != 0 {
		t.Errorf("%d incremental applies fell back to a full read-back; want 0", n)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply(steps[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
}
