package e2e

import (
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

// TestDNSOutlivesControlPlane: the platform DNS server is a process of its
// own, answering from the last zone the control plane wrote: with moat up
// stopped, a service's name still resolves (a real query on loopback, and
// psql by name from the laptop through 198.18.0.1:53); a restarted stack
// keeps that server, and a new service's name appears in it; a server that
// dies is started again.
func TestDNSOutlivesControlPlane(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("named", 1)
	dnsAddr := e.stack.DNSAddr
	lookup := func(name string) ([]string, error) {
		m := new(miekg.Msg)
		m.SetQuestion(miekg.Fqdn(name), miekg.TypeA)
		r, _, err := (&miekg.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(m, dnsAddr)
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
	resolves := func(name, addr string) bool {
		got, err := lookup(name)
		return err == nil && len(got) == 1 && got[0] == addr
	}
	name, addr := svc.Connection.Host, svc.Connection.Address
	waitFor(t, 10*time.Second, func() bool { return resolves(name, addr) })

	e.stop() // moat up (control plane, agent) is gone
	if got, err := lookup(name); err != nil || len(got) != 1 || got[0] != addr {
		t.Errorf("with the control plane stopped: %s = %v, %v; want %s", name, got, err, addr)
	}
	byName := strings.Replace(e.conninfo(svc, ""), "hostaddr="+addr+" ", "", 1)
	if r := e.psql(up.LaptopHost, pw, byName, "-c", "select inet_server_addr()"); r.code != 0 || r.stdout != addr {
		t.Errorf("psql by name from the laptop with the control plane stopped: %v, want the server at %s", r, addr)
	}

	e2 := start(t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	if e2.stack.DNSAddr != dnsAddr {
		t.Errorf("restarted stack's DNS at %s, want the running server's %s", e2.stack.DNSAddr, dnsAddr)
	}
	svc2, _ := e2.createService("named-too", 1)
	waitFor(t, 10*time.Second, func() bool {
		return resolves(svc2.Connection.Host, svc2.Connection.Address) && resolves(name, addr)
	})

	// The server process dies: moat up starts another on the same
	// address, from the zone file.
	var rec struct{ PID int }
	b, err := os.ReadFile(filepath.Join(e.dir, "dns", "server.json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || rec.PID <= 0 {
		t.Fatalf("dns server record: %s, %v", b, err)
	}
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		return resolves(svc2.Connection.Host, svc2.Connection.Address)
	})
}
