package dns

import (
	"net/netip"
	"strings"
	"testing"

	miekg "github.com/miekg/dns"

	"github.com/moatdb/moat/internal/domain"
)

func fuzzZone(t testing.TB) *Zone {
	z, err := Build("moat.test", 9,
		[]*domain.Service{
			{Meta: domain.Meta{ID: "svc-pub", ProjectID: "proj-a", State: domain.StateRunning}},
			{Meta: domain.Meta{ID: "svc-priv", ProjectID: "proj-a", State: domain.StateRunning}, VPCID: "vpc-a"},
		},
		[]*domain.Node{
			{Meta: domain.Meta{ID: "node-a", State: domain.StateRunning}, ServiceID: "svc-pub", Address: "198.18.1.10"},
			{Meta: domain.Meta{ID: "node-b", State: domain.StateRunning}, ServiceID: "svc-priv", Address: "10.0.0.5"},
		},
		Nameserver{Name: "ns1.moat.test", Addr: netip.MustParseAddr("198.18.0.53")},
		Nameserver{Name: "ns.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// checkResponse holds the invariants of every answer: it packs, it never
// carries a record outside the zone, it answers only the question's name,
// it never offers recursion, and a name outside the zone is refused.
func checkResponse(t *testing.T, z *Zone, req, resp *miekg.Msg) {
	t.Helper()
	if resp == nil {
		t.Fatal("respond returned nil")
	}
	if _, err := resp.Pack(); err != nil {
		t.Fatalf("response does not pack: %v\n%v", err, resp)
	}
	if resp.RecursionAvailable {
		t.Errorf("RA set")
	}
	if resp.Id != req.Id || !resp.Response {
		t.Errorf("response id %d qr %v, want %d true", resp.Id, resp.Response, req.Id)
	}
	inZone := false
	var qname string
	if len(req.Question) == 1 {
		if n, ok := normalName(req.Question[0].Name); ok {
			qname = strings.ToLower(n)
			inZone = miekg.IsSubDomain(z.origin, qname)
		}
	}
	if !inZone {
		if resp.Rcode == miekg.RcodeSuccess || resp.Rcode == miekg.RcodeNameError || resp.Authoritative {
			t.Errorf("question %v outside the zone: rcode %s, AA %v; want a refusal", req.Question, miekg.RcodeToString[resp.Rcode], resp.Authoritative)
		}
	}
	for _, sec := range [][]miekg.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == miekg.TypeOPT {
				continue
			}
			if !miekg.IsSubDomain(z.origin, rr.Header().Name) {
				t.Errorf("record outside the zone: %v (question %v)", rr, req.Question)
			}
		}
	}
	for _, rr := range resp.Answer {
		if !strings.EqualFold(rr.Header().Name, qname) {
			t.Errorf("answer %v for question %q", rr, qname)
		}
		if a, ok := rr.(*miekg.A); ok {
			addr, _ := netip.AddrFromSlice(a.A.To4())
			if got := z.Lookup(qname); len(got) != 1 || got[0] != addr {
				t.Errorf("answer %v, zone has %v", rr, got)
			}
		}
	}
}

// FuzzQuestion: any name, type and class, with or without EDNS0.
func FuzzQuestion(f *testing.F) {
	for _, s := range []string{"svc-pub.proj-a.moat.test.", "svc-priv.proj-a.vpc.moat.test", "MOAT.TEST.", "example.com.",
		"moat.test.evil.", `a\.moat.test.`, `\077oat.test.`, "", ".", "ns1.moat.test.", "x..moat.test"} {
		f.Add(s, uint16(miekg.TypeA), uint16(miekg.ClassINET), false, false)
	}
	f.Add("moat.test.", uint16(miekg.TypeANY), uint16(miekg.ClassINET), true, false)
	f.Add("moat.test.", uint16(miekg.TypeNS), uint16(miekg.ClassINET), false, true)
	f.Add("moat.test.", uint16(miekg.TypeAXFR), uint16(miekg.ClassANY), true, true)
	z := fuzzZone(f)
	f.Fuzz(func(t *testing.T, name string, qtype, qclass uint16, edns, tcp bool) {
		req := new(miekg.Msg)
		req.Id = 4242
		req.Question = []miekg.Question{{Name: name, Qtype: qtype, Qclass: qclass}}
		if edns {
			req.SetEdns0(512, true)
		}
		resp := respond(z, z.origin, 5, req, tcp)
		checkResponse(t, z, req, resp)
	})
}

// FuzzWire: any message that decodes.
func FuzzWire(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"svc-pub.proj-a.moat.test.", miekg.TypeA}, {"moat.test.", miekg.TypeSOA}, {"example.com.", miekg.TypeA}} {
		m := new(miekg.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	z := fuzzZone(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(miekg.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		checkResponse(t, z, req, respond(z, z.origin, 5, req, false))
		checkResponse(t, z, req, respond(nil, z.origin, 5, req, true))
	})
}
