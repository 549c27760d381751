package apiserver_test

import (
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// TestSupportRequests: a tenant files quota increases, the operator sees
// every project's queue, approves one (the quota rises, as with PUT
// .../quota) and declines another with a reply; each step is an audit
// entry the tenant sees; bad input names its field.
func TestSupportRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, adminA := e.project("alpha")
	b, adminB := e.project("beta")
	viewerA := e.addToken(a, domain.RoleViewer)
	base := "/v1/projects/" + a + "/support-requests"

	var vpcs, nodes apitype.SupportRequest
	e.must(201, &vpcs, "POST", base, adminA, apitype.SupportRequestCreate{Resource: "vpcs", Requested: 5, Message: "one VPC per region"})
	if vpcs.State != "open" || vpcs.Current != 3 || vpcs.Requested != 5 || vpcs.Type != "quota_increase" || vpcs.ProjectID != a || !strings.HasPrefix(vpcs.Requester, "admin:tok-") {
		t.Errorf("filed request = %+v", vpcs)
	}
	e.must(201, &nodes, "POST", base, adminA, apitype.SupportRequestCreate{Resource: "nodes", Requested: 60, Message: "three-node services"})
	e.must(201, nil, "POST", "/v1/projects/"+b+"/support-requests", adminB, apitype.SupportRequestCreate{Resource: "services", Requested: 20, Message: "b"})

	for _, tc := range []struct {
		name        string
		in          apitype.SupportRequestCreate
		status      int
		code, field string
	}{
		{"no increase", apitype.SupportRequestCreate{Resource: "vpcs", Requested: 3, Message: "x"}, 400, "invalid_quota", "requested"},
		{"unknown resource", apitype.SupportRequestCreate{Resource: "cpus", Requested: 3, Message: "x"}, 400, "invalid_resource", "resource"},
		{"no message", apitype.SupportRequestCreate{Resource: "vpcs", Requested: 4}, 400, "required", "message"},
	} {
		r := e.do("POST", base, adminA, tc.in)
		if r.Status != tc.status || r.Problem.Code != tc.code || r.Problem.Field != tc.field || r.Problem.Hint == "" {
			t.Errorf("%s: POST = %d %s %s (hint %q), want %d %s %s with a hint", tc.name, r.Status, r.Problem.Code, r.Problem.Field, r.Problem.Hint, tc.status, tc.code, tc.field)
		}
	}
	if r := e.do("POST", base, viewerA, apitype.SupportRequestCreate{Resource: "vpcs", Requested: 5, Message: "x"}); r.Status != 403 {
		t.Errorf("a viewer files a request: %d, want 403", r.Status)
	}

	// The operator's queue holds every project's open requests; a tenant
	// sees its own only.
	var queue apitype.List[apitype.SupportRequest]
	e.must(200, &queue, "GET", "/v1/support-requests?state=open", e.operator, nil)
	if len(queue.Items) != 3 {
		t.Errorf("operator queue = %d requests, want 3", len(queue.Items))
	}
	var mine apitype.List[apitype.SupportRequest]
	e.must(200, &mine, "GET", base, adminA, nil)
	if len(mine.Items) != 2 {
		t.Errorf("tenant list = %d requests, want its 2", len(mine.Items))
	}
	if r := e.do("GET", "/v1/support-requests?state=closed", e.operator, nil); r.Status != 400 || r.Problem.Field != "state" {
		t.Errorf("?state=closed = %d %s, want 400 about state", r.Status, r.Problem.Field)
	}
	if r := e.do("GET", "/v1/projects/"+b+"/support-requests/"+vpcs.ID, adminB, nil); r.Status != 404 {
		t.Errorf("project B reads A's request: %d, want 404", r.Status)
	}

	// Approve: the quota rises; approving again is a conflict.
	var got apitype.SupportRequest
	e.must(200, &got, "POST", "/v1/support-requests/"+vpcs.ID+"/approve", e.operator, apitype.SupportDecision{Reply: "done"})
	if got.State != "approved" || got.Reply != "done" || got.DecidedAt == nil || !strings.HasPrefix(got.DecidedBy, "operator:") {
		t.Errorf("approved = %+v", got)
	}
	var p apitype.Project
	e.must(200, &p, "GET", "/v1/projects/"+a, adminA, nil)
	if p.VPCQuota != 5 {
		t.Errorf("VPC quota after approval = %d, want 5", p.VPCQuota)
	}
	if r := e.do("POST", "/v1/support-requests/"+vpcs.ID+"/approve", e.operator, apitype.SupportDecision{}); r.Status != 409 || r.Problem.Code != "invalid_state" {
		t.Errorf("approve twice = %d %s, want 409 invalid_state", r.Status, r.Problem.Code)
	}
	// Decline needs a reply.
	if r := e.do("POST", "/v1/support-requests/"+nodes.ID+"/decline", e.operator, apitype.SupportDecision{}); r.Status != 400 || r.Problem.Field != "reply" {
		t.Errorf("decline without reply = %d %s, want 400 about reply", r.Status, r.Problem.Field)
	}
	e.must(200, &got, "POST", "/v1/support-requests/"+nodes.ID+"/decline", e.operator, apitype.SupportDecision{Reply: "the host is full"})
	e.must(200, &got, "GET", base+"/"+nodes.ID, adminA, nil)
	if got.State != "declined" || got.Reply != "the host is full" {
		t.Errorf("tenant sees %+v, want declined with the reply", got)
	}
	e.must(200, &p, "GET", "/v1/projects/"+a, adminA, nil)
	if p.NodeQuota != domain.DefaultQuotas.Nodes {
		t.Errorf("node quota after a decline = %d, want the default %d", p.NodeQuota, domain.DefaultQuotas.Nodes)
	}
	if r := e.do("POST", "/v1/support-requests/sup-aaaaaaaaaaaaaaaa/approve", e.operator, apitype.SupportDecision{}); r.Status != 404 {
		t.Errorf("approve a missing request = %d, want 404", r.Status)
	}

	// Every step is in the tenant's audit log, the quota change with it.
	var log apitype.List[apitype.AuditEntry]
	e.must(200, &log, "GET", "/v1/projects/"+a+"/audit", adminA, nil)
	var steps []string
	for _, en := range log.Items {
		if strings.HasPrefix(en.Action, "support.") || en.Action == "project.quota.set" {
			steps = append(steps, en.Action+"/"+en.Outcome+" "+en.Detail)
		}
	}
	want := []string{
		"support.request.create/success quota_increase vpcs 3 -> 5",
		"support.request.create/success quota_increase nodes 30 -> 60",
		"support.request.create/invalid invalid_quota",
		"support.request.create/invalid invalid_resource",
		"support.request.create/invalid required",
		"support.request.create/denied forbidden",
		"project.quota.set/success vpcs 3 -> 5 (support request " + vpcs.ID + ")",
		"support.request.approve/success quota_increase vpcs 3 -> 5",
		"support.request.approve/invalid invalid_state",
		"support.request.decline/invalid required",
		"support.request.decline/success quota_increase nodes 30 -> 60",
	}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
}
