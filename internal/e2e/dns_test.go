package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/up"
)

// TestDNSOutlivesControlPlane: the platform DNS is served by processes of
// their own (two, on the same sockets), answering from the last zone the
// control plane wrote: with moat up stopped and one of them killed too, a
// service's name still resolves (real queries on loopback, each retried
// once at most, and psql by name from the laptop through 198.18.0.1:53); a
// restarted stack keeps the survivor, starts a second beside it, and a new
// service's name appears in both; a server that dies while moat up runs is
// replaced, with no query unanswered; moat down stops them all.
func TestDNSOutlivesControlPlane(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("named", 1)
	dnsAddr := e.stack.DNSAddr
	resolves := func(name, addr string) bool {
		got, err := lookupA(dnsAddr, name)
		return err == nil && len(got) == 1 && got[0] == addr
	}
	name, addr := svc.Connection.Host, svc.Connection.Address
	waitFor(t, 10*time.Second, func() bool { return resolves(name, addr) })

	// servers returns the DNS server pids the data directory records.
	servers := func() []int {
		t.Helper()
		var rec struct{ PIDs []int }
		b, err := os.ReadFile(filepath.Join(e.dir, "dns", "server.json"))
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			t.Fatalf("dns server record: %s, %v", b, err)
		}
		return rec.PIDs
	}
	// kill kills one server and checks that every one of n queries (UDP,
	// one retry) is answered while it dies and after.
	kill := func(pid int, n int, names map[string]string) {
		t.Helper()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			for name, addr := range names {
				answered := false
				for try := 0; try < 2 && !answered; try++ { // a stub resolver's one retry
					answered = resolves(name, addr)
				}
				if !answered {
					t.Errorf("query %d after dns server %d was killed: %s does not resolve to %s", i, pid, name, addr)
				}
			}
		}
		if err := up.WaitGone(context.Background(), pid, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	first := servers()
	if len(first) != up.DefaultDNSServers {
		t.Fatalf("dns servers %v, want %d", first, up.DefaultDNSServers)
	}

	e.stop() // moat up (control plane, agent) is gone
	kill(first[0], 50, map[string]string{name: addr})
	byName := strings.Replace(e.conninfo(svc, ""), "hostaddr="+addr+" ", "", 1)
	if r := e.psql(up.LaptopHost, pw, byName, "-c", "select inet_server_addr()"); r.code != 0 || r.stdout != addr {
		t.Errorf("psql by name from the laptop with the control plane and one dns server stopped: %v, want the server at %s", r, addr)
	}

	e2 := start(t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	if e2.stack.DNSAddr != dnsAddr {
		t.Errorf("restarted stack's DNS at %s, want the running server's %s", e2.stack.DNSAddr, dnsAddr)
	}
	second := servers()
	if len(second) != 2 || second[0] != first[1] {
		t.Errorf("dns servers after the restart %v, want the survivor %d and a new one", second, first[1])
	}
	svc2, _ := e2.createService("named-too", 1)
	names := map[string]string{name: addr, svc2.Connection.Host: svc2.Connection.Address}
	waitFor(t, 10*time.Second, func() bool {
		return resolves(svc2.Connection.Host, svc2.Connection.Address) && resolves(name, addr)
	})
	// Both servers have the new zone: the old one alone answers it.
	kill(second[1], 20, names)

	// moat up starts another on the same sockets, from the zone file.
	waitFor(t, 20*time.Second, func() bool {
		now := servers()
		return len(now) == 2 && now[0] == second[0] && now[1] != second[1]
	})
	third := servers()
	kill(third[0], 20, names) // the restarted one answers alone

	e2.stop()
	if _, err := up.Down(context.Background(), e.dir, e.prefix, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(first, append(second, third...)...) {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("dns server %d runs after moat down", pid)
		}
	}
}

// lookupA asks the DNS server at server (host:port) for name's A records
// over UDP, once, and returns their addresses in the answer's order.
func lookupA(server, name string) ([]string, error) {
	m := new(miekg.Msg)
	m.SetQuestion(miekg.Fqdn(name), miekg.TypeA)
	r, _, err := (&miekg.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(m, server)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*miekg.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, nil
}
