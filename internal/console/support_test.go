package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
)

// TestSupport: a tenant files a quota increase from the form (the API's
// refusals next to their fields), the operator approves one (the quota
// rises) and declines another (a reply is required, shown next to its
// field); both sides see the answers. Markup in a message renders inert;
// forged and viewers' posts are refused.
func TestSupport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const evil = `<script>alert(1)</script>`
	b := e.signIn(e.adminA)

	// A create refused by the quota links to the form.
	for i, cidr := range []string{"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"} {
		if _, err := e.api(e.adminA).CreateVPC(ctx, e.A, apitype.VPCCreate{Name: fmt.Sprintf("v%d", i), Region: "us-east-1", CIDR: cidr}); err != nil {
			t.Fatal(err)
		}
	}
	b.mustGet("/console/vpcs")
	if resp, body := b.post("/console/vpcs", url.Values{"name": {"fourth"}, "region": {"us-east-1"}, "cidr": {"10.4.0.0/16"}}); resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(body, `moat support request --vpcs N (or the console&#39;s Support page)</span> <a href="/console/support#request">Request a quota increase</a>`) {
		t.Errorf("4th VPC: %s, want the quota refusal with a link to the request form\n%s", resp.Status, body)
	}
	// The VPC page's quota line leads to the form, preset to VPCs.
	if body := b.mustGet("/console/vpcs"); !strings.Contains(body, `href="/console/support?resource=vpcs#request">Request a quota increase</a>`) {
		t.Fatalf("VPC page has no quota request link:\n%s", body)
	}
	body := b.mustGet("/console/support?resource=vpcs")
	if !strings.Contains(body, `<option value="vpcs" selected>vpcs (now 3)</option>`) || !strings.Contains(body, `id="support-requested" name="requested" type="number" min="1" value="5"`) {
		t.Fatalf("support form not preset:\n%s", body)
	}
	// Not an increase: the API's message and hint beside the field.
	resp, body := b.post("/console/support", url.Values{"resource": {"vpcs"}, "requested": {"2"}, "message": {"x"}})
	if resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(body, `<p id="support-requested-error" class="field-error" aria-live="polite"><span class="msg">a vpc quota of 2 is not an increase of the current 3</span> <span class="hint">Hint: ask for more than the current 3`) ||
		!strings.Contains(body, `aria-invalid="true"`) {
		t.Errorf("refused request: %s\n%s", resp.Status, body)
	}
	if resp, body := b.post("/console/support", url.Values{"resource": {"vpcs"}, "requested": {"five"}, "message": {"x"}}); resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(body, `&#34;five&#34; is not a number`) {
		t.Errorf("requested=five: %s", resp.Status)
	}
	loc := b.mustPost("/console/support", url.Values{"resource": {"vpcs"}, "requested": {"5"}, "message": {"staging and prod " + evil}})
	body = b.mustGet(loc)
	if !strings.Contains(body, "is filed: vpcs quota 3 → 5") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("after filing:\n%s", body)
	}
	checkInert(t, "tenant support page", body, evil)
	b.mustPost("/console/support", url.Values{"resource": {"nodes"}, "requested": {"60"}, "message": {"replicas"}})

	// Forged posts change nothing.
	b.csrf = ""
	if resp, _ := b.post("/console/support", url.Values{"resource": {"services"}, "requested": {"20"}, "message": {"forged"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("support post without CSRF token: %s, want 403", resp.Status)
	}
	v := e.signIn(e.viewerA)
	body = v.mustGet("/console/support")
	if strings.Contains(body, `action="/console/support"`) || !strings.Contains(body, "vpcs quota 3 → 5") {
		t.Errorf("viewer's support page: a form, or not the requests:\n%s", body)
	}
	if resp, body := v.post("/console/support", url.Values{"resource": {"services"}, "requested": {"20"}, "message": {"x"}}); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(body, "role viewer may not change objects") {
		t.Errorf("viewer files a request: %s, want the API's 403", resp.Status)
	}
	// Project B sees none of it.
	if body := e.signIn(e.adminB).mustGet("/console/support"); strings.Contains(body, "staging and prod") || strings.Contains(body, e.A) {
		t.Error("project B sees A's support requests")
	}
	rs, err := e.api(e.adminA).ListSupportRequests(ctx, e.A, "")
	if err != nil || len(rs) != 2 {
		t.Fatalf("requests of A = %d, %v; want 2", len(rs), err)
	}
	vpcsReq, nodesReq := rs[0].ID, rs[1].ID

	// A tenant cannot answer, even with a valid session and token.
	if resp, _ := b.post("/console/support/"+vpcsReq+"/approve", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("tenant approves: %s, want the API's 403", resp.Status)
	}

	op := e.signIn(e.operator)
	other := e.signIn(e.operator)
	// The operator's forms need the session's own CSRF token too.
	for _, path := range []string{"/console/support/" + vpcsReq + "/approve", "/console/support/" + nodesReq + "/decline"} {
		for name, csrf := range map[string]string{"no token": "", "another session's token": other.csrf} {
			op.csrf = ""
			if resp, body := op.post(path, url.Values{"csrf": {csrf}, "reply": {"forged"}}); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
				t.Errorf("POST %s with %s: %s, want 403 naming the CSRF token", path, name, resp.Status)
			}
		}
	}
	if rs, _ := e.api(e.adminA).ListSupportRequests(ctx, e.A, "open"); len(rs) != 2 {
		t.Fatalf("open requests after forged answers: %d, want 2", len(rs))
	}
	body = op.mustGet("/console/support")
	if !strings.Contains(body, `id="support-`+vpcsReq+`"`) || !strings.Contains(body, `<label for="reply-`+vpcsReq+`">`) {
		t.Fatalf("operator's queue:\n%s", body)
	}
	checkInert(t, "operator's queue", body, evil)
	resp, body = op.post("/console/support/"+nodesReq+"/decline", url.Values{"reply": {" "}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `<p id="reply-`+nodesReq+`-error" class="field-error" aria-live="polite"><span class="msg">a reply is required to decline</span>`) {
		t.Errorf("decline without reply: %s\n%s", resp.Status, body)
	}
	op.mustPost("/console/support/"+nodesReq+"/decline", url.Values{"reply": {"the host is full " + evil}})
	op.mustPost("/console/support/"+vpcsReq+"/approve", url.Values{"reply": {"done"}})
	body = op.mustGet("/console/support")
	if !strings.Contains(body, "No open requests.") || !strings.Contains(body, "the host is full") {
		t.Errorf("operator's page after answering:\n%s", body)
	}
	p, err := e.api(e.adminA).GetProject(ctx, e.A)
	if err != nil || p.VPCQuota != 5 || p.NodeQuota != 30 {
		t.Errorf("quotas after the answers = %d VPCs, %d nodes, %v; want 5, 30", p.VPCQuota, p.NodeQuota, err)
	}
	body = b.mustGet("/console/support")
	checkInert(t, "tenant's page with the operator's reply", body, evil)
	for _, want := range []string{`<span class="state state-approved">approved</span>`, "done", `<span class="state state-declined">declined</span>`, "the host is full", "5 VPCs"} {
		if !strings.Contains(body, want) {
			t.Errorf("tenant's page lacks %q", want)
		}
	}
	if body := b.mustGet("/console/vpcs"); !strings.Contains(body, "3 of 5 VPCs used") {
		t.Error("VPC page does not show the raised quota")
	}
	body = b.mustGet("/console/audit?action=support.")
	for _, want := range []string{"support.request.create", "support.request.approve", "support.request.decline"} {
		if !strings.Contains(body, want) {
			t.Errorf("tenant's audit page lacks %s", want)
		}
	}
}

// TestSupportGolden renders both sides of the Support page.
func TestSupportGolden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.signIn(e.adminA)
	b.mustGet("/console/support")
	b.mustPost("/console/support", url.Values{"resource": {"vpcs"}, "requested": {"5"}, "message": {"one VPC per region"}})
	b.mustPost("/console/support", url.Values{"resource": {"services"}, "requested": {"12"}, "message": {"a service per team"}})
	op := e.signIn(e.operator)
	rs, err := e.api(e.operator).ListSupportRequests(context.Background(), "", "open")
	if err != nil || len(rs) != 2 {
		t.Fatalf("open requests: %d, %v", len(rs), err)
	}
	op.mustPost("/console/support/"+rs[1].ID+"/decline", url.Values{"reply": {"ten is the limit for now"}})
	norm := newNormaliser()
	golden(t, filepath.Join("testdata", "support.html"), norm.apply(b.mustGet("/console/support")))
	golden(t, filepath.Join("testdata", "support-operator.html"), norm.apply(op.mustGet("/console/support")))
}
