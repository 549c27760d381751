package up

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
)

// serveDNSForTest is moat dns serve --inherited N for this test binary
// (internal/cli, which has the command, imports this package).
func serveDNSForTest(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	zoneFile := fs.String("zone-file", "", "")
	domain := fs.String("domain", "", "")
	n := fs.Int("inherited", 0, "")
	ready := fs.Bool("ready", false, "")
	if fs.Parse(args) != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv, err := dns.New(dns.Config{Domain: *domain})
	if err == nil {
		var socks []dns.Socket
		if socks, err = dns.InheritedSockets(*n); err == nil {
			err = srv.ServeZoneFile(ctx, *zoneFile, 10*time.Millisecond, socks, func() {
				if *ready {
					os.Stdout.WriteString(dnsReady + "\n")
				}
			})
		}
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// TestDNSGroup: the DNS server processes share one set of sockets; one
// that dies is replaced on the same sockets; a later moat up (a new group
// on the data directory) adopts them, taking the sockets back from a
// running server, and starts more on them; stopDNS stops them all and no
// process that merely reuses a recorded pid.
func TestDNSGroup(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "dns"), 0o700); err != nil {
		t.Fatal(err)
	}
	svc := &domain.Service{Meta: domain.Meta{ID: "svc-a", ProjectID: "proj-a", State: domain.StateRunning}}
	node := &domain.Node{Meta: domain.Meta{ID: "node-a", State: domain.StateRunning}, ServiceID: "svc-a", Address: "198.18.1.10"}
	z, err := dns.Build("moat.test", 1, []*domain.Service{svc}, []*domain.Node{node})
	if err != nil {
		t.Fatal(err)
	}
	if err := dns.WriteZoneFile(filepath.Join(dir, ZoneFile), z); err != nil {
		t.Fatal(err)
	}
	name := z.Records()[0].Name

	pc, ln, err := dns.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	var files []*os.File
	for _, c := range []interface{ File() (*os.File, error) }{pc.(*net.UDPConn), ln.(*net.TCPListener)} {
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	pc.Close()
	ln.Close()
	log := slog.New(slog.DiscardHandler)
	want := dnsRecord{Loopback: addr, Internet: "198.18.0.1:53", Prefix: "moat-t-"}
	g := newDNSGroup(dir, "moat.test", exe, 2, log)
	if err := g.use(files, want); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopDNS(context.Background(), dir, 5*time.Second) })
	if n, err := g.ensure(ctx); n != 2 || err != nil {
		t.Fatalf("ensure = %d, %v; want 2 started", n, err)
	}
	answers := func(network string) bool {
		m := new(miekg.Msg)
		m.SetQuestion(name, miekg.TypeA)
		r, _, err := (&miekg.Client{Net: network, Timeout: time.Second}).Exchange(m, addr)
		return err == nil && len(r.Answer) == 1 && r.Answer[0].(*miekg.A).A.String() == "198.18.1.10"
	}
	check := func(when string, want int) []int {
		t.Helper()
		r, live := readDNSServers(dir)
		if len(live) != want || !slices.Equal(r.PIDs, live) {
			t.Fatalf("%s: record %+v, running %v; want %d servers, all running", when, r, live, want)
		}
		for _, network := range []string{"udp", "tcp"} {
			if !answers(network) {
				t.Errorf("%s: no %s answer on %s", when, network, addr)
			}
		}
		return live
	}
	first := check("started", 2)

	// One dies: the other answers at once; ensure (what superviseDNS
	// does every second) starts another on the same sockets.
	if err := syscall.Kill(first[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := WaitGone(ctx, first[0], 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if !answers("udp") {
			t.Errorf("query %d with one of two servers killed: no answer", i)
		}
	}
	if n, err := g.ensure(ctx); n != 1 || err != nil {
		t.Fatalf("ensure after a kill = %d, %v; want 1 started", n, err)
	}
	second := check("one restarted", 2)
	if slices.Contains(second, first[0]) || !slices.Contains(second, first[1]) {
		t.Errorf("servers %v after %d was killed, want %d and a new one", second, first[0], first[1])
	}
	g.close() // this "moat up" ends; its servers run on

	// A later moat up adopts them (with a third server) ...
	g2 := newDNSGroup(dir, "moat.test", exe, 3, log)
	if ok, err := g2.adopt(ctx, dnsRecord{Loopback: "127.0.0.1:0", Internet: want.Internet, Prefix: want.Prefix}); !ok || err != nil {
		t.Fatalf("adopt = %v, %v; want the running servers adopted", ok, err)
	}
	defer g2.close()
	if g2.rec.Loopback != addr {
		t.Errorf("adopted servers on %s, want %s", g2.rec.Loopback, addr)
	}
	if n, err := g2.ensure(ctx); n != 1 || err != nil {
		t.Fatalf("ensure of 3 = %d, %v; want 1 started", n, err)
	}
	third := check("adopted", 3)
	// ... and its new server holds the same sockets: with the two others
	// gone it answers alone.
	if err := stopPIDs(ctx, second, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"udp", "tcp"} {
		if !answers(network) {
			t.Errorf("the adopted group's new server alone: no %s answer", network)
		}
	}
	// A recorded pid some other process now has is not stopped.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	r, _ := readDNSServers(dir)
	r.PIDs = append(r.PIDs, other.Process.Pid)
	b, _ := json.Marshal(r)
	if err := os.WriteFile(filepath.Join(dir, dnsServerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := stopDNS(ctx, dir, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range third {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("dns server %d runs after stopDNS", pid)
		}
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Errorf("a process that reused a recorded pid was stopped: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, dnsServerFile)); !os.IsNotExist(err) {
		t.Errorf("the dns server record is left after stopDNS: %v", err)
	}
}

// TestDNSLegacyRecord: the record of the one server of a moat up from
// before several (a "pid", no sockets) is not adopted: that server is
// stopped, for new ones on fresh sockets.
func TestDNSLegacyRecord(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "dns"), 0o700); err != nil {
		t.Fatal(err)
	}
	pc, ln, err := dns.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	ln.Close()
	want := dnsRecord{Loopback: "127.0.0.1:0", Internet: "198.18.0.1:53", Prefix: "moat-t-"}
	g := newDNSGroup(dir, "moat.test", exe, 1, slog.New(slog.DiscardHandler))
	if err := g.use([]*os.File{udp, tcp}, want); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopDNS(context.Background(), dir, 5*time.Second); g.close() })
	if _, err := g.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	pid := g.rec.PIDs[0]
	legacy, _ := json.Marshal(map[string]any{"pid": pid, "loopback": pc.LocalAddr().String(), "internet": want.Internet, "prefix": want.Prefix, "zone_file": g.zoneFile()})
	if err := os.WriteFile(filepath.Join(dir, dnsServerFile), legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, live := readDNSServers(dir); !slices.Equal(live, []int{pid}) {
		t.Fatalf("legacy record: running %v, want [%d]", live, pid)
	}
	g2 := newDNSGroup(dir, "moat.test", exe, 2, slog.New(slog.DiscardHandler))
	if ok, err := g2.adopt(ctx, want); ok || err != nil {
		t.Fatalf("adopt of a legacy record = %v, %v; want false (not adopted), nil", ok, err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("the legacy record's server %d still runs", pid)
	}
}
