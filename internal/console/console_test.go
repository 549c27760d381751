package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/console"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// edit changes a stored object directly, standing in for a reconciler or
// an agent the test does not run (a VPC turning active, a peering being
// requested, every node applying an allowlist).
func edit[T any, P store.Ptr[T]](t testing.TB, e *env, id string, f func(P)) {
	t.Helper()
	ctx := context.Background()
	if err := e.cp.Store.Update(ctx, func(tx store.Tx) error {
		o, err := store.Get[T, P](ctx, tx, id)
		if err != nil {
			return err
		}
		f(o)
		if err := store.Put(ctx, tx, o); err != nil {
			return err
		}
		_, err = tx.BumpRevision(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// fixture is project A with a VPC, a peering waiting for acceptance and a
// service.
type fixture struct {
	vpc     apitype.VPC
	peering apitype.Peering
	svc     apitype.Service
}

func (e *env) fixture(t testing.TB) fixture {
	t.Helper()
	ctx := context.Background()
	cl := e.api(e.adminA)
	var f fixture
	var err error
	if f.vpc, err = cl.CreateVPC(ctx, e.A, apitype.VPCCreate{Name: "prod", Region: "us-east-1", CIDR: "10.20.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	edit(t, e, f.vpc.ID, func(v *domain.VPC) { v.State, v.CloudVPCID = "active", "moat-r-"+v.ID })
	if f.peering, err = cl.CreatePeering(ctx, e.A, apitype.PeeringCreate{VPCID: f.vpc.ID, PeerAccountID: "123456789012",
		PeerVPCID: "vpc-0a1b2c3d", PeerRegion: "us-east-1", PeerCIDRs: []string{"172.31.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	edit(t, e, f.peering.ID, func(p *domain.Peering) { p.State, p.CloudPeeringID = "pending-acceptance", "pcx-0123456789abcdef0" })
	if f.svc, err = cl.CreateService(ctx, e.A, apitype.ServiceCreate{Name: "orders", Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSignInCookiesAndSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	resp, _ := b.get("/console/signin")
	checkCookie(t, resp, "__Host-moat-console-pre")
	// A wrong token: the API's own refusal, next to the field.
	resp, body := b.post("/console/signin", url.Values{"token": {"moat_tok-aaaaaaaaaaaaaaaa_nope"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "the API token is not valid") {
		t.Fatalf("bad token: %s\n%s", resp.Status, body)
	}
	resp, _ = b.post("/console/signin", url.Values{"token": {e.memberA}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %s", resp.Status)
	}
	ck := checkCookie(t, resp, "__Host-moat-console")
	if ck.MaxAge <= 0 {
		t.Errorf("session cookie MaxAge = %d, want it to expire", ck.MaxAge)
	}
	body = b.mustGet("/console/vpcs")
	if strings.Contains(body, e.memberA) {
		t.Error("the page shows the API token")
	}
	b.mustPost("/console/signout", url.Values{})
	resp, _ = b.get("/console/vpcs")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Errorf("after sign-out: %s to %q, want 303 to the sign-in page", resp.Status, resp.Header.Get("Location"))
	}
	// The old cookie value is dead on the server, not just in the browser.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/console/vpcs", nil)
	req.AddCookie(ck)
	resp, _ = e.browser().do(req)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("replayed session cookie after sign-out: %s, want 303 to sign-in", resp.Status)
	}
}

func checkCookie(t *testing.T, resp *http.Response, name string) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == name {
			if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
				t.Errorf("cookie %s: HttpOnly=%v Secure=%v SameSite=%v Path=%q Domain=%q, want HttpOnly, Secure, Strict, /, no domain",
					name, c.HttpOnly, c.Secure, c.SameSite, c.Path, c.Domain)
			}
			return c
		}
	}
	t.Fatalf("no cookie %s in %v", name, resp.Header.Values("Set-Cookie"))
	return nil
}

// TestCSPOnEveryResponse checks the header on pages, fragments, static
// files, errors and redirects, and that no page carries inline script or
// style (which the policy would block).
func TestCSPOnEveryResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.adminA)
	inline := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|javascript:|<style`)
	script := regexp.MustCompile(`(?i)<script[^>]*>[^<]*`)
	paths := []string{"/console/", "/console/signin", "/console/vpcs", "/console/vpcs/" + f.vpc.ID + "/live", "/console/services",
		"/console/services/" + f.svc.ID, "/console/services/" + f.svc.ID + "/allowlist", "/console/services/" + f.svc.ID + "/allowlist/edit",
		"/console/services/" + f.svc.ID + "/network", "/console/services/" + f.svc.ID + "/explain?from=198.51.100.7",
		"/console/services/" + f.svc.ID + "/ca.pem", "/console/audit", "/console/hint/vpc-cidr?cidr=10.0.0.7/17",
		"/console/static/htmx.min.js", "/console/static/console.css", "/console/nope", "/console/services/svc-aaaaaaaaaaaaaaaa"}
	for _, p := range paths {
		resp, body := b.get(p)
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", p)
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			if m := inline.FindString(body); m != "" {
				t.Errorf("GET %s: inline handler or style %q", p, m)
			}
			for _, m := range script.FindAllString(body, -1) {
				if !regexp.MustCompile(`^<script src="/console/static/[a-z.]+"></script>$`).MatchString(m + "</script>") {
					t.Errorf("GET %s: inline script %q", p, m)
				}
			}
		}
	}
	resp, _ := b.post("/console/vpcs", url.Values{"csrf": {"forged"}})
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("refused POST: no Content-Security-Policy")
	}
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	b := e.signIn(e.adminA)
	other := e.signIn(e.adminA)
	form := func(csrf string) url.Values {
		v := url.Values{"name": {"forged"}, "region": {"us-east-1"}, "cidr": {"10.9.0.0/16"}}
		if csrf != "-" {
			v.Set("csrf", csrf)
		}
		return v
	}
	for _, tc := range []struct{ name, csrf string }{{"no token", "-"}, {"empty token", ""}, {"another session's token", other.csrf}, {"made-up token", "AAAA"}} {
		b.csrf = "" // post sends only what the form carries
		resp, body := b.post("/console/vpcs", form(tc.csrf))
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Errorf("%s: %s, want 403 naming the CSRF token", tc.name, resp.Status)
		}
	}
	// Sign-in itself needs the form's token (login CSRF).
	resp, _ := e.browser().post("/console/signin", url.Values{"token": {e.adminA}, "csrf": {"x"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the form's token: %s, want 403", resp.Status)
	}
	vpcs, err := e.api(e.adminA).ListVPCs(ctx, e.A)
	if err != nil || len(vpcs) != 0 {
		t.Fatalf("VPCs after forged posts: %v, %v; want none", vpcs, err)
	}
	b.mustGet("/console/vpcs")
	b.mustPost("/console/vpcs", form(b.csrf))
	if vpcs, _ := e.api(e.adminA).ListVPCs(ctx, e.A); len(vpcs) != 1 {
		t.Fatalf("VPCs after a real post: %d, want 1", len(vpcs))
	}
}

// TestViewer: a viewer sees no mutating control, and a post made anyway
// (valid session and CSRF token) is refused by the API's own rule.
func TestViewer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.viewerA)
	postForm := regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	for _, p := range []string{"/console/vpcs", "/console/services", "/console/services/" + f.svc.ID, "/console/services/" + f.svc.ID + "/allowlist",
		"/console/services/" + f.svc.ID + "/network", "/console/audit", "/console/support"} {
		body := b.mustGet(p)
		for _, m := range postForm.FindAllStringSubmatch(body, -1) {
			if m[1] != "/console/signout" {
				t.Errorf("viewer sees a form posting to %s on %s", m[1], p)
			}
		}
		if strings.Contains(body, "allowlist/edit") {
			t.Errorf("viewer sees Change on %s", p)
		}
	}
	for _, tc := range []struct {
		path string
		form url.Values
	}{
		{"/console/vpcs", url.Values{"name": {"x"}, "region": {"us-east-1"}, "cidr": {"10.9.0.0/16"}}},
		{"/console/vpcs/" + f.vpc.ID + "/delete", url.Values{}},
		{"/console/services/" + f.svc.ID + "/allowlist", url.Values{"cidr": {"203.0.113.7"}, "description": {"x"}, "etag": {`"1"`}}},
	} {
		resp, body := b.post(tc.path, tc.form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "role viewer may not change objects") {
			t.Errorf("viewer POST %s: %s, want the API's 403\n%s", tc.path, resp.Status, body)
		}
	}
	l, _, err := e.api(e.adminA).GetAllowlist(context.Background(), e.A, f.svc.ID)
	if err != nil || l.Revision != 1 {
		t.Errorf("allowlist after the viewer's post: %+v, %v; want revision 1", l, err)
	}
}

// TestProjectIsolation: a token of project B sees nothing of A.
func TestProjectIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.adminB)
	for _, p := range []string{"/console/vpcs", "/console/services", "/console/audit"} {
		body := b.mustGet(p)
		for _, secret := range []string{f.vpc.ID, f.svc.ID, "orders", "10.20.0.0/16", e.A} {
			if strings.Contains(body, secret) {
				t.Errorf("B's %s shows %q of project A", p, secret)
			}
		}
	}
	for _, p := range []string{"/console/services/" + f.svc.ID, "/console/services/" + f.svc.ID + "/allowlist", "/console/vpcs/" + f.vpc.ID + "/live",
		"/console/services/" + f.svc.ID + "/ca.pem"} {
		if resp, _ := b.get(p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("B GET %s: %s, want 404", p, resp.Status)
		}
	}
	resp, _ := b.post("/console/vpcs/"+f.vpc.ID+"/delete", url.Values{})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("B deletes A's VPC: %s, want 404", resp.Status)
	}
	// The operator may not be steered into a project it cannot see, and a
	// project token may not switch projects at all.
	b.mustPost("/console/project", url.Values{"project": {e.A}})
	if body := b.mustGet("/console/services"); strings.Contains(body, "orders") {
		t.Error("B switched to project A")
	}
}

// TestEscaping: names and descriptions holding markup render inert.
func TestEscaping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	const evil = `<script>alert(1)</script>`
	b := e.signIn(e.adminA)
	// Reflected: the API refuses the name; the form shows it back, escaped.
	resp, body := b.post("/console/vpcs", url.Values{"name": {evil}, "region": {"us-east-1"}, "cidr": {"10.30.0.0/16"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "is not a valid name") {
		t.Fatalf("evil VPC name: %s\n%s", resp.Status, body)
	}
	checkInert(t, "VPC form", body, evil)
	resp, body = b.post("/console/services", url.Values{"name": {evil}, "region": {"us-east-1"}, "nodes": {"1"}})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("evil service name: %s", resp.Status)
	}
	checkInert(t, "service form", body, evil)
	// Stored: an allowlist description is free text.
	b.mustGet("/console/services/" + f.svc.ID + "/allowlist/edit")
	b.mustPost("/console/services/"+f.svc.ID+"/allowlist", url.Values{"cidr": {"203.0.113.7"}, "description": {evil}, "etag": {`"1"`}})
	body = b.mustGet("/console/services/" + f.svc.ID + "/allowlist")
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("allowlist page does not show the description escaped")
	}
	checkInert(t, "allowlist", body, evil)
	checkInert(t, "allowlist editor", b.mustGet("/console/services/"+f.svc.ID+"/allowlist/edit"), evil)
	checkInert(t, "audit", b.mustGet("/console/audit"), evil)
}

func checkInert(t *testing.T, what, body, evil string) {
	t.Helper()
	if strings.Contains(body, evil) || strings.Contains(body, "<script>alert") {
		t.Errorf("%s renders %q unescaped", what, evil)
	}
}

// TestVPCs: the create form's hints and the API's refusals next to their
// fields, the quota, peering steps and live state, delete's 409 reasons.
func TestVPCs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.adminA)
	// Before submit: the domain's own function gives the hint.
	hint := b.mustGet("/console/hint/vpc-cidr?cidr=10.0.0.7/17")
	if !strings.Contains(hint, "use 10.0.0.0/17") || !strings.Contains(hint, `id="cidr-hint"`) {
		t.Errorf("hint for 10.0.0.7/17: %s", hint)
	}
	if hint := b.mustGet("/console/hint/vpc-cidr?cidr=10.1.0.0/17"); !strings.Contains(hint, "10.1.0.0/17: 32,768 addresses") {
		t.Errorf("hint for 10.1.0.0/17: %s", hint)
	}
	// On submit: the API's message and hint, next to the field.
	resp, body := b.post("/console/vpcs", url.Values{"name": {"dev"}, "region": {"us-east-1"}, "cidr": {"10.0.0.7/17"}})
	fieldErr := regexp.MustCompile(`(?s)<p id="vpc-cidr-error" class="field-error" aria-live="polite">(.*?)</p>`)
	m := fieldErr.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusUnprocessableEntity || m == nil || !strings.Contains(m[1], "has host bits set") || !strings.Contains(m[1], "use 10.0.0.0/17") {
		t.Errorf("create 10.0.0.7/17: %s, cidr error %q", resp.Status, m)
	}
	if !strings.Contains(body, `value="10.0.0.7/17"`) || !strings.Contains(body, `aria-invalid="true"`) {
		t.Error("the refused form does not keep the value and mark the field invalid")
	}
	if !strings.Contains(body, "1 of 3 VPCs used") {
		t.Error("no quota line 1 of 3")
	}
	// The peering's customer-side steps, with the pcx- ID to copy.
	for _, want := range []string{"pending-acceptance", `data-copy="pcx-0123456789abcdef0"`, "destination <code>10.20.0.0/16</code>, target <code>pcx-0123456789abcdef0</code>",
		"TCP port 5432 to <code>10.20.0.0/16</code>", "hx-trigger=\"every 200ms\""} {
		if !strings.Contains(body, want) {
			t.Errorf("VPC page lacks %q", want)
		}
	}
	// Live: the peering turns active; the polled fragment says so and
	// stops polling.
	edit(t, e, f.peering.ID, func(p *domain.Peering) { p.State = "active" })
	live := b.mustGet("/console/vpcs/" + f.vpc.ID + "/live")
	if !strings.Contains(live, ">active<") || strings.Contains(live, "hx-trigger") || !strings.Contains(live, `id="vpc-`+f.vpc.ID+`-state" hx-swap-oob="true"`) {
		t.Errorf("live fragment after active:\n%s", live)
	}
	// Delete is refused while the peering lives: the API's 409 reasons.
	resp, body = b.post("/console/vpcs/"+f.vpc.ID+"/delete", url.Values{})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, f.peering.ID) || !strings.Contains(body, `role="alert"`) {
		t.Errorf("delete VPC with a peering: %s\n%s", resp.Status, body)
	}
	// Add a peering through the form; the API's field error comes back.
	resp, body = b.post("/console/vpcs/"+f.vpc.ID+"/peerings", url.Values{"peer_account_id": {"12"}, "peer_vpc_id": {"vpc-0a1b2c3e"}, "peer_region": {"us-east-1"}, "peer_cidrs": {"172.30.0.0/16"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="peer-account-`+f.vpc.ID+`-error"[^>]*>[^<]*<span class="msg">`).MatchString(body) {
		t.Errorf("bad peer account: %s", resp.Status)
	}
	b.mustPost("/console/vpcs/"+f.vpc.ID+"/peerings", url.Values{"peer_account_id": {"123456789012"}, "peer_vpc_id": {"vpc-0a1b2c3e"}, "peer_region": {"eu-west-1"}, "peer_cidrs": {"172.30.0.0/16"}})
	if ps, _ := e.api(e.adminA).ListPeerings(context.Background(), e.A, f.vpc.ID); len(ps) != 2 {
		t.Errorf("peerings after Add Connection: %d, want 2", len(ps))
	}
}

func TestAllowlist(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	ctx := context.Background()
	b := e.signIn(e.adminA)
	path := "/console/services/" + f.svc.ID + "/allowlist"
	body := b.mustGet(path)
	if !strings.Contains(body, `id="wide-open"`) {
		t.Error("no wide-open banner on the default list")
	}
	for _, tc := range []struct{ in, want string }{
		{"203.0.113.7", "becomes 203.0.113.7/32: 1 address"},
		{"2001:db8::1", "becomes 2001:db8::1/128: 1 address"},
		{"10.0.0.7/8", "use 10.0.0.0/8"},
		{"198.51.100.0/24", "256 addresses"},
		{"nonsense", "is not a CIDR"},
	} {
		if h := b.mustGet("/console/hint/allow-cidr?hint_id=row-3-hint&cidr=" + url.QueryEscape(tc.in)); !strings.Contains(h, tc.want) || !strings.Contains(h, `id="row-3-hint"`) {
			t.Errorf("hint for %q: %s, want %q", tc.in, h, tc.want)
		}
	}
	body = b.mustGet(path + "/edit")
	if !strings.Contains(body, `name="etag" value="&#34;1&#34;"`) {
		t.Fatalf("editor lacks the ETag:\n%s", body)
	}
	// Keeping 0.0.0.0/0 asks for a confirmation; nothing is written.
	resp, body := b.post(path, url.Values{"cidr": {"0.0.0.0/0", "203.0.113.7"}, "description": {"all", "office"}, "etag": {`"1"`}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `id="confirm-wide"`) {
		t.Errorf("wide list: %s, want the confirmation", resp.Status)
	}
	// An empty list asks for its own confirmation.
	resp, body = b.post(path, url.Values{"cidr": {""}, "description": {""}, "etag": {`"1"`}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `id="confirm-empty"`) {
		t.Errorf("empty list: %s, want the confirmation", resp.Status)
	}
	// A duplicate: the API's message next to the row.
	resp, body = b.post(path, url.Values{"cidr": {"203.0.113.7", "203.0.113.7/32"}, "description": {"a", "b"}, "etag": {`"1"`}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !regexp.MustCompile(`class="field-error" aria-live="polite"><span class="msg">203.0.113.7/32 is listed twice`).MatchString(body) {
		t.Errorf("duplicate: %s\n%s", resp.Status, body)
	}
	if l, _, _ := e.api(e.adminA).GetAllowlist(ctx, e.A, f.svc.ID); l.Revision != 1 {
		t.Fatalf("revision after refusals: %d, want 1", l.Revision)
	}
	loc := b.mustPost(path, url.Values{"cidr": {"203.0.113.7", ""}, "description": {"office", ""}, "etag": {`"1"`}})
	if loc != path+"?saved=2" {
		t.Errorf("save redirects to %q", loc)
	}
	body = b.mustGet(loc)
	if !strings.Contains(body, "203.0.113.7/32") || strings.Contains(body, `id="wide-open"`) || !strings.Contains(body, "waiting for every node") ||
		!strings.Contains(body, path+"/status") {
		t.Errorf("after save:\n%s", body)
	}
	// The agents report: the polled status says applied, and stops.
	edit(t, e, f.svc.ID, func(s *domain.Service) { s.AppliedAllowlistRevision = s.AllowlistRevision })
	if st := b.mustGet(path + "/status"); !strings.Contains(st, "applied on every node") || strings.Contains(st, "hx-trigger") {
		t.Errorf("status after apply: %s", st)
	}
	// Another editor saves meanwhile: the conflict is shown, not
	// overwritten.
	b.mustGet(path + "/edit")
	if _, _, err := e.api(e.memberA).PutAllowlist(ctx, e.A, f.svc.ID, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "198.51.100.0/24", Description: "vpn"}}}, `"2"`); err != nil {
		t.Fatal(err)
	}
	resp, body = b.post(path, url.Values{"cidr": {"192.0.2.1"}, "description": {"mine"}, "etag": {`"2"`}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `id="conflict"`) || !strings.Contains(body, "198.51.100.0/24") || !strings.Contains(body, `value="192.0.2.1"`) {
		t.Errorf("stale save: %s\n%s", resp.Status, body)
	}
	if l, _, _ := e.api(e.adminA).GetAllowlist(ctx, e.A, f.svc.ID); len(l.AllowedIPs) != 1 || l.AllowedIPs[0].CIDR != "198.51.100.0/24" {
		t.Errorf("the other editor's list was overwritten: %+v", l.AllowedIPs)
	}
	// Confirmed empty list.
	b.mustPost(path, url.Values{"cidr": {""}, "description": {""}, "etag": {`"3"`}, "confirm_empty": {"yes"}})
	if l, _, _ := e.api(e.adminA).GetAllowlist(ctx, e.A, f.svc.ID); len(l.AllowedIPs) != 0 {
		t.Errorf("confirmed empty list: %+v", l.AllowedIPs)
	}
}

func TestServiceNetworkExplainAudit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.adminA)
	svc := "/console/services/" + f.svc.ID
	body := b.mustGet(svc)
	for _, want := range []string{"Take a backup now", "Restore into a new service", "service.create"} {
		if !strings.Contains(body, want) {
			t.Errorf("service page lacks %q", want)
		}
	}
	if !strings.Contains(body, `hx-get="`+svc+`/live"`) {
		t.Error("a creating service's state is not followed live")
	}
	resp, pem := b.get(svc + "/ca.pem")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Disposition") == "" || !strings.HasPrefix(pem, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("CA download: %s", resp.Status)
	}
	// A restore needs a backup: the API's refusal shows on the page.
	resp, body = b.post(svc+"/restore", url.Values{"name": {"orders-copy"}, "to_time": {"2026-12-01T10:00"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `role="alert"`) {
		t.Errorf("restore without backups: %s", resp.Status)
	}
	resp, body = b.post(svc+"/restore", url.Values{"name": {"orders-copy"}, "to_time": {"yesterday"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `&#34;yesterday&#34; is not a time`) {
		t.Errorf("restore to a bad time: %s", resp.Status)
	}
	// Delete needs the typed ID.
	resp, body = b.post(svc+"/delete", url.Values{"confirm": {"orders"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "type the service&#39;s ID to confirm") {
		t.Errorf("delete without the ID: %s", resp.Status)
	}
	// Attach: the warning, then the operation's progress.
	body = b.mustGet(svc + "/network")
	if !strings.Contains(body, "The host name changes") || !strings.Contains(body, f.svc.ID+"."+e.A+".vpc.moat.test") {
		t.Errorf("network page lacks the host name warning")
	}
	resp, body = b.post(svc+"/attach", url.Values{"vpc_id": {f.vpc.ID}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Hint: wait until the service is running") {
		t.Errorf("attach a creating service: %s, want the API's refusal and hint", resp.Status)
	}
	edit(t, e, f.svc.ID, func(s *domain.Service) { s.State = "running" })
	loc := b.mustPost(svc+"/attach", url.Values{"vpc_id": {f.vpc.ID}})
	if !strings.HasPrefix(loc, svc+"/network?op=op-") {
		t.Fatalf("attach redirects to %q", loc)
	}
	body = b.mustGet(loc)
	op := strings.TrimPrefix(loc, svc+"/network?op=")
	if !strings.Contains(body, `hx-get="/console/operations/`+op+`"`) {
		t.Errorf("no live operation progress:\n%s", body)
	}
	if frag := b.mustGet("/console/operations/" + op); !strings.Contains(frag, "service.attach") {
		t.Errorf("operation fragment: %s", frag)
	}
	// Running is not an operation's end: it is still followed, until it
	// succeeds.
	edit(t, e, op, func(o *domain.Operation) { o.Start("attach", time.Now()) })
	if frag := b.mustGet("/console/operations/" + op); !strings.Contains(frag, ">running<") || !strings.Contains(frag, `hx-get="/console/operations/`+op+`"`) {
		t.Errorf("a running operation is not followed live: %s", frag)
	}
	edit(t, e, op, func(o *domain.Operation) { o.Succeed(time.Now()) })
	if frag := b.mustGet("/console/operations/" + op); !strings.Contains(frag, ">succeeded<") || strings.Contains(frag, "hx-get") {
		t.Errorf("a succeeded operation is still polled: %s", frag)
	}
	edit(t, e, f.svc.ID, func(s *domain.Service) { s.State = "running" })
	if frag := b.mustGet(svc + "/live"); !strings.Contains(frag, ">running<") || strings.Contains(frag, "hx-trigger") {
		t.Errorf("live fragment of a running service: %s", frag)
	}
	// Explain: the domain's verdict over the API's model.
	body = b.mustGet(svc + "/explain?from=198.51.100.7")
	if !strings.Contains(body, `id="verdict"`) || !strings.Contains(body, "<strong>no-path</strong> — service "+f.svc.ID+" has no node address") {
		t.Errorf("explain for a service without nodes:\n%s", body)
	}
	resp, body = b.get(svc + "/explain?from=not-an-ip")
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "is not an IP address") {
		t.Errorf("explain bad address: %s", resp.Status)
	}
	// Audit: filtered by action; the operator sees every project and
	// verifies the chain.
	body = b.mustGet("/console/audit?action=vpc.")
	if !strings.Contains(body, "vpc.create") || strings.Contains(body, "service.create") {
		t.Errorf("audit filtered by vpc.:\n%s", body)
	}
	ob := e.signIn(e.operator)
	body = ob.mustGet("/console/audit")
	if !strings.Contains(body, e.A) || !strings.Contains(body, e.B) {
		t.Error("operator's audit page does not show both projects")
	}
	if body = ob.mustGet("/console/audit/verify"); !strings.Contains(body, "The audit log is intact") {
		t.Errorf("verify:\n%s", body)
	}
	if resp, _ := b.get("/console/audit/verify"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("project admin verifies the audit log: %s, want the API's 403", resp.Status)
	}
}

// TestGolden renders every page of a fixed scene and compares it with
// testdata/*.html (go test -update rewrites them). IDs, CSRF tokens and
// times are normalised.
func TestGolden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.adminA)
	svc := "/console/services/" + f.svc.ID
	pages := []struct{ name, path string }{
		{"signin", "/console/signin"},
		{"vpcs", "/console/vpcs"},
		{"services", "/console/services"},
		{"service", svc},
		{"network", svc + "/network"},
		{"allowlist", svc + "/allowlist"},
		{"allowlist-edit", svc + "/allowlist/edit"},
		{"explain", svc + "/explain?from=198.51.100.7"},
		{"audit", "/console/audit?action=vpc."},
	}
	norm := newNormaliser() // one for all pages, in order: IDs keep their names
	for _, pg := range pages {
		name, p := pg.name, pg.path
		var body string
		if name == "signin" {
			_, body = e.browser().get(p)
		} else {
			body = b.mustGet(p)
		}
		golden(t, filepath.Join("testdata", name+".html"), norm.apply(body))
	}
}

type normaliser struct {
	ids map[string]string
	n   map[string]int
}

func newNormaliser() *normaliser { return &normaliser{ids: map[string]string{}, n: map[string]int{}} }

var (
	idRE   = regexp.MustCompile(`\b(proj|tok|vpc|pcx|svc|node|op|req|sup)-[a-z2-7]{16}\b`)
	rowRE  = regexp.MustCompile(`\b(row|cidr|desc)-\d+\b`)
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ`)
	csrfVR = regexp.MustCompile(`("csrf" value="|"X-CSRF-Token": ")[A-Za-z0-9_-]+`)
)

// apply replaces IDs by stable names in order of first appearance
// (vpc-1, …), times by TIME and CSRF tokens by CSRF.
func (n *normaliser) apply(s string) string {
	s = idRE.ReplaceAllStringFunc(s, func(id string) string {
		if r, ok := n.ids[id]; ok {
			return r
		}
		kind := id[:strings.IndexByte(id, '-')]
		n.n[kind]++
		r := fmt.Sprintf("%s-%d", kind, n.n[kind])
		n.ids[id] = r
		return r
	})
	s = rowRE.ReplaceAllStringFunc(s, func(id string) string {
		if r, ok := n.ids[id]; ok {
			return r
		}
		kind, num, _ := strings.Cut(id, "-")
		if _, ok := n.ids["row-"+num]; !ok {
			n.n["row"]++
			n.ids["row-"+num] = fmt.Sprintf("row-N%d", n.n["row"])
		}
		r := kind + "-" + strings.TrimPrefix(n.ids["row-"+num], "row-")
		n.ids[id] = r
		return r
	})
	s = timeRE.ReplaceAllString(s, "TIME")
	return csrfVR.ReplaceAllString(s, "${1}CSRF")
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the rendered page (go test -update rewrites it); got:\n%s", path, got)
	}
}

// TestLabels: every visible input and select of every page has a label,
// and every field error is tied to its input with aria-describedby.
func TestLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	b := e.signIn(e.operator)
	b.mustPost("/console/project", url.Values{"project": {e.A}})
	svc := "/console/services/" + f.svc.ID
	control := regexp.MustCompile(`<(input|select|textarea)\b[^>]*>`)
	attr := func(tag, name string) string {
		m := regexp.MustCompile(`\s` + name + `="([^"]*)"`).FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		return m[1]
	}
	if _, err := e.api(e.adminA).CreateSupportRequest(context.Background(), e.A, apitype.SupportRequestCreate{Resource: "vpcs", Requested: 5, Message: "more"}); err != nil {
		t.Fatal(err)
	}
	ab := e.signIn(e.adminA)
	for _, p := range []string{"/console/vpcs", "/console/services", svc, svc + "/network", svc + "/allowlist/edit", svc + "/explain", "/console/audit", "/console/support", "tenant:/console/support"} {
		var body string
		if tp, ok := strings.CutPrefix(p, "tenant:"); ok {
			body = ab.mustGet(tp)
		} else {
			body = b.mustGet(p)
		}
		for _, tag := range control.FindAllString(body, -1) {
			if attr(tag, "type") == "hidden" {
				continue
			}
			id := attr(tag, "id")
			if id == "" || !strings.Contains(body, `for="`+id+`"`) {
				t.Errorf("%s: control without a label: %s", p, tag)
			}
		}
		for _, m := range regexp.MustCompile(`<p id="([^"]+-error)" class="field-error" aria-live="polite">`).FindAllStringSubmatch(body, -1) {
			if !regexp.MustCompile(`aria-describedby="[^"]*\b` + regexp.QuoteMeta(m[1]) + `\b`).MatchString(body) {
				t.Errorf("%s: error paragraph %s is not tied to a control", p, m[1])
			}
		}
	}
}

// TestOperator: the operator switches projects, sets a quota (the
// answer to a quota request) and sees it on the page.
func TestOperator(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fixture(t)
	b := e.signIn(e.operator)
	b.mustPost("/console/project", url.Values{"project": {e.B}, "back": {"/console/services"}})
	if body := b.mustGet("/console/services"); strings.Contains(body, "orders") || !strings.Contains(body, e.B) {
		t.Error("after switching to B the operator still sees A's services")
	}
	b.mustPost("/console/project", url.Values{"project": {e.A}, "back": {"//evil.example/"}})
	body := b.mustGet("/console/vpcs")
	if !strings.Contains(body, "1 of 3 VPCs used") || !strings.Contains(body, `id="quota-vpcs"`) {
		t.Fatalf("operator's VPC page:\n%s", body)
	}
	resp, body := b.post("/console/quota", url.Values{"vpcs": {"-1"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "-1 is not a valid quota") {
		t.Errorf("quota -1: %s, want the API's refusal", resp.Status)
	}
	b.mustPost("/console/quota", url.Values{"vpcs": {"5"}})
	if body := b.mustGet("/console/vpcs"); !strings.Contains(body, "1 of 5 VPCs used") {
		t.Error("quota 5 not shown")
	}
	// A project admin has no quota control, and a forged post is the API's 403.
	ab := e.signIn(e.adminA)
	if body := ab.mustGet("/console/vpcs"); strings.Contains(body, `id="quota-vpcs"`) {
		t.Error("a project admin sees the quota control")
	}
	if resp, _ := ab.post("/console/quota", url.Values{"vpcs": {"50"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("project admin sets the quota: %s, want 403", resp.Status)
	}
}

// TestMemberRole: a member token is shown read-only while the API cannot
// say a member from a viewer (no GET /v1/whoami); with whoami, it gets its
// controls.
func TestMemberRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.api(e.memberA).Whoami(context.Background()); err == nil {
		t.Skip("the API has GET /v1/whoami: the role comes from it (TestWhoami)")
	}
	body := e.signIn(e.memberA).mustGet("/console/vpcs")
	if !strings.Contains(body, "Read-only: this API cannot say whether the token is a member or a viewer") || strings.Contains(body, "Create VPC") {
		t.Errorf("member without whoami:\n%s", body)
	}
	if body := e.signIn(e.adminA).mustGet("/console/vpcs"); strings.Contains(body, "Read-only") || !strings.Contains(body, "Create VPC") {
		t.Error("admin is not shown its controls")
	}
}

// TestWhoami: where the API answers GET /v1/whoami, the console takes the
// role from it (here a stand-in for the route the API does not have yet,
// in front of the real API handler).
func TestWhoami(t *testing.T) {
	t.Parallel()
	var ids map[string]client.Identity
	e := newEnvWith(t, func(c *console.Config) {
		api := c.API
		c.API = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/whoami" {
				api.ServeHTTP(w, r)
				return
			}
			id, ok := ids[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
			if !ok {
				http.Error(w, "unknown token", http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(id)
		})
	})
	ids = map[string]client.Identity{e.memberA: {TokenID: "tok-member", Role: "member", ProjectID: e.A}, e.viewerA: {TokenID: "tok-viewer", Role: "viewer", ProjectID: e.A}}
	body := e.signIn(e.memberA).mustGet("/console/vpcs")
	if strings.Contains(body, "Read-only") || !strings.Contains(body, "Create VPC") || !strings.Contains(body, "Role: member") {
		t.Errorf("member with whoami is not shown its controls")
	}
	if body := e.signIn(e.viewerA).mustGet("/console/vpcs"); strings.Contains(body, "Create VPC") || !strings.Contains(body, "Role: viewer") {
		t.Error("viewer with whoami is shown controls")
	}
}

// TestSessionExpires: a session ends after its TTL, server-side.
func TestSessionExpires(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e := newEnvWith(t, func(c *console.Config) {
		c.SessionTTL = time.Hour
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	b := e.signIn(e.adminA)
	mu.Lock()
	now = now.Add(59 * time.Minute)
	mu.Unlock()
	b.mustGet("/console/vpcs")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if resp, _ := b.get("/console/vpcs"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Errorf("after the TTL: %s to %q, want 303 to sign-in", resp.Status, resp.Header.Get("Location"))
	}
	if resp, body := b.post("/console/vpcs", url.Values{"name": {"late"}, "region": {"us-east-1"}, "cidr": {"10.9.0.0/16"}}); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Nothing was changed") {
		t.Errorf("post after the TTL: %s", resp.Status)
	}
}

// TestNodeStateInfo: the service page's node table says why a node failed
// (the API's state_info), e.g. a full volume.
func TestNodeStateInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.fixture(t)
	svc, err := e.api(e.adminA).GetService(context.Background(), e.A, f.svc.ID)
	if err != nil || len(svc.NodeList) == 0 {
		t.Fatalf("service %+v, %v: want a node", svc, err)
	}
	edit(t, e, svc.NodeList[0].ID, func(n *domain.Node) {
		n.State, n.StateInfo = "failed", &domain.Info{Code: "volume_full", Message: "its encrypted volume is full"}
	})
	body := e.signIn(e.adminA).mustGet("/console/services/" + f.svc.ID)
	if !strings.Contains(body, `<span class="state state-failed">failed</span>: its encrypted volume is full (volume_full)`) {
		t.Errorf("service page does not say why the node failed:\n%s", body)
	}
}
