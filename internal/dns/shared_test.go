package dns_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
)

// serveEnv, when set to a zone file, makes this test binary a DNS server
// process on one inherited UDP/TCP pair (what moat dns serve --inherited 1
// does), for TestSharedSockets.
const serveEnv = "MOAT_DNS_TEST_SERVE_ZONE_FILE"

func TestMain(m *testing.M) {
	if zf := os.Getenv(serveEnv); zf != "" {
		os.Exit(serveInherited(zf))
	}
	os.Exit(m.Run())
}

func serveInherited(zoneFile string) int {
	srv, err := dns.New(dns.Config{Domain: "moat.test"})
	if err == nil {
		var socks []dns.Socket
		if socks, err = dns.InheritedSockets(1); err == nil {
			err = srv.ServeZoneFile(context.Background(), zoneFile, 10*time.Millisecond, socks, func() { os.Stdout.WriteString("ready\n") })
		}
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// TestSharedSockets checks the claim moat up's several DNS server processes
// rest on: processes that hold the same inherited sockets (shared file
// descriptions, not SO_REUSEPORT) all receive from them, and when one is
// killed the others answer everything, so that a client retrying a UDP
// query once never notices. Each process serves a zone of its own here
// (the same name, a different address) to tell who answered.
func TestSharedSockets(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pc, ln, err := dns.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	udp, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	// Only the servers hold the sockets once they run.
	pc.Close()
	ln.Close()
	defer udp.Close()
	defer tcp.Close()

	var name string
	servers := make([]*exec.Cmd, 2)
	exited := make([]chan struct{}, 2)
	for i := range servers {
		svc := &domain.Service{Meta: domain.Meta{ID: "svc-a", ProjectID: "proj-a", State: domain.StateRunning}}
		node := &domain.Node{Meta: domain.Meta{ID: "node-a", State: domain.StateRunning}, ServiceID: "svc-a", Address: serverAddr(i)}
		z, err := dns.Build("moat.test", 1, []*domain.Service{svc}, []*domain.Node{node})
		if err != nil {
			t.Fatal(err)
		}
		name = z.Records()[0].Name
		zf := filepath.Join(t.TempDir(), "zone.json")
		if err := dns.WriteZoneFile(zf, z); err != nil {
			t.Fatal(err)
		}
		c := exec.Command(exe)
		c.Env = append(os.Environ(), serveEnv+"="+zf)
		c.ExtraFiles = []*os.File{udp, tcp}
		c.Stderr = os.Stderr
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		servers[i], exited[i] = c, make(chan struct{})
		go func() { c.Wait(); close(exited[i]) }()
		t.Cleanup(func() { c.Process.Kill(); <-exited[i] })
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
			t.Fatalf("server %d: %q, %v", i, line, err)
		}
	}
	udp.Close()
	tcp.Close()

	// ask queries name once, and once more if that goes unanswered (a
	// stub resolver's retry), and returns who answered ("" for no one).
	var retries atomic.Int64
	ask := func(network string) (string, error) {
		m := new(miekg.Msg)
		m.SetQuestion(name, miekg.TypeA)
		var err error
		for try := range 2 {
			if try > 0 {
				retries.Add(1)
			}
			var r *miekg.Msg
			r, _, err = (&miekg.Client{Net: network, Timeout: 500 * time.Millisecond}).Exchange(m, addr)
			if err == nil && len(r.Answer) == 1 {
				return r.Answer[0].(*miekg.A).A.String(), nil
			}
			if err == nil {
				err = fmt.Errorf("answer %v", r.Answer)
			}
		}
		return "", err
	}
	// Four clients query without pause, udp and every tenth over tcp,
	// while server 0 is killed: phase 0 before the kill, 1 during it (the
	// kill sent, the process not yet reaped), 2 after.
	var mu sync.Mutex
	phase, total := 0, 0
	answered := [3]map[string]int{{}, {}, {}}
	var failed []string
	counted := make(chan struct{}, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				network := "udp"
				if (i+c)%10 == 9 {
					network = "tcp"
				}
				mu.Lock()
				p := phase
				mu.Unlock()
				got, err := ask(network)
				mu.Lock()
				if got == "" {
					failed = append(failed, network+": "+err.Error())
				}
				answered[p][got]++ // by the phase it started in
				if p == phase {
					total++
				}
				mu.Unlock()
				select {
				case counted <- struct{}{}:
				default:
				}
			}
		}()
	}
	waitTotal := func(n int) {
		for {
			mu.Lock()
			done := total >= n
			mu.Unlock()
			if done {
				return
			}
			<-counted
		}
	}
	waitTotal(200)
	mu.Lock()
	phase = 1
	mu.Unlock()
	if err := servers[0].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited[0]
	mu.Lock()
	phase, total = 2, 0
	mu.Unlock()
	waitTotal(400)
	close(stop)
	wg.Wait()
	t.Logf("answers by server address: before the kill %v, during %v, after %v; %d queries retried", answered[0], answered[1], answered[2], retries.Load())
	if len(failed) > 0 {
		t.Errorf("%d queries unanswered after one retry: %v", len(failed), failed)
	}
	if answered[0][serverAddr(0)] == 0 || answered[0][serverAddr(1)] == 0 {
		t.Logf("before the kill one server answered everything: %v (the kernel's choice; the claim is about after)", answered[0])
	}
	if n := answered[2][serverAddr(0)]; n != 0 || answered[2][serverAddr(1)] < 400 {
		t.Errorf("after server 0 was killed: answers %v, want all from server 1 (%s)", answered[2], serverAddr(1))
	}
}

func serverAddr(i int) string { return "198.18.1." + string(rune('1'+i)) }
