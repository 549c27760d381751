package dns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/domain"
)

const (
	pubName  = "svc-pub.proj-aaaaaaaaaaaaaaaa.moat.test."
	privName = "svc-priv.proj-aaaaaaaaaaaaaaaa.vpc.moat.test."
	// The other name of each service.
	pubPrivName = "svc-pub.proj-aaaaaaaaaaaaaaaa.vpc.moat.test."
	privPubName = "svc-priv.proj-aaaaaaaaaaaaaaaa.moat.test."
)

var ns1 = dns.Nameserver{Name: "ns1.moat.test", Addr: netip.MustParseAddr("198.18.0.53")}

// testZone has a public service and an attached one.
func testZone(t testing.TB, serial int64) *dns.Zone {
	t.Helper()
	z, err := dns.Build("moat.test", serial,
		[]*domain.Service{svc("svc-pub", proj, domain.StateRunning, ""), svc("svc-priv", proj, domain.StateRunning, vpc)},
		[]*domain.Node{
			node("node-a", "svc-pub", 0, domain.StateRunning, "198.18.1.10"),
			node("node-b", "svc-priv", 0, domain.StateRunning, "10.0.0.5"),
		}, ns1)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// start serves s on a random loopback port until the test ends and
// returns the address (the same port for UDP and TCP).
func start(t *testing.T, s *dns.Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc, ln, err := dns.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return ln.Addr().String()
}

func newServer(t *testing.T, cfg dns.Config) *dns.Server {
	t.Helper()
	s, err := dns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func query(t *testing.T, network, addr, name string, qtype uint16, edit ...func(*miekg.Msg)) *miekg.Msg {
	t.Helper()
	m := new(miekg.Msg)
	m.SetQuestion(name, qtype)
	for _, f := range edit {
		f(m)
	}
	c := &miekg.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, miekg.TypeToString[qtype], err)
	}
	if r.RecursionAvailable {
		t.Errorf("%s query %s: RA set", network, name)
	}
	return r
}

// summary renders what the tests check in a response.
type summary struct {
	Rcode  string
	AA     bool
	Answer []string
	Ns     []string
}

func summarize(r *miekg.Msg) summary {
	s := summary{Rcode: miekg.RcodeToString[r.Rcode], AA: r.Authoritative}
	for _, rr := range r.Answer {
		s.Answer = append(s.Answer, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	for _, rr := range r.Ns {
		s.Ns = append(s.Ns, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	return s
}

const soa7 = "moat.test. 5 IN SOA ns1.moat.test. hostmaster.moat.test. 7 3600 600 86400 5"

func TestQueries(t *testing.T) {
	t.Parallel()
	s := newServer(t, dns.Config{Domain: "moat.test", TTL: 5 * time.Second})
	if err := s.SetZone(testZone(t, 7)); err != nil {
		t.Fatal(err)
	}
	addr := start(t, s)
	nxdomain := summary{Rcode: "NXDOMAIN", AA: true, Ns: []string{soa7}}
	nodata := summary{Rcode: "NOERROR", AA: true, Ns: []string{soa7}}
	refused := summary{Rcode: "REFUSED"}
	tests := []struct {
		name  string
		qtype uint16
		want  summary
	}{
		{pubName, miekg.TypeA, summary{Rcode: "NOERROR", AA: true, Answer: []string{pubName + " 5 IN A 198.18.1.10"}}},
		{pubName, miekg.TypeANY, summary{Rcode: "NOERROR", AA: true, Answer: []string{pubName + " 5 IN A 198.18.1.10"}}},
		{privName, miekg.TypeA, summary{Rcode: "NOERROR", AA: true, Answer: []string{privName + " 5 IN A 10.0.0.5"}}},
		{privPubName, miekg.TypeA, nxdomain},
		{pubPrivName, miekg.TypeA, nxdomain},
		{"svc-nope.proj-aaaaaaaaaaaaaaaa.moat.test.", miekg.TypeA, nxdomain},
		{"below." + pubName, miekg.TypeA, nxdomain},
		{"example.com.", miekg.TypeA, refused},
		{"moat.test.example.com.", miekg.TypeA, refused},
		{"xmoat.test.", miekg.TypeA, refused},
		{"test.", miekg.TypeSOA, refused},
		{".", miekg.TypeNS, refused},
		{"moat.test.", miekg.TypeSOA, summary{Rcode: "NOERROR", AA: true, Answer: []string{soa7}}},
		{"moat.test.", miekg.TypeNS, summary{Rcode: "NOERROR", AA: true, Answer: []string{"moat.test. 5 IN NS ns1.moat.test."}}},
		{"moat.test.", miekg.TypeA, nodata},
		{"moat.test.", miekg.TypeAXFR, refused},
		{"ns1.moat.test.", miekg.TypeA, summary{Rcode: "NOERROR", AA: true, Answer: []string{"ns1.moat.test. 5 IN A 198.18.0.53"}}},
		{pubName, miekg.TypeAAAA, nodata},
		{privName, miekg.TypeAAAA, nodata},
		{pubName, miekg.TypeMX, nodata},
		// Empty non-terminals exist (RFC 8020): NODATA, not NXDOMAIN.
		{"proj-aaaaaaaaaaaaaaaa.moat.test.", miekg.TypeA, nodata},
		{"proj-aaaaaaaaaaaaaaaa.vpc.moat.test.", miekg.TypeA, nodata},
		{"vpc.moat.test.", miekg.TypeA, nodata},
		// Case-insensitive; the answer echoes the question's case.
		{"SVC-PUB.Proj-AAAAAAAAAAAAAAAA.MOAT.test.", miekg.TypeA, summary{Rcode: "NOERROR", AA: true,
			Answer: []string{"SVC-PUB.Proj-AAAAAAAAAAAAAAAA.MOAT.test. 5 IN A 198.18.1.10"}}},
		{"MOAT.TEST.", miekg.TypeNS, summary{Rcode: "NOERROR", AA: true, Answer: []string{"MOAT.TEST. 5 IN NS ns1.moat.test."}}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			r := query(t, network, addr, tc.name, tc.qtype)
			if diff := cmp.Diff(tc.want, summarize(r)); diff != "" {
				t.Errorf("%s %s %s (-want +got):\n%s", network, tc.name, miekg.TypeToString[tc.qtype], diff)
			}
		}
	}

	// The NS answer carries the in-zone nameserver's address.
	r := query(t, "udp", addr, "moat.test.", miekg.TypeNS)
	if len(r.Extra) != 1 || r.Extra[0].String() != "ns1.moat.test.\t5\tIN\tA\t198.18.0.53" {
		t.Errorf("NS additional = %v, want the glue A of ns1.moat.test.", r.Extra)
	}
	// Another class is refused.
	r = query(t, "udp", addr, pubName, miekg.TypeA, func(m *miekg.Msg) { m.Question[0].Qclass = miekg.ClassCHAOS })
	if r.Rcode != miekg.RcodeRefused {
		t.Errorf("CH query: rcode %s, want REFUSED", miekg.RcodeToString[r.Rcode])
	}
	// RD is echoed, RA never set (query checks RA).
	r = query(t, "udp", addr, pubName, miekg.TypeA, func(m *miekg.Msg) { m.RecursionDesired = true })
	if !r.RecursionDesired {
		t.Errorf("RD not echoed")
	}
}

func TestEDNS(t *testing.T) {
	t.Parallel()
	s := newServer(t, dns.Config{})
	if err := s.SetZone(testZone(t, 1)); err != nil {
		t.Fatal(err)
	}
	addr := start(t, s)

	r := query(t, "udp", addr, pubName, miekg.TypeA, func(m *miekg.Msg) { m.SetEdns0(4096, true) })
	opt := r.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || !opt.Do() || opt.Version() != 0 {
		t.Errorf("EDNS response OPT = %v, want version 0, udp 1232, do", opt)
	}
	if len(r.Answer) != 1 {
		t.Errorf("EDNS query answer = %v, want one A", r.Answer)
	}

	r = query(t, "udp", addr, pubName, miekg.TypeA, func(m *miekg.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
	})
	if r.Rcode != miekg.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
		t.Errorf("EDNS version 1: rcode %s, opt %v, answer %v; want BADVERS with OPT and no answer", miekg.RcodeToString[r.Rcode], r.IsEdns0(), r.Answer)
	}

	r = query(t, "udp", addr, pubName, miekg.TypeA)
	if r.IsEdns0() != nil {
		t.Errorf("plain query got an OPT record")
	}
}

func TestTruncation(t *testing.T) {
	t.Parallel()
	var nss []dns.Nameserver
	for i := range 40 {
		nss = append(nss, dns.Nameserver{Name: fmt.Sprintf("ns%d.moat.test", i), Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 10)})})
	}
	z, err := dns.Build("moat.test", 1, nil, nil, nss...)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, dns.Config{})
	if err := s.SetZone(z); err != nil {
		t.Fatal(err)
	}
	addr := start(t, s)
	c := &miekg.Client{Net: "udp", Timeout: 3 * time.Second}
	m := new(miekg.Msg)
	m.SetQuestion("moat.test.", miekg.TypeNS)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true // Len measures the wire size the server sent
	if !r.Truncated || r.Len() > 512 {
		t.Errorf("UDP NS answer of 40 servers: TC=%v, %d bytes; want TC and ≤ 512", r.Truncated, r.Len())
	}
	r = query(t, "tcp", addr, "moat.test.", miekg.TypeNS)
	if r.Truncated || len(r.Answer) != 40 || len(r.Extra) != 40 {
		t.Errorf("TCP NS answer: TC=%v, %d NS, %d glue; want 40 and 40", r.Truncated, len(r.Answer), len(r.Extra))
	}
}

func TestNoZone(t *testing.T) {
	t.Parallel()
	s := newServer(t, dns.Config{Domain: "moat.test"})
	addr := start(t, s)
	if r := query(t, "udp", addr, pubName, miekg.TypeA); r.Rcode != miekg.RcodeServerFailure {
		t.Errorf("no zone, in domain: rcode %s, want SERVFAIL", miekg.RcodeToString[r.Rcode])
	}
	if r := query(t, "udp", addr, "example.com.", miekg.TypeA); r.Rcode != miekg.RcodeRefused {
		t.Errorf("no zone, outside: rcode %s, want REFUSED", miekg.RcodeToString[r.Rcode])
	}
}

// TestSwap: an attach as the DNS sees it. The next query after SetZone
// sees the new zone.
func TestSwap(t *testing.T) {
	t.Parallel()
	s := newServer(t, dns.Config{})
	addr := start(t, s)
	build := func(serial int64, vpcID, addr string) *dns.Zone {
		z, err := dns.Build("moat.test", serial,
			[]*domain.Service{svc("svc-pub", proj, domain.StateMigrating, vpcID)},
			[]*domain.Node{node("node-a", "svc-pub", 0, domain.StateRunning, addr)}, ns1)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	steps := []struct {
		zone      *dns.Zone
		pub, priv string // "" means NXDOMAIN
		serial    uint32
	}{
		{build(1, "", "198.18.1.10"), "198.18.1.10", "", 1},
		{build(2, vpc, "10.0.0.9"), "", "10.0.0.9", 2},
		{build(3, "", "198.18.1.77"), "198.18.1.77", "", 3},
	}
	for i, st := range steps {
		if err := s.SetZone(st.zone); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ name, want string }{{pubName, st.pub}, {pubPrivName, st.priv}} {
			r := query(t, "udp", addr, c.name, miekg.TypeA)
			got := ""
			if len(r.Answer) == 1 {
				got = r.Answer[0].(*miekg.A).A.String()
			} else if r.Rcode != miekg.RcodeNameError {
				t.Errorf("step %d: %s: rcode %s, answer %v", i, c.name, miekg.RcodeToString[r.Rcode], r.Answer)
			}
			if got != c.want {
				t.Errorf("step %d: %s = %q, want %q", i, c.name, got, c.want)
			}
		}
		r := query(t, "tcp", addr, "moat.test.", miekg.TypeSOA)
		if len(r.Answer) != 1 || r.Answer[0].(*miekg.SOA).Serial != st.serial {
			t.Errorf("step %d: SOA %v, want serial %d", i, r.Answer, st.serial)
		}
	}
}

func TestSetZoneOtherOrigin(t *testing.T) {
	s := newServer(t, dns.Config{Domain: "example.net"})
	if err := s.SetZone(testZone(t, 1)); err == nil {
		t.Errorf("SetZone(moat.test zone) on an example.net server = nil, want an error")
	}
}

func TestNewInvalid(t *testing.T) {
	for _, cfg := range []dns.Config{
		{Domain: "a..b"},
		{TTL: 500 * time.Millisecond},
		{TTL: 1500 * time.Millisecond},
		{TTL: 2 * time.Hour},
		{Addrs: []string{"127.0.0.1"}},
		{Nameservers: []dns.Nameserver{{Name: "ns.moat.test", Addr: netip.MustParseAddr("::1")}}},
	} {
		if _, err := dns.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

// TestTCPReadTimeout: a TCP client that sends nothing is disconnected.
func TestTCPReadTimeout(t *testing.T) {
	t.Parallel()
	s := newServer(t, dns.Config{ReadTimeout: 200 * time.Millisecond})
	addr := start(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	begin := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("read on idle TCP connection: %v, want EOF", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("idle TCP connection closed after %v, want about 200ms", d)
	}
}

// TestRunStops: Run serves on its addresses and every goroutine it started
// is gone once it returns (not parallel: counts goroutines).
func TestRunStops(t *testing.T) {
	// Find a free port for both protocols, then let Run bind it.
	ctx := context.Background()
	pc, ln, err := dns.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	pc.Close()
	ln.Close()

	before := runtime.NumGoroutine()
	s := newServer(t, dns.Config{Addrs: []string{addr}})
	if err := s.SetZone(testZone(t, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var r *miekg.Msg
	for i := 0; i < 50; i++ { // Run binds asynchronously
		m := new(miekg.Msg)
		m.SetQuestion(pubName, miekg.TypeA)
		if r, _, err = (&miekg.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("query to Run's server: %v, %v", r, err)
	}
	query(t, "udp", addr, pubName, miekg.TypeA)
	// An open idle TCP connection must not keep Run from returning.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Run returned, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestRunBindFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newServer(t, dns.Config{Addrs: []string{"127.0.0.1:0", ln.Addr().String()}})
	if err := s.Run(t.Context()); err == nil {
		t.Errorf("Run with a taken address = nil, want an error")
	}
}
