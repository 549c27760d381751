package apiserver_test

import (
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// TestAuthorizationMatrix: every route × {no token, another project's admin,
// a viewer on mutations} → 401 / 404 / 403.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, adminA := e.project("alpha")
	_, adminB := e.project("beta")
	viewerA := e.addToken(a, domain.RoleViewer)
	memberA := e.addToken(a, domain.RoleMember)
	agent := e.addAgentToken("local")

	// Real objects of project A so {id} names something that exists.
	var vpc apitype.VPC
	e.must(201, &vpc, "POST", "/v1/projects/"+a+"/vpcs", adminA, apitype.VPCCreate{Name: "net", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+a+"/services", adminA, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	var sup apitype.SupportRequest
	e.must(201, &sup, "POST", "/v1/projects/"+a+"/support-requests", adminA, apitype.SupportRequestCreate{Resource: "vpcs", Requested: 5, Message: "more"})
	ids := map[string]string{"vpcs": vpc.ID, "services": svc.ID, "peerings": "pcx-aaaaaaaaaaaaaaaa", "operations": "op-aaaaaaaaaaaaaaaa", "tokens": "tok-aaaaaaaaaaaaaaaa",
		"support-requests": sup.ID,
		"support-grants":   "sgr-aaaaaaaaaaaaaaaa", "ops/grants": "grant-aaaaaaaaaaaaaaaa", "ops/sessions": "ses-0123456789abcdef"}
	fill := func(pattern string) string {
		path := strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(pattern, "{p}", a), "{host}", "local"), "{n}", "1")
		for coll, id := range ids {
			path = strings.ReplaceAll(path, coll+"/{id}", coll+"/"+id)
		}
		return path
	}
	for _, rt := range e.srv.Routes() {
		if rt.Access == apiserver.Public {
			continue
		}
		path := fill(rt.Pattern)
		name := rt.Method + " " + rt.Pattern
		if r := e.do(rt.Method, path, "", nil); r.Status != 401 || r.Problem.Code != "unauthenticated" {
			t.Errorf("%s with no token = %d %s, want 401", name, r.Status, r.Problem.Code)
		}
		if r := e.do(rt.Method, path, "moat_tok-aaaaaaaaaaaaaaaa_forged", nil); r.Status != 401 {
			t.Errorf("%s with a forged token = %d, want 401", name, r.Status)
		}
		if rt.Access != apiserver.Agent {
			// A host agent reads and reports for its host, and nothing else.
			if r := e.do(rt.Method, path, agent, nil); r.Status != 403 {
				t.Errorf("%s with an agent token = %d, want 403", name, r.Status)
			}
		}
		switch rt.Access {
		case apiserver.Agent:
			if r := e.do(rt.Method, path, adminB, nil); r.Status != 403 {
				t.Errorf("%s with a project admin token = %d, want 403", name, r.Status)
			}
		case apiserver.Operator:
			// No role of a project token reaches an operator route:
			// operator access (certificates, grants, sessions) included.
			for role, tok := range map[string]string{"another project's admin": adminB, "the project's admin": adminA, "a viewer": viewerA, "a member": memberA} {
				if r := e.do(rt.Method, path, tok, nil); r.Status != 403 {
					t.Errorf("%s with %s token = %d, want 403", name, role, r.Status)
				}
			}
		case apiserver.ProjectRead, apiserver.ProjectWrite, apiserver.ProjectAdmin:
			if r := e.do(rt.Method, path, adminB, nil); r.Status != 404 || r.Problem.Code != "not_found" {
				t.Errorf("%s with another project's admin token = %d %s, want 404 not_found", name, r.Status, r.Problem.Code)
			}
			if rt.Method != "GET" || rt.Access == apiserver.ProjectAdmin {
				if r := e.do(rt.Method, path, viewerA, nil); r.Status != 403 || r.Problem.Code != "forbidden" {
					t.Errorf("%s with a viewer token = %d %s, want 403 forbidden", name, r.Status, r.Problem.Code)
				}
			}
		}
	}
}

// TestForeignIDIsMissing: project B asking for A's objects under its own
// project path gets exactly what a missing ID gets.
func TestForeignIDIsMissing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, adminA := e.project("alpha")
	b, adminB := e.project("beta")
	var vpc apitype.VPC
	e.must(201, &vpc, "POST", "/v1/projects/"+a+"/vpcs", adminA, apitype.VPCCreate{Name: "net", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+a+"/services", adminA, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	missing := map[string]string{vpc.ID: domain.NewID(domain.PrefixVPC), svc.ID: domain.NewID(domain.PrefixService)}
	for _, tc := range []struct{ method, path, id string }{
		{"GET", "/vpcs/", vpc.ID},
		{"DELETE", "/vpcs/", vpc.ID},
		{"GET", "/services/", svc.ID},
		{"GET", "/services/%s/allowlist", svc.ID},
		{"DELETE", "/services/", svc.ID},
	} {
		path := func(id string) string {
			if strings.Contains(tc.path, "%s") {
				return "/v1/projects/" + b + strings.Replace(tc.path, "%s", id, 1)
			}
			return "/v1/projects/" + b + tc.path + id
		}
		foreign := e.do(tc.method, path(tc.id), adminB, nil)
		absent := e.do(tc.method, path(missing[tc.id]), adminB, nil)
		norm := func(r resp, id string) apitype.Problem {
			p := r.Problem
			p.RequestID = ""
			p.Detail = strings.ReplaceAll(p.Detail, id, "ID")
			return p
		}
		if foreign.Status != 404 || norm(foreign, tc.id) != norm(absent, missing[tc.id]) {
			t.Errorf("%s %s: foreign = %d %+v; missing = %d %+v", tc.method, tc.path, foreign.Status, norm(foreign, tc.id), absent.Status, norm(absent, missing[tc.id]))
		}
	}
}

// FuzzDecoders: no request body makes a create or update answer 5xx.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"a","region":"us-east-1","cidr":"10.0.0.0/16"}`, `{"allowed_ips":[{"cidr":"::/0"}]}`, `[]`, `null`, `{"nodes":1e99}`, `{"peer_cidrs":[null]}`, "\x00"} {
		f.Add(s)
	}
	e := newEnv(f)
	proj, admin := e.project("fuzz")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+proj+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	f.Fuzz(func(t *testing.T, body string) {
		e.t = t
		for _, path := range []string{"/vpcs", "/peerings", "/services", "/services/" + svc.ID + "/allowlist", "/services/" + svc.ID + "/attach", "/tokens"} {
			method := "POST"
			if strings.HasSuffix(path, "allowlist") {
				method = "PUT"
			}
			if r := e.do(method, "/v1/projects/"+proj+path, admin, body); r.Status >= 500 {
				t.Fatalf("%s %s with %q = %d %s", method, path, body, r.Status, r.Body)
			}
		}
		if r := e.do("POST", "/v1/projects", e.operator, body); r.Status >= 500 {
			t.Fatalf("POST /v1/projects with %q = %d", body, r.Status)
		}
	})
}

// TestAgentTokenBoundToHost: an agent token bound to a host reads and
// reports for that host only (its desired state holds the nodes' keys); an
// unbound one (made before binding existed) and the operator's read any.
func TestAgentTokenBoundToHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bound := e.addAgentToken("h1")
	unbound := e.addToken("", domain.RoleAgent)
	report := apitype.HostReport{}
	for _, tc := range []struct {
		token, host string
		want        int
	}{
		{bound, "h1", 200}, {bound, "h2", 403}, {unbound, "h2", 403}, {e.operator, "h2", 200},
	} {
		r := e.do("GET", "/v1/hosts/"+tc.host+"/desired?after=-1", tc.token, nil)
		if tc.want == 200 && r.Status == 400 { // ?after=-1 is refused after authorization
			r.Status = 200
		}
		if r.Status != tc.want {
			t.Errorf("GET desired of %s: %d %s, want %d", tc.host, r.Status, r.Body, tc.want)
		}
		if tc.want == 403 && tc.token == bound && (!strings.Contains(r.Problem.Detail, "for host h1, not h2") || !strings.Contains(r.Problem.Hint, "--host h1")) {
			t.Errorf("refusal = %+v, want it to name the token's host and the fix", r.Problem)
		}
		rr := e.do("POST", "/v1/hosts/"+tc.host+"/report", tc.token, report)
		if got := map[bool]int{true: 403, false: 200}[rr.Status == 403]; got != tc.want {
			t.Errorf("POST report of %s: %d %s, want %d", tc.host, rr.Status, rr.Body, tc.want)
		}
	}
}
