package nft

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/netnstest"
)

// wantRefused checks that a connection from src to dst gets a TCP reset:
// the dial fails with ECONNREFUSED, not a timeout.
func wantRefused(t *testing.T, n *netnstest.NS, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	if err := n.Probe(src, dst, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect %v -> %v: %v, want refused (ECONNREFUSED)", src, dst, err)
	}
}

// A refusing firewall resets connections to the port from anyone, in both
// families, and still drops everything else silently; a closed one that
// does not refuse drops the port too. Firewall.Apply switches between an
// allowlist, a refusing and a silent table.
func TestRefuseResets(t *testing.T) {
	t.Parallel()
	p := newPair(t, 1)
	serve(t, p, pgPort)
	serve(t, p, pgPort+1)
	srv4, srv6 := netip.AddrPortFrom(p.ServerV4, pgPort), netip.AddrPortFrom(p.ServerV6, pgPort)
	allow := Policy{Port: pgPort, AllowV4: []netip.Prefix{single(p.ClientV4)}}
	refuse := Policy{Port: pgPort, Refuse: true}

	fw := newFirewall(t, p.Server.Handle)
	if err := fw.Apply(allow); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, p.Client, p.ClientV4, srv4)
	wantDropped(t, p.Client, p.ExtraV4[0], srv4) // the allowlist drops, never refuses

	if err := fw.Apply(refuse); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, p.Client, p.ClientV4, srv4)
	wantRefused(t, p.Client, p.ExtraV4[0], srv4)
	wantRefused(t, p.Client, p.ClientV6, srv6)
	wantDropped(t, p.Client, p.ClientV4, netip.AddrPortFrom(p.ServerV4, pgPort+1))
	if got, err := Current(p.Server.Handle); err != nil || !equalPolicy(got, refuse) {
		t.Errorf("Current() = %+v, %v; want %+v", got, err, refuse)
	}

	if err := fw.Apply(Policy{Port: pgPort}); err != nil {
		t.Fatal(err)
	}
	wantDropped(t, p.Client, p.ClientV4, srv4)
	wantDropped(t, p.Client, p.ClientV6, srv6)

	if err := fw.Apply(refuse); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, p.Client, p.ClientV4, srv4)
	if err := fw.Apply(allow); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, p.Client, p.ClientV4, srv4)
	wantDropped(t, p.Client, p.ExtraV4[0], srv4)
	if got, err := Current(p.Server.Handle); err != nil || !equalPolicy(got, allow) {
		t.Errorf("Current() = %+v, %v; want %+v", got, err, allow)
	}
}

func TestRefuseWithSourcesInvalid(t *testing.T) {
	t.Parallel()
	for _, p := range []Policy{
		{Port: pgPort, Refuse: true, AllowV4: prefixes("192.0.2.0/24")},
		{Port: pgPort, Refuse: true, AllowV6: prefixes("2001:db8::/32")},
		{Port: pgPort, Refuse: true, Peers: prefixes("192.0.2.1/32")},
	} {
		if err := p.Validate(); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidPolicy", p, err)
		}
	}
	if err := (Policy{Port: pgPort, Refuse: true}).Validate(); err != nil {
		t.Errorf("Validate(refuse alone) = %v", err)
	}
}
