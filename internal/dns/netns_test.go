package dns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
)

// TestInsideNamespace: the server's sockets are opened inside the local
// cloud's internet namespace, and a host on that internet resolves through
// it over UDP and TCP. (The gateway address stands in for the DNS address
// the wiring assigns from InfraPool.)
func TestInsideNamespace(t *testing.T) {
	netnstest.New(t) // skips, with the reason, where namespaces cannot be made
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	c, err := localcloud.New(localcloud.Config{Prefix: "moat-dns" + hex.EncodeToString(b[:]) + "-", LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	laptop, err := c.AddHost(ctx, "laptop", localcloud.Internet(localcloud.SimPool))
	if err != nil {
		t.Fatal(err)
	}

	s := newServer(t, dns.Config{})
	if err := s.SetZone(testZone(t, 3)); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(localcloud.InternetGateway.String(), "53")
	var pc net.PacketConn
	var ln net.Listener
	if err := c.Do(c.InternetNS(), func() error {
		var err error
		pc, ln, err = dns.Listen(ctx, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx, pc, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	for _, network := range []string{"udp", "tcp"} {
		var r *miekg.Msg
		err := c.Do(laptop.NS, func() error {
			m := new(miekg.Msg)
			m.SetQuestion(pubName, miekg.TypeA)
			var err error
			r, _, err = (&miekg.Client{Net: network, Timeout: 3 * time.Second}).Exchange(m, addr)
			return err
		})
		if err != nil {
			t.Fatalf("%s query from laptop: %v", network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*miekg.A).A.String() != "198.18.1.10" {
			t.Errorf("%s query from laptop: %v, want A 198.18.1.10", network, r.Answer)
		}
	}
}
