package apiserver_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// TestIdempotencyKeepsNoSecret: a create with an Idempotency-Key keeps the
// created object's answer without the secret it handed out; a replay says
// the secret was shown once; records expire and are purged.
func TestIdempotencyKeepsNoSecret(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	e := newEnvWith(t, func(c *apiserver.Config) { c.Now = func() time.Time { return clock() } })
	p, admin := e.project("acme")
	base := "/v1/projects/" + p

	var tok, again apitype.Token
	e.must(201, &tok, "POST", base+"/tokens", admin, apitype.TokenCreate{Role: "viewer", Name: "ci"}, "Idempotency-Key", "t1")
	r := e.must(201, &again, "POST", base+"/tokens", admin, apitype.TokenCreate{Role: "viewer", Name: "ci"}, "Idempotency-Key", "t1")
	if tok.Secret == "" || again.ID != tok.ID || again.Secret != "" || again.SecretShownOnce == "" || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed token create = %+v, want id %s, no secret, secret_shown_once set", again, tok.ID)
	}
	var svc, svc2 apitype.Service
	in := apitype.ServiceCreate{Name: "db", Region: "us-east-1"}
	e.must(201, &svc, "POST", base+"/services", admin, in, "Idempotency-Key", "s1")
	e.must(201, &svc2, "POST", base+"/services", admin, in, "Idempotency-Key", "s1")
	if svc.AdminPassword == "" || svc2.ID != svc.ID || svc2.AdminPassword != "" || svc2.SecretShownOnce == "" {
		t.Errorf("replayed service create = %+v, want id %s, no password, secret_shown_once set", svc2, svc.ID)
	}
	// The stored records hold neither secret.
	ctx := context.Background()
	for _, key := range []string{"t1", "s1"} {
		path := base + "/tokens"
		if key == "s1" {
			path = base + "/services"
		}
		tokID := strings.SplitN(strings.TrimPrefix(admin, apiserver.TokenPrefix), "_", 2)[0]
		if err := e.st.View(ctx, func(tx store.Tx) error {
			rec, err := tx.GetIdempotency(ctx, tokID+" POST "+path+" "+key)
			if err != nil {
				return err
			}
			secretOf := strings.SplitN(strings.TrimPrefix(tok.Secret, apiserver.TokenPrefix), "_", 2)[1]
			if strings.Contains(string(rec.Body), secretOf) || strings.Contains(string(rec.Body), svc.AdminPassword) {
				t.Errorf("idempotency record %s holds a secret: %s", key, rec.Body)
			}
			return nil
		}); err != nil {
			t.Fatalf("read idempotency record %s: %v", key, err)
		}
	}
	// After the TTL the key is new again, and the purge deletes the records.
	now = now.Add(apiserver.DefaultIdempotencyTTL + time.Minute)
	var fresh apitype.Token
	e.must(201, &fresh, "POST", base+"/tokens", admin, apitype.TokenCreate{Role: "viewer", Name: "ci"}, "Idempotency-Key", "t1")
	if fresh.ID == tok.ID || fresh.Secret == "" {
		t.Errorf("create after expiry = %+v, want a new token with its secret", fresh)
	}
	n, err := e.srv.PurgeIdempotency(ctx)
	if err != nil || n != 1 { // s1; t1 was just replaced
		t.Errorf("PurgeIdempotency = %d, %v; want 1", n, err)
	}
}

// TestCredentialRoutesNeedAdmin: every route that hands out a secret
// refuses members and viewers, and so does a restore.
func TestCredentialRoutesNeedAdmin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, adminA := e.project("alpha")
	member := e.addToken(a, domain.RoleMember)
	viewer := e.addToken(a, domain.RoleViewer)
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+a+"/services", adminA, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	bodies := map[string]any{
		"/v1/projects/{p}/tokens": apitype.TokenCreate{Role: "admin"},
		"/v1/tokens":              apitype.PlatformTokenCreate{Name: "x"},
		"/v1/hosts/{host}/tokens": apitype.PlatformTokenCreate{},
	}
	var credential []string
	for _, rt := range e.srv.Routes() {
		if !rt.Credential {
			continue
		}
		credential = append(credential, rt.Method+" "+rt.Pattern)
		path := strings.NewReplacer("{p}", a, "{host}", "h1", "{id}", svc.ID).Replace(rt.Pattern)
		for name, tok := range map[string]string{"member": member, "viewer": viewer} {
			if r := e.do(rt.Method, path, tok, bodies[rt.Pattern]); r.Status != 403 {
				t.Errorf("%s %s as %s = %d %s, want 403", rt.Method, rt.Pattern, name, r.Status, r.Body)
			}
		}
	}
	// Every route that hands out a credential: tokens (project, operator,
	// a host's agent token, and the one a host's registration answers
	// with), the admin password reset, an operator's SSH certificate and a
	// console sign-in link.
	want := []string{"POST /v1/console/links", "POST /v1/hosts", "POST /v1/hosts/{host}/tokens", "POST /v1/ops/grants",
		"POST /v1/projects/{p}/services/{id}/password", "POST /v1/projects/{p}/tokens", "POST /v1/tokens"}
	slices.Sort(credential)
	if !slices.Equal(credential, want) {
		t.Errorf("Credential routes = %v, want %v", credential, want)
	}
	// Every creating or acting route (POST, PUT) whose answer can hold a
	// secret is a Credential route, but for the service create (a member
	// gets the new, empty service's own password; a restore is checked
	// below). Reads and deletes convert stored objects, which hold no
	// secret to put in those fields.
	for _, rt := range e.srv.Routes() {
		key := rt.Method + " " + rt.Pattern
		if (rt.Method != "POST" && rt.Method != "PUT") || rt.Access == apiserver.Agent || rt.Response == nil || rt.Credential || key == "POST /v1/projects/{p}/services" {
			continue
		}
		if f := secretField(reflect.TypeOf(rt.Response)); f != "" {
			t.Errorf("%s answers %s with field %s but is not a Credential route", key, reflect.TypeOf(rt.Response), f)
		}
	}
	restore := apitype.ServiceCreate{Name: "copy", Region: "us-east-1", RestoreFrom: &apitype.RestoreFrom{ServiceID: svc.ID}}
	if r := e.do("POST", "/v1/projects/"+a+"/services", member, restore); r.Status != 403 {
		t.Errorf("restore as member = %d %s, want 403", r.Status, r.Body)
	}
	// A member still creates services (the new service's own password).
	e.must(201, nil, "POST", "/v1/projects/"+a+"/services", member, apitype.ServiceCreate{Name: "db2", Region: "us-east-1"})
}

// TestPlatformTokens: operators create named operator tokens and per-host
// agent tokens, list and revoke them; names show in the audit log; an
// agent token lists no projects.
func TestPlatformTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.project("acme")
	var op apitype.Token
	e.must(201, &op, "POST", "/v1/tokens", e.operator, apitype.PlatformTokenCreate{Name: "alice"})
	if op.Role != "operator" || op.Name != "alice" || op.Secret == "" {
		t.Fatalf("operator token = %+v", op)
	}
	e.must(400, nil, "POST", "/v1/tokens", e.operator, apitype.PlatformTokenCreate{})
	var ag apitype.Token
	e.must(201, &ag, "POST", "/v1/hosts/h1/tokens", op.Secret, nil)
	if ag.Role != "agent" || ag.Host != "h1" || ag.Secret == "" {
		t.Fatalf("agent token = %+v", ag)
	}
	// ?after=-1 is refused (400) after authorization: no long poll.
	e.must(400, nil, "GET", "/v1/hosts/h1/desired?after=-1", ag.Secret, nil)
	e.must(403, nil, "GET", "/v1/hosts/h2/desired?after=-1", ag.Secret, nil)
	for _, path := range []string{"/v1/projects", "/v1/regions", "/v1/tokens"} {
		if r := e.do("GET", path, ag.Secret, nil); r.Status != 403 {
			t.Errorf("GET %s with an agent token = %d %s, want 403", path, r.Status, r.Body)
		}
	}
	var list apitype.List[apitype.Token]
	e.must(200, &list, "GET", "/v1/tokens?host=h1", e.operator, nil)
	if len(list.Items) != 1 || list.Items[0].ID != ag.ID || list.Items[0].Secret != "" {
		t.Errorf("agent tokens of h1 = %+v, want only %s without secret", list.Items, ag.ID)
	}
	e.must(200, nil, "DELETE", "/v1/tokens/"+ag.ID, op.Secret, nil)
	e.must(401, nil, "GET", "/v1/hosts/h1/desired?after=-1", ag.Secret, nil)
	e.must(404, nil, "DELETE", "/v1/tokens/"+strings.Repeat("x", 3), e.operator, nil)

	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", "/v1/audit", e.operator, nil)
	found := false
	for _, a := range all.Items {
		if a.Action == "token.delete" && a.Target == ag.ID {
			found = strings.Contains(a.Actor, "(alice)")
		}
	}
	if !found {
		t.Errorf("no token.delete entry naming the actor alice in %+v", all.Items)
	}
}

// TestRefusalsAggregated: unauthenticated refusals and refused reads from
// one source make one entry at once and one aggregate with the count.
func TestRefusalsAggregated(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnvWith(t, func(c *apiserver.Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	p, _ := e.project("acme")
	_, adminB := e.project("beta")
	before := auditCount(e)
	for range 50 {
		e.do("GET", "/v1/projects/"+p, "moat_tok-aaaaaaaaaaaaaaaa_forged", nil)
		e.do("POST", "/v1/projects/"+p+"/vpcs", "", apitype.VPCCreate{Name: strings.Repeat("n", 10_000)})
		e.do("GET", "/v1/projects/"+p+"/services", adminB, nil) // a cross-project probe
	}
	// A forged token and none are both anonymous and unauthenticated.
	if got := auditCount(e) - before; got != 2 {
		t.Errorf("150 refusals wrote %d entries, want 2 (one per source, caller and kind)", got)
	}
	mu.Lock()
	now = now.Add(apiserver.DefaultRefusalInterval)
	mu.Unlock()
	e.srv.FlushRefusals(context.Background())
	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", "/v1/audit?limit=1000", e.operator, nil)
	agg := 0
	for _, a := range all.Items[before:] {
		if a.Action == "request.refused" && (strings.Contains(a.Detail, "unauthenticated: 99 more refused requests") || strings.Contains(a.Detail, "not_found: 49 more refused requests")) {
			agg++
		}
		if len(a.Detail) > 4096 || len(a.Target) > 256 {
			t.Errorf("entry %d is unbounded: %d bytes of detail", a.Seq, len(a.Detail))
		}
	}
	if agg != 2 {
		t.Errorf("aggregate entries = %d, want 2 counting 99 and 49: %+v", agg, all.Items[before:])
	}
}

func auditCount(e *env) int {
	e.t.Helper()
	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", "/v1/audit?limit=1000", e.operator, nil)
	return len(all.Items)
}

// TestBodyMustBeJSON: a body that is not application/json is refused with
// 415; decode errors speak the API's words.
func TestBodyMustBeJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/v1/projects", e.operator, `{"name":"x"}`, "Content-Type", "text/plain")
	if r.Status != 415 || r.Problem.Field != "Content-Type" || !strings.Contains(r.Problem.Detail, "application/json") {
		t.Errorf("text/plain body = %d %+v, want 415 naming Content-Type", r.Status, r.Problem)
	}
	r = e.do("POST", "/v1/projects", e.operator, `[1,2]`)
	if r.Status != 400 || r.Problem.Detail != "the request body must be a JSON object, not array" {
		t.Errorf("array body = %d %q, want 400 %q", r.Status, r.Problem.Detail, "the request body must be a JSON object, not array")
	}
	r = e.do("POST", "/v1/projects", e.operator, `{"name":7}`)
	if r.Status != 400 || r.Problem.Field != "name" || r.Problem.Detail != "name must be a string, not number" {
		t.Errorf("number name = %d %+v, want 400 naming name", r.Status, r.Problem)
	}
	e.must(201, nil, "POST", "/v1/projects", e.operator, `{"name":"x"}`, "Content-Type", "application/json; charset=utf-8")
}

// TestAllowlistAuditSaysWhatChanged: the audit entry of an allowlist
// change lists the ranges added and removed.
func TestAllowlistAuditSaysWhatChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	base := "/v1/projects/" + p
	var svc apitype.Service
	e.must(201, &svc, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	e.must(200, nil, "PUT", base+"/services/"+svc.ID+"/allowlist", admin, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.7"}}})
	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", base+"/audit", admin, nil)
	last := all.Items[len(all.Items)-1]
	want := "revision 2, 1 entries; added 203.0.113.7/32; removed 0.0.0.0/0 ::/0"
	if last.Action != "service.allowlist.set" || last.Detail != want {
		t.Errorf("last entry = %s %q, want service.allowlist.set %q", last.Action, last.Detail, want)
	}
}

// TestServiceAndNodeQuotas: a project's services and nodes are capped by
// the platform's defaults; the 409 names the quota and how to raise it;
// an operator raises it and the audit entry says from what to what.
func TestServiceAndNodeQuotas(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *apiserver.Config) { c.Quotas = domain.Quotas{Services: 2, Nodes: 4} })
	p, admin := e.project("acme")
	base := "/v1/projects/" + p
	var proj apitype.Project
	e.must(200, &proj, "GET", base, admin, nil)
	if proj.ServiceQuota != 2 || proj.NodeQuota != 4 {
		t.Errorf("project quotas = %d services %d nodes, want 2 and 4", proj.ServiceQuota, proj.NodeQuota)
	}
	e.must(201, nil, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "a", Region: "us-east-1", Nodes: 3})
	r := e.do("POST", base+"/services", admin, apitype.ServiceCreate{Name: "b", Region: "us-east-1", Nodes: 2})
	if r.Status != 409 || r.Problem.Code != "quota_exceeded" || !strings.Contains(r.Problem.Detail, "node quota") || !strings.Contains(r.Problem.Hint, base+"/support-requests") {
		t.Errorf("5th node = %d %+v, want 409 quota_exceeded naming the node quota and how to raise it", r.Status, r.Problem)
	}
	e.must(201, nil, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "b", Region: "us-east-1", Nodes: 1})
	r = e.do("POST", base+"/services", admin, apitype.ServiceCreate{Name: "c", Region: "us-east-1", Nodes: 1})
	if r.Status != 409 || !strings.Contains(r.Problem.Detail, "service quota") || !strings.Contains(r.Problem.Hint, "moat support request --services N") {
		t.Errorf("3rd service = %d %+v, want 409 naming the service quota", r.Status, r.Problem)
	}
	three, eight := 3, 8
	e.must(403, nil, "PUT", base+"/quota", admin, apitype.QuotaUpdate{Services: &three})
	e.must(200, &proj, "PUT", base+"/quota", e.operator, apitype.QuotaUpdate{Services: &three, Nodes: &eight})
	if proj.ServiceQuota != 3 || proj.NodeQuota != 8 {
		t.Errorf("raised quotas = %+v", proj)
	}
	e.must(201, nil, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "c", Region: "us-east-1", Nodes: 1})
	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", base+"/audit", admin, nil)
	found := false
	for _, a := range all.Items {
		found = found || (a.Action == "project.quota.set" && a.Outcome == "success" && a.Detail == "services 2 -> 3, nodes 4 -> 8")
	}
	if !found {
		t.Errorf("no project.quota.set entry saying services 2 -> 3, nodes 4 -> 8")
	}
}

// TestAppliedMeansEnforced: a failed node's report never advances the
// allowlist revision; the service turns degraded naming the node; the
// allowlist the CLI polls reports the failure; a running report recovers.
func TestAppliedMeansEnforced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	base := "/v1/projects/" + p
	var svc apitype.Service
	e.must(201, &svc, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1", Nodes: 2})
	ctx := context.Background()
	var nodes []*domain.Node
	if err := e.st.Update(ctx, func(tx store.Tx) (err error) {
		if nodes, err = store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID}); err != nil {
			return err
		}
		for _, n := range nodes {
			n.Host = "h1"
			if err := store.Put(ctx, tx, n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	report := func(allow int64, states ...string) {
		t.Helper()
		var in apitype.HostReport
		for i, n := range nodes {
			in.Nodes = append(in.Nodes, apitype.NodeReport{NodeID: n.ID, Revision: 1, AllowlistRevision: allow, State: states[i], Message: "nft: netlink: Error: Could not process rule"})
		}
		e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, in)
	}
	report(1, "running", "running")
	e.must(200, nil, "PUT", base+"/services/"+svc.ID+"/allowlist", admin, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.7"}}})
	report(2, "running", "failed") // both claim revision 2; node 1 failed

	var al apitype.Allowlist
	e.must(200, &al, "GET", base+"/services/"+svc.ID+"/allowlist", admin, nil)
	if al.Applied || al.AppliedRevision != 1 || len(al.Failed) != 1 || al.Failed[0].NodeID != nodes[1].ID || al.Failed[0].Reason == nil || al.Failed[0].Reason.Message == "" {
		t.Errorf("allowlist after a failed report = %+v, want revision 2 not applied and node %s failed with a reason", al, nodes[1].ID)
	}
	if len(al.Failed) == 1 && al.Failed[0].Reason != nil && strings.Contains(al.Failed[0].Reason.Message+al.Failed[0].Reason.InternalCause, "netlink") {
		t.Errorf("a tenant reads the agent's text: %+v", al.Failed[0].Reason)
	}
	var got apitype.Service
	e.must(200, &got, "GET", base+"/services/"+svc.ID, admin, nil)
	if got.State != domain.StateDegraded || got.StateInfo == nil || !strings.Contains(got.StateInfo.Message, nodes[1].ID) {
		t.Errorf("service = %s %+v, want degraded naming node %s", got.State, got.StateInfo, nodes[1].ID)
	}
	report(2, "running", "running")
	var al2 apitype.Allowlist
	var got2 apitype.Service
	e.must(200, &al2, "GET", base+"/services/"+svc.ID+"/allowlist", admin, nil)
	e.must(200, &got2, "GET", base+"/services/"+svc.ID, admin, nil)
	if !al2.Applied || len(al2.Failed) != 0 || got2.State != domain.StateRunning || got2.StateInfo != nil {
		t.Errorf("after recovery: allowlist %+v, service %s %+v; want applied and running", al2, got2.State, got2.StateInfo)
	}
}

// secretField names a field of t (or of its items) that holds a secret by
// its JSON name, or "".
func secretField(t reflect.Type) string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "secret", "password", "admin_password", "private_key_pem", "key_pem", "certificate":
			return name
		}
		if name == "url" && t == reflect.TypeFor[apitype.ConsoleLink]() { // a one-time sign-in link
			return name
		}
		if inner := secretField(f.Type); inner != "" {
			return f.Name + "." + inner
		}
	}
	return ""
}

// TestUnauthenticatedRateLimit: a source past its limit of
// unauthenticated refusals is answered 429 until the interval ends.
func TestUnauthenticatedRateLimit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnvWith(t, func(c *apiserver.Config) {
		c.RefusalLimit = 10
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	for i := range 10 {
		if r := e.do("GET", "/v1/projects", "moat_tok-aaaaaaaaaaaaaaaa_forged", nil); r.Status != 401 {
			t.Fatalf("refusal %d = %d, want 401", i, r.Status)
		}
	}
	r := e.do("GET", "/v1/projects", e.operator, nil)
	if r.Status != 429 || r.Problem.Code != "rate_limited" || r.Header.Get("Retry-After") == "" {
		t.Errorf("request past the limit = %d %+v, want 429 rate_limited with Retry-After", r.Status, r.Problem)
	}
	e.must(200, nil, "GET", "/v1/health", "", nil) // public routes stay open
	mu.Lock()
	now = now.Add(apiserver.DefaultRefusalInterval)
	mu.Unlock()
	e.must(200, nil, "GET", "/v1/projects", e.operator, nil)
}
