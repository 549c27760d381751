package domain

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// errSummary is what a table test compares: the error's code, field and hint.
type errSummary struct{ Code, Field, Hint string }

func summarize(err error) *errSummary {
	if err == nil {
		return nil
	}
	e := AsError(err)
	if e == nil {
		return &errSummary{Code: "not a domain error: " + err.Error()}
	}
	return &errSummary{Code: e.Code, Field: e.Field, Hint: e.Hint}
}

func TestParseVPCCIDR(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *errSummary
	}{
		{"10.0.0.0/17", nil},
		{"10.0.0.0/16", nil},
		{"192.168.10.0/24", nil},
		{"172.16.0.0/16", nil},
		{"10.0.0.7/17", &errSummary{CodeNonCanonicalCIDR, "cidr", "use 10.0.0.0/17"}},
		{"10.0.0.0/15", &errSummary{CodeCIDRPrefixLength, "cidr", "use a prefix length from /16 to /24"}},
		{"10.0.0.0/25", &errSummary{CodeCIDRPrefixLength, "cidr", "use a prefix length from /16 to /24"}},
		{"8.8.8.0/24", &errSummary{CodeCIDRNotPrivate, "cidr", "use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"}},
		{"172.32.0.0/16", &errSummary{CodeCIDRNotPrivate, "cidr", "use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"}},
		{"fd00::/48", &errSummary{CodeCIDRFamily, "cidr", "use an IPv4 range such as 10.0.0.0/16"}},
		{"10.0.0.0", &errSummary{CodeInvalidCIDR, "cidr", "add a prefix length, e.g. 10.0.0.0/32"}},
		{"banana", &errSummary{CodeInvalidCIDR, "cidr", "write it as ADDRESS/LENGTH, e.g. 10.0.0.0/16"}},
		{"", &errSummary{CodeRequired, "cidr", "give a CIDR such as 10.0.0.0/16"}},
		{"010.0.0.0/16", &errSummary{CodeInvalidCIDR, "cidr", "write it as ADDRESS/LENGTH, e.g. 10.0.0.0/16"}},
	} {
		_, err := ParseVPCCIDR(tc.in)
		if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
			t.Errorf("ParseVPCCIDR(%q) error mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestNormalizeAllowlist(t *testing.T) {
	many := func(n int) []AllowEntry {
		out := make([]AllowEntry, n)
		for i := range out {
			out[i] = AllowEntry{CIDR: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}).String() + "/24"}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		in      []AllowEntry
		opt     AllowlistOptions
		want    []string
		wantErr *errSummary
	}{
		{"bare v4", []AllowEntry{{CIDR: "203.0.113.7"}}, AllowlistOptions{}, []string{"203.0.113.7/32"}, nil},
		{"bare v6", []AllowEntry{{CIDR: "2001:db8::1"}}, AllowlistOptions{}, []string{"2001:db8::1/128"}, nil},
		{"v6 prefix", []AllowEntry{{CIDR: "2001:db8::/32"}}, AllowlistOptions{}, []string{"2001:db8::/32"}, nil},
		{"defaults", DefaultAllowlist(), AllowlistOptions{}, []string{"0.0.0.0/0", "::/0"}, nil},
		{"non-canonical", []AllowEntry{{CIDR: "203.0.113.7/24"}}, AllowlistOptions{}, nil, &errSummary{CodeNonCanonicalCIDR, "allowed_ips[0].cidr", "use 203.0.113.0/24"}},
		{"non-canonical v6", []AllowEntry{{CIDR: "2001:DB8::/32"}}, AllowlistOptions{}, nil, &errSummary{CodeNonCanonicalCIDR, "allowed_ips[0].cidr", "use 2001:db8::/32"}},
		{"duplicate", []AllowEntry{{CIDR: "10.0.0.0/8"}, {CIDR: "10.0.0.0/8"}}, AllowlistOptions{}, nil, &errSummary{CodeDuplicateEntry, "allowed_ips[1].cidr", "remove one of entries 0 and 1"}},
		{"empty unconfirmed", []AllowEntry{}, AllowlistOptions{}, nil, &errSummary{CodeEmptyAllowlist, "allowed_ips", "an empty allowlist refuses every connection; confirm it explicitly (confirm_empty=true, or --confirm-empty)"}},
		{"empty confirmed", []AllowEntry{}, AllowlistOptions{ConfirmEmpty: true}, []string{}, nil},
		{"8000 entries", many(8000), AllowlistOptions{}, nil, nil},
		{"8001 entries", many(8001), AllowlistOptions{}, nil, &errSummary{CodeTooManyEntries, "allowed_ips", "merge neighbouring ranges into wider CIDRs; at most 8000 entries are allowed"}},
		{"control char", []AllowEntry{{CIDR: "10.0.0.0/8", Description: "a\nb"}}, AllowlistOptions{}, nil, &errSummary{CodeInvalidDescription, "allowed_ips[0].description", "use printable text without line breaks or control characters"}},
		{"long description", []AllowEntry{{CIDR: "10.0.0.0/8", Description: strings.Repeat("x", 257)}}, AllowlistOptions{}, nil, &errSummary{CodeInvalidDescription, "allowed_ips[0].description", "shorten it to 256 bytes"}},
		{"mapped v6", []AllowEntry{{CIDR: "::ffff:10.0.0.0/104"}}, AllowlistOptions{}, nil, &errSummary{CodeInvalidCIDR, "allowed_ips[0].cidr", "write IPv4 ranges in dotted form, e.g. 10.0.0.0/16"}},
	} {
		got, err := NormalizeAllowlist(tc.in, tc.opt)
		if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
			t.Errorf("%s: NormalizeAllowlist error mismatch (-want +got):\n%s", tc.name, diff)
			continue
		}
		if err != nil || tc.want == nil {
			continue
		}
		cidrs := []string{}
		for _, e := range got {
			cidrs = append(cidrs, e.CIDR)
		}
		if diff := cmp.Diff(tc.want, cidrs); diff != "" {
			t.Errorf("%s: NormalizeAllowlist = %v, want %v", tc.name, cidrs, tc.want)
		}
	}
}

func TestNewVPC(t *testing.T) {
	cat := DefaultCatalog()
	proj := &Project{Meta: Meta{ID: "proj-a"}, VPCQuota: 3}
	existing := []*VPC{{Meta: Meta{ID: "vpc-one", Name: "one", State: StateActive}, CIDR: "10.0.0.0/17"}}
	three := append(existing,
		&VPC{Meta: Meta{ID: "vpc-two", Name: "two", State: StateActive}, CIDR: "10.1.0.0/16"},
		&VPC{Meta: Meta{ID: "vpc-three", Name: "three", State: StateCreating}, CIDR: "10.2.0.0/16"})
	deletedOverlap := []*VPC{{Meta: Meta{ID: "vpc-old", Name: "old", State: StateDeleted}, CIDR: "10.0.0.0/17"}}
	for _, tc := range []struct {
		name, vname, region, cidr string
		others                    []*VPC
		quota                     int
		want                      *errSummary
	}{
		{"ok", "net", "us-east-1", "10.0.128.0/17", existing, 3, nil},
		{"overlap", "net", "us-east-1", "10.0.0.0/16", existing, 3, &errSummary{CodeCIDROverlap, "cidr", "choose a range that overlaps none of the project's VPCs"}},
		{"deleted does not count", "net", "us-east-1", "10.0.0.0/17", deletedOverlap, 3, nil},
		{"quota", "net", "us-east-1", "10.9.0.0/16", three, 3, &errSummary{CodeQuotaExceeded, "", "delete a VPC, or ask an operator for more: moat support request --vpcs N (or the console's Support page)"}},
		{"raised quota", "net", "us-east-1", "10.9.0.0/16", three, 4, nil},
		{"unknown region", "net", "mars-1", "10.9.0.0/16", nil, 3, &errSummary{CodeInvalidRegion, "region", "supported regions: us-east-1, eu-west-1"}},
		{"unsupported region", "net", "ap-south-1", "10.9.0.0/16", nil, 3, &errSummary{CodeUnsupportedRegion, "region", "supported regions: us-east-1, eu-west-1"}},
		{"bad name", "Net_1", "us-east-1", "10.9.0.0/16", nil, 3, &errSummary{CodeInvalidName, "name", "use 1 to 63 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen"}},
		{"duplicate name", "one", "us-east-1", "10.9.0.0/16", existing, 3, &errSummary{CodeDuplicateEntry, "name", "choose another name"}},
		{"slash 15", "net", "us-east-1", "10.0.0.0/15", nil, 3, &errSummary{CodeCIDRPrefixLength, "cidr", "use a prefix length from /16 to /24"}},
		{"public", "net", "us-east-1", "8.8.8.0/24", nil, 3, &errSummary{CodeCIDRNotPrivate, "cidr", "use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"}},
	} {
		p := *proj
		p.VPCQuota = tc.quota
		_, err := NewVPC(cat, &p, tc.vname, tc.region, tc.cidr, tc.others)
		if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
			t.Errorf("%s: NewVPC error mismatch (-want +got):\n%s", tc.name, diff)
		}
		if tc.want != nil && tc.want.Code == CodeQuotaExceeded && !strings.Contains(err.Error(), "operator") {
			t.Errorf("%s: quota error %q does not say an operator can raise it", tc.name, err)
		}
	}
}

func TestNewPeering(t *testing.T) {
	vpc := &VPC{Meta: Meta{ID: "vpc-a", ProjectID: "proj-a", State: StateActive}, CIDR: "10.0.0.0/17"}
	live := []*Peering{{Meta: Meta{ID: "pcx-live", State: StateActive}, PeerAccountID: "111111111111", PeerVPCID: "vpc-0a1b2c3d", PeerCIDRs: []string{"172.31.0.0/16"}}}
	dead := []*Peering{{Meta: Meta{ID: "pcx-dead", State: StateRejected}, PeerAccountID: "111111111111", PeerVPCID: "vpc-0a1b2c3d", PeerCIDRs: []string{"172.31.0.0/16"}}}
	ok := PeeringRequest{PeerAccountID: "123456789012", PeerVPCID: "vpc-0123456789abcdef0", PeerRegion: "ap-south-1", PeerCIDRs: []string{"172.20.0.0/16"}}
	mod := func(f func(*PeeringRequest)) PeeringRequest {
		r := ok
		r.PeerCIDRs = append([]string(nil), ok.PeerCIDRs...)
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name   string
		req    PeeringRequest
		others []*Peering
		max    int
		want   *errSummary
	}{
		{"ok", ok, live, 0, nil},
		{"13-digit account", mod(func(r *PeeringRequest) { r.PeerAccountID = "1234567890123" }), nil, 0, &errSummary{CodeInvalidAccountID, "peer_account_id", "an AWS account ID is exactly 12 digits, e.g. 123456789012"}},
		{"malformed vpc id", mod(func(r *PeeringRequest) { r.PeerVPCID = "vpc-12345" }), nil, 0, &errSummary{CodeInvalidPeerVPCID, "peer_vpc_id", "an AWS VPC ID is vpc- followed by 8 or 17 lower-case hex digits, e.g. vpc-0a1b2c3d4e5f67890"}},
		{"upper-case vpc id", mod(func(r *PeeringRequest) { r.PeerVPCID = "vpc-0A1B2C3D" }), nil, 0, &errSummary{CodeInvalidPeerVPCID, "peer_vpc_id", "an AWS VPC ID is vpc- followed by 8 or 17 lower-case hex digits, e.g. vpc-0a1b2c3d4e5f67890"}},
		{"unknown peer region", mod(func(r *PeeringRequest) { r.PeerRegion = "us-north-9" }), nil, 0, &errSummary{CodeInvalidRegion, "peer_region", "use an AWS region code such as us-east-1 or eu-west-1"}},
		{"overlaps vpc", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"10.0.0.0/16"} }), nil, 0, &errSummary{CodeCIDROverlap, "peer_cidrs[0]", "peer ranges must not overlap the VPC's 10.0.0.0/17; renumber one side"}},
		{"overlaps live peering", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"172.31.128.0/17"} }), live, 0, &errSummary{CodeCIDROverlap, "peer_cidrs[0]", "each peering of a VPC needs its own ranges; delete the other peering or use another range"}},
		{"dead peering frees range", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"172.31.0.0/16"} }), dead, 0, nil},
		{"duplicate", mod(func(r *PeeringRequest) {
			r.PeerAccountID, r.PeerVPCID = "111111111111", "vpc-0a1b2c3d"
			r.PeerCIDRs = []string{"192.168.0.0/16"}
		}), live, 0, &errSummary{CodeDuplicatePeering, "peer_vpc_id", "use the existing peering, or delete it first"}},
		{"self overlap", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"172.20.0.0/16", "172.20.1.0/24"} }), nil, 0, &errSummary{CodeCIDROverlap, "peer_cidrs[1]", "merge it with peer_cidrs[0] or drop one"}},
		{"slash 29", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"172.20.0.0/29"} }), nil, 0, &errSummary{CodeCIDRPrefixLength, "peer_cidrs[0]", "use a prefix length from /16 to /28"}},
		{"non-canonical", mod(func(r *PeeringRequest) { r.PeerCIDRs = []string{"172.20.0.1/16"} }), nil, 0, &errSummary{CodeNonCanonicalCIDR, "peer_cidrs[0]", "use 172.20.0.0/16"}},
		{"no cidrs", mod(func(r *PeeringRequest) { r.PeerCIDRs = nil }), nil, 0, &errSummary{CodeRequired, "peer_cidrs", "give the peer VPC's CIDR, e.g. 172.31.0.0/16"}},
		{"limit", ok, live, 1, &errSummary{CodeLimitExceeded, "", "a VPC may hold 1 live peerings on this platform; delete one first"}},
	} {
		_, err := NewPeering(vpc, tc.req, tc.others, tc.max)
		if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
			t.Errorf("%s: NewPeering error mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestMachines(t *testing.T) {
	for _, m := range []Machine{VPCMachine, PeeringMachine, ServiceMachine, NodeMachine, OperationMachine} {
		if _, ok := m.Next[m.Initial]; !ok {
			t.Errorf("%s: initial state %q has no transitions", m.Name, m.Initial)
		}
		for from, tos := range m.Next {
			for _, to := range tos {
				if !m.Can(from, to) {
					t.Errorf("%s: Can(%s, %s) = false for a listed move", m.Name, from, to)
				}
			}
		}
	}
	for _, tc := range []struct {
		m        Machine
		from, to string
		ok       bool
	}{
		{PeeringMachine, StatePendingAcceptance, StateActive, true},
		{PeeringMachine, StateActive, StatePendingAcceptance, false},
		{PeeringMachine, StateDeleted, StateActive, false},
		{PeeringMachine, StatePendingAcceptance, StateExpired, true},
		{VPCMachine, StateDeleted, StateActive, false},
		{ServiceMachine, StateRunning, StateMigrating, true},
		{OperationMachine, StateSucceeded, StateRunning, false},
	} {
		err := tc.m.Move(tc.from, tc.to)
		if (err == nil) != tc.ok {
			t.Errorf("%s.Move(%s, %s) = %v, want ok=%v", tc.m.Name, tc.from, tc.to, err, tc.ok)
		}
	}
}

func TestSpreadAZs(t *testing.T) {
	r := DefaultCatalog().Regions[0]
	got := SpreadAZs(r, 3)
	if diff := cmp.Diff([]string{"us-east-1a", "us-east-1b", "us-east-1c"}, got); diff != "" {
		t.Errorf("SpreadAZs(3) = %v", got)
	}
}

func TestNewIDAndValidID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID(PrefixService)
		if !ValidID(PrefixService, id) || seen[id] {
			t.Fatalf("NewID = %q: invalid or repeated", id)
		}
		seen[id] = true
	}
	if ValidID(PrefixVPC, "vpc-0a1b2c3d") {
		t.Errorf("an AWS VPC ID passes as a Moat ID")
	}
}

// FuzzParsePrefix: whatever the parser accepts round-trips canonically and
// is accepted again unchanged.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.7/17", "::/0", "2001:db8::1", "1.2.3.4", "::ffff:1.2.3.4/128", "fe80::1%eth0/64", ""} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, bare bool) {
		p, err := ParsePrefix("cidr", s, bare)
		if err != nil {
			if AsError(err) == nil {
				t.Fatalf("ParsePrefix(%q) returned a non-domain error %v", s, err)
			}
			return
		}
		if p.Masked() != p {
			t.Fatalf("ParsePrefix(%q) = %v, not masked", s, p)
		}
		again, err := ParsePrefix("cidr", p.String(), false)
		if err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %v; reparse = %v, %v", s, p, again, err)
		}
		if !bare && p.String() != strings.TrimSpace(s) {
			t.Fatalf("ParsePrefix(%q) accepted a non-canonical spelling %v", s, p)
		}
	})
}

// FuzzAllowlist: an accepted allowlist is canonical and normalises to itself.
func FuzzAllowlist(f *testing.F) {
	f.Add("10.0.0.0/8", "office", "2001:db8::1", "")
	f.Fuzz(func(t *testing.T, a, da, b, db string) {
		in := []AllowEntry{{CIDR: a, Description: da}, {CIDR: b, Description: db}}
		out, err := NormalizeAllowlist(in, AllowlistOptions{})
		if err != nil {
			return
		}
		again, err := NormalizeAllowlist(out, AllowlistOptions{})
		if err != nil {
			t.Fatalf("NormalizeAllowlist(%v) = %v; again: %v", in, out, err)
		}
		if diff := cmp.Diff(out, again); diff != "" {
			t.Fatalf("not idempotent: %s", diff)
		}
		_ = fmt.Sprint(out)
	})
}

func TestDescribeAllowlistChange(t *testing.T) {
	before := []AllowEntry{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}, {CIDR: "198.51.100.0/24", Description: "a"}}
	after := []AllowEntry{{CIDR: "198.51.100.0/24", Description: "b"}, {CIDR: "203.0.113.7/32"}}
	want := "revision 4, 2 entries; added 203.0.113.7/32; removed 0.0.0.0/0 ::/0"
	if got := DescribeAllowlistChange(4, before, after, 1000); got != want {
		t.Errorf("DescribeAllowlistChange = %q, want %q", got, want)
	}
	var many []AllowEntry
	for i := range 300 {
		many = append(many, AllowEntry{CIDR: fmt.Sprintf("10.0.%d.0/24", i)})
	}
	got := DescribeAllowlistChange(2, nil, many, 100)
	if len(got) > 200 || !strings.Contains(got, "more; removed nothing") {
		t.Errorf("long change = %q (%d bytes), want it cut with the count of the rest", got, len(got))
	}
}
