package domain

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewSupportRequest(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	p := NewProject("alpha", now)
	nodes := 40
	p.NodeQuota = &nodes
	ok := SupportRequestInput{Resource: QuotaVPCs, Requested: 5, Message: "a VPC per region", Requester: "admin:tok-x"}
	for _, tc := range []struct {
		name string
		edit func(*SupportRequestInput)
		open int
		want *errSummary
	}{
		{"ok", func(*SupportRequestInput) {}, 0, nil},
		{"services", func(in *SupportRequestInput) { in.Resource, in.Requested = QuotaServices, 11 }, 0, nil},
		{"bad type", func(in *SupportRequestInput) { in.Type = "refund" }, 0, &errSummary{CodeInvalidType, "type", "use quota_increase (the only type of request so far)"}},
		{"no resource", func(in *SupportRequestInput) { in.Resource = "" }, 0, &errSummary{CodeRequired, "resource", "give vpcs, services or nodes"}},
		{"bad resource", func(in *SupportRequestInput) { in.Resource = "cpus" }, 0, &errSummary{CodeInvalidResource, "resource", "give vpcs, services or nodes"}},
		{"not more", func(in *SupportRequestInput) { in.Requested = 3 }, 0, &errSummary{CodeInvalidQuota, "requested", "ask for more than the current 3 and at most 1000, e.g. 5"}},
		{"nodes not more", func(in *SupportRequestInput) { in.Resource, in.Requested = QuotaNodes, 40 }, 0, &errSummary{CodeInvalidQuota, "requested", "ask for more than the current 40 and at most 10000, e.g. 42"}},
		{"too many", func(in *SupportRequestInput) { in.Requested = 1001 }, 0, &errSummary{CodeInvalidQuota, "requested", "ask for more than the current 3 and at most 1000, e.g. 5"}},
		{"no message", func(in *SupportRequestInput) { in.Message = "  " }, 0, &errSummary{CodeRequired, "message", "say in a sentence or two what you need it for"}},
		{"long message", func(in *SupportRequestInput) { in.Message = strings.Repeat("x", MaxSupportMessageLen+1) }, 0, &errSummary{CodeInvalidMessage, "message", "shorten it to 2000 bytes"}},
		{"control", func(in *SupportRequestInput) { in.Message = "hi\x1b[2J" }, 0, &errSummary{CodeInvalidMessage, "message", "remove control characters"}},
		{"queue full", func(*SupportRequestInput) {}, MaxOpenSupportRequests, &errSummary{CodeTooManyOpen, "", "wait for the operator to answer the open ones (moat support list)"}},
	} {
		in := ok
		tc.edit(&in)
		r, err := NewSupportRequest(in, p, DefaultQuotas, tc.open, now)
		if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
			t.Errorf("%s: NewSupportRequest error (-want +got):\n%s", tc.name, diff)
		}
		if err == nil && (r.State != StateOpen || !ValidID(PrefixSupport, r.ID) || r.ProjectID != p.ID || r.Type != SupportQuotaIncrease) {
			t.Errorf("%s: NewSupportRequest = %+v, want an open quota_increase of %s", tc.name, r, p.ID)
		}
	}
	r, _ := NewSupportRequest(ok, p, DefaultQuotas, 0, now)
	if r.Current != 3 || r.Requested != 5 {
		t.Errorf("current, requested = %d, %d; want 3, 5", r.Current, r.Requested)
	}
}

func TestSupportDecisions(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	p := NewProject("alpha", now)
	file := func() *SupportRequest {
		r, err := NewSupportRequest(SupportRequestInput{Resource: QuotaVPCs, Requested: 5, Message: "more"}, p, DefaultQuotas, 0, now)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := file()
	set, err := r.Approve("operator:tok-o", " ok ", 3, now.Add(time.Minute))
	if err != nil || set != 5 || r.State != StateApproved || r.Reply != "ok" || r.DecidedBy != "operator:tok-o" || r.DecidedAt == nil {
		t.Errorf("Approve = %d, %v; request %+v; want 5, approved with the reply", set, err, r)
	}
	if _, err := r.Approve("operator:tok-o", "", 3, now); summarize(err) == nil || summarize(err).Code != CodeInvalidState {
		t.Errorf("Approve twice = %v, want %s", err, CodeInvalidState)
	}
	if err := r.Decline("operator:tok-o", "no", now); summarize(err) == nil || summarize(err).Code != CodeInvalidState {
		t.Errorf("Decline after approval = %v, want %s", err, CodeInvalidState)
	}

	// The quota was raised in the meantime: approved, nothing to set.
	r = file()
	if set, err := r.Approve("op", "", 6, now); err != nil || set != 0 {
		t.Errorf("Approve with quota 6 = %d, %v; want 0, nil", set, err)
	}

	r = file()
	if err := r.Decline("op", "", now); diffErr(err, &errSummary{CodeRequired, "reply", `tell the requester why, e.g. --reply "the region is full until March"`}) != "" {
		t.Errorf("Decline without reply: %s", diffErr(err, nil))
	}
	if r.State != StateOpen {
		t.Errorf("a refused decline changed the state to %s", r.State)
	}
	if err := r.Decline("op", "the region is full", now); err != nil || r.State != StateDeclined || r.Reply != "the region is full" {
		t.Errorf("Decline = %v, request %+v", err, r)
	}
}

func diffErr(err error, want *errSummary) string { return cmp.Diff(want, summarize(err)) }
