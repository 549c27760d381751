package cli

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
)

// lockedBuffer is a bytes.Buffer for one writer and a concurrent reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDNSServe: moat dns serve answers from the zone file and follows it.
func TestDNSServe(t *testing.T) {
	t.Parallel()
	zoneFile := filepath.Join(t.TempDir(), "zone.json")
	write := func(addr string, serial int64) string {
		t.Helper()
		svc := &domain.Service{Meta: domain.Meta{ID: "svc-a", ProjectID: "proj-a", State: domain.StateRunning}}
		node := &domain.Node{Meta: domain.Meta{ID: "node-a", State: domain.StateRunning}, ServiceID: "svc-a", Address: addr}
		z, err := dns.Build("moat.test", serial, []*domain.Service{svc}, []*domain.Node{node})
		if err != nil {
			t.Fatal(err)
		}
		if err := dns.WriteZoneFile(zoneFile, z); err != nil {
			t.Fatal(err)
		}
		return z.Records()[0].Name
	}
	name := write("198.18.1.10", 1)
	addr := freeDNSPort(t)

	ctx, cancel := context.WithCancel(t.Context())
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() {
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		done <- a.run(ctx, []string{"dns", "serve", "--zone-file", zoneFile, "--listen", addr, "--poll", "10ms", "--ready"})
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("moat dns serve exited %d: %s", code, errb.String())
		}
	}()
	lookup := func() string {
		m := new(miekg.Msg)
		m.SetQuestion(name, miekg.TypeA)
		r, _, err := (&miekg.Client{Net: "udp", Timeout: time.Second}).Exchange(m, addr)
		if err != nil || len(r.Answer) != 1 {
			return ""
		}
		return r.Answer[0].(*miekg.A).A.String()
	}
	waitAnswer := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for lookup() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s never resolved to %s (stdout %q, stderr %q)", name, want, out.String(), errb.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); out.String() != "ready\n"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stdout = %q, want the ready line (stderr %q)", out.String(), errb.String())
		}
	}
	waitAnswer("198.18.1.10")
	write("198.18.1.11", 2)
	waitAnswer("198.18.1.11")
}

func TestDNSServeUsage(t *testing.T) {
	t.Parallel()
	zoneFile := filepath.Join(t.TempDir(), "zone.json")
	for _, args := range [][]string{
		{"dns", "serve", "--zone-file", zoneFile},
		{"dns", "serve", "--zone-file", zoneFile, "--listen", "127.0.0.1:0", "--inherited", "1"},
		{"dns", "serve", "--zone-file", zoneFile, "--listen", "127.0.0.1:0", "--poll", "0s"},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 2 || !strings.Contains(stderr, "moat: error:") {
			t.Errorf("moat %s = exit %d, %q; want a usage error (2)", strings.Join(args, " "), code, stderr)
		}
	}
}

// freeDNSPort returns a loopback address whose port is free for both UDP
// and TCP, as moat dns serve binds both: a port free for UDP alone may be
// another process's TCP port (an outgoing connection's, say).
func freeDNSPort(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP after 20 tries")
	return ""
}
