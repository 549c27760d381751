package domain

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeOpsTTL(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want time.Duration
		code string
	}{
		{0, DefaultOpsTTL, ""},
		{time.Minute, time.Minute, ""},
		{time.Hour, time.Hour, ""},
		{59 * time.Second, 0, CodeInvalidTTL},
		{time.Hour + time.Second, 0, CodeInvalidTTL},
		{-time.Minute, 0, CodeInvalidTTL},
	} {
		got, err := NormalizeOpsTTL(tc.in)
		var code string
		if e := AsError(err); e != nil {
			code = e.Code
		}
		if got != tc.want || code != tc.code {
			t.Errorf("NormalizeOpsTTL(%v) = %v, %q, want %v, %q", tc.in, got, code, tc.want, tc.code)
		}
	}
}

func TestNewOpsGrant(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 500, time.UTC)
	node := NewID(PrefixNode)
	ok := OpsGrantRequest{Operator: "tok-op", NodeID: node, Reason: "  INC-42: replica lag  ", SourceCIDRs: []string{"10.250.0.1"}}
	g, err := NewOpsGrant(ok, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(PrefixOpsGrant, g.ID) || g.Reason != "INC-42: replica lag" || g.State != StateActive {
		t.Errorf("NewOpsGrant = %+v", g)
	}
	if diff := cmp.Diff([]string{"10.250.0.1/32"}, g.SourceCIDRs); diff != "" {
		t.Errorf("SourceCIDRs (-want +got):\n%s", diff)
	}
	if want := now.Truncate(time.Second).Add(DefaultOpsTTL); !g.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", g.ExpiresAt, want)
	}

	for _, tc := range []struct {
		name string
		edit func(*OpsGrantRequest)
		want *errSummary
	}{
		{"no operator", func(r *OpsGrantRequest) { r.Operator = "" }, &errSummary{Code: CodeRequired, Field: "operator", Hint: "authenticate with an operator token"}},
		{"bad node", func(r *OpsGrantRequest) { r.NodeID = "svc-x" }, &errSummary{Code: CodeInvalidID, Field: "node_id", Hint: "give a node ID such as node-abcdefghijklmnop (moat nodes list)"}},
		{"no reason", func(r *OpsGrantRequest) { r.Reason = " " }, &errSummary{Code: CodeRequired, Field: "reason", Hint: `say why in a sentence, e.g. --reason "INC-123: replica lag on node"`}},
		{"short reason", func(r *OpsGrantRequest) { r.Reason = "fix" }, &errSummary{Code: CodeInvalidReason, Field: "reason", Hint: `say why in a sentence, e.g. --reason "INC-123: replica lag on node"`}},
		{"long reason", func(r *OpsGrantRequest) { r.Reason = strings.Repeat("x", MaxOpsReasonLen+1) }, &errSummary{Code: CodeInvalidReason, Field: "reason", Hint: "shorten it to 500 bytes; link the ticket for details"}},
		{"control reason", func(r *OpsGrantRequest) { r.Reason = "INC-1\nrm -rf" }, &errSummary{Code: CodeInvalidReason, Field: "reason", Hint: "use printable text on one line"}},
		{"ttl too long", func(r *OpsGrantRequest) { r.TTL = 2 * time.Hour }, &errSummary{Code: CodeInvalidTTL, Field: "ttl", Hint: "ask for at most 1h0m0s, and for a new grant when it ends"}},
		{"no sources", func(r *OpsGrantRequest) { r.SourceCIDRs = nil }, &errSummary{Code: CodeRequired, Field: "source_cidrs", Hint: "give the addresses operators connect from (the operator relay or management network)"}},
		{"whole internet", func(r *OpsGrantRequest) { r.SourceCIDRs = []string{"0.0.0.0/0"} }, &errSummary{Code: CodeInvalidCIDR, Field: "source_cidrs[0]", Hint: "name the operator path's addresses, not the whole internet"}},
		{"bad cidr", func(r *OpsGrantRequest) { r.SourceCIDRs = []string{"10.0.0.1/8"} }, &errSummary{Code: CodeNonCanonicalCIDR, Field: "source_cidrs[0]", Hint: "use 10.0.0.0/8"}},
	} {
		req := ok
		tc.edit(&req)
		_, err := NewOpsGrant(req, now)
		if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
			t.Errorf("%s: NewOpsGrant error (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestOpsGrantLifecycle(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	g, err := NewOpsGrant(OpsGrantRequest{Operator: "tok-op", NodeID: NewID(PrefixNode), Reason: "INC-7 disk full", TTL: 10 * time.Minute, SourceCIDRs: []string{"127.0.0.1/32"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	after, before, err := g.CertValidity(now)
	if err != nil || !after.Equal(now.Add(-OpsClockSkew)) || !before.Equal(now.Add(10*time.Minute)) {
		t.Errorf("CertValidity(now) = %v, %v, %v", after, before, err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want string
	}{{0, StateActive}, {10*time.Minute - time.Nanosecond, StateActive}, {10 * time.Minute, StateExpired}} {
		if got := g.StateAt(now.Add(tc.at)); got != tc.want {
			t.Errorf("StateAt(now+%v) = %s, want %s", tc.at, got, tc.want)
		}
	}
	if err := g.Revoke(now.Add(11 * time.Minute)); err == nil {
		t.Error("Revoke of an expired grant succeeded")
	}
	if err := g.Revoke(now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if g.Active(now.Add(2*time.Minute)) || g.StateAt(now) != StateRevoked {
		t.Errorf("revoked grant is %s", g.StateAt(now))
	}
	if _, _, err := g.CertValidity(now); err == nil {
		t.Error("CertValidity of a revoked grant succeeded")
	}
	if err := g.Revoke(now.Add(2 * time.Minute)); err == nil {
		t.Error("second Revoke succeeded")
	}
}
