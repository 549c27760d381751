package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
	"github.com/moatdb/moat/internal/store"
)

// opsEnv is an API with operator access configured, a project with one
// node placed on host h1, and that host's agent token.
type opsEnv struct {
	*env
	userCA, hostCA *ops.CA
	project, admin string
	node           string
	agent          string
}

func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	userCA, err := ops.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hostCA, err := ops.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *apiserver.Config) {
		c.Ops = &apiserver.OpsConfig{UserCA: userCA, HostCA: hostCA, Sources: []string{"127.0.0.1/32"}}
	})
	o := &opsEnv{env: e, userCA: userCA, hostCA: hostCA}
	o.project, o.admin = e.project("tenant")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+o.project+"/services", o.admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		ns, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil || len(ns) != 1 {
			t.Fatalf("nodes of %s: %d, %v", svc.ID, len(ns), err)
		}
		ns[0].Host = "h1" // what the reconciler's placement does
		o.node = ns[0].ID
		return store.Put(ctx, tx, ns[0])
	}); err != nil {
		t.Fatal(err)
	}
	o.agent = e.addAgentToken("h1")
	return o
}

// register registers the node's endpoint as its agent does.
func (o *opsEnv) register() {
	o.t.Helper()
	hk, err := ops.NewKey()
	if err != nil {
		o.t.Fatal(err)
	}
	var hc apitype.OpsHostCert
	o.must(200, &hc, "POST", "/v1/hosts/h1/ops/host-cert", o.agent, apitype.OpsHostCertRequest{NodeID: o.node, PublicKey: hk.AuthorizedKey(), Endpoint: "127.0.0.1:2222"})
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hc.Certificate))
	if err != nil {
		o.t.Fatal(err)
	}
	c := k.(*ssh.Certificate)
	if c.CertType != ssh.HostCert || c.KeyId != o.node || c.ValidPrincipals[0] != o.node || string(c.SignatureKey.Marshal()) != string(o.hostCA.PublicKey().Marshal()) {
		o.t.Errorf("host certificate = type %d id %q principals %v, want a host certificate of the host CA for %s", c.CertType, c.KeyId, c.ValidPrincipals, o.node)
	}
	if hc.UserCA != o.userCA.AuthorizedKey() {
		o.t.Errorf("user CA = %q, want the operators' CA", hc.UserCA)
	}
}

func (o *opsEnv) grant(psql bool) (apitype.OpsGrantIssued, resp) {
	o.t.Helper()
	k, err := ops.NewKey()
	if err != nil {
		o.t.Fatal(err)
	}
	var out apitype.OpsGrantIssued
	r := o.do("POST", "/v1/ops/grants", o.operator, apitype.OpsGrantCreate{NodeID: o.node, Reason: "INC-42: replica lag", TTL: "10m", PublicKey: k.AuthorizedKey(), Psql: psql})
	if r.Status == 201 {
		if err := json.Unmarshal(r.Body, &out); err != nil {
			o.t.Fatal(err)
		}
	}
	return out, r
}

func (o *opsEnv) audit() []apitype.AuditEntry {
	o.t.Helper()
	var l apitype.List[apitype.AuditEntry]
	o.must(200, &l, "GET", "/v1/projects/"+o.project+"/audit?limit=1000", o.admin, nil)
	return l.Items
}

func hasEntry(es []apitype.AuditEntry, action, outcome, detail string) bool {
	for _, e := range es {
		if e.Action == action && e.Outcome == outcome && strings.Contains(e.Detail, detail) {
			return true
		}
	}
	return false
}

// TestOpsGrant: an operator's grant needs the node's endpoint, yields a
// certificate with exactly the grant's terms, lands in the tenant's audit
// log, and its revocation too.
func TestOpsGrant(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	k, _ := ops.NewKey()
	req := apitype.OpsGrantCreate{NodeID: o.node, Reason: "INC-42: replica lag", PublicKey: k.AuthorizedKey()}
	if r := o.do("POST", "/v1/ops/grants", o.operator, req); r.Status != 409 || r.Problem.Field != "node_id" {
		t.Errorf("grant before the endpoint registered = %d %+v, want 409 on node_id", r.Status, r.Problem)
	}
	o.register()
	for _, tc := range []struct {
		mut   func(*apitype.OpsGrantCreate)
		field string
	}{
		{func(r *apitype.OpsGrantCreate) { r.TTL = "2h" }, "ttl"},
		{func(r *apitype.OpsGrantCreate) { r.TTL = "soon" }, "ttl"},
		{func(r *apitype.OpsGrantCreate) { r.Reason = "" }, "reason"},
		{func(r *apitype.OpsGrantCreate) { r.PublicKey = "ssh-rsa nope" }, "public_key"},
		{func(r *apitype.OpsGrantCreate) { r.NodeID = "node-x" }, "node_id"},
	} {
		bad := req
		tc.mut(&bad)
		if r := o.do("POST", "/v1/ops/grants", o.operator, bad); r.Status != 400 || r.Problem.Field != tc.field {
			t.Errorf("grant %+v = %d %+v, want 400 on %s", bad, r.Status, r.Problem, tc.field)
		}
	}

	before := time.Now()
	g1, _ := o.grant(false)
	g2, _ := o.grant(false)
	if g1.Grant.Serial == g2.Grant.Serial {
		t.Errorf("two grants share serial %d", g1.Grant.Serial)
	}
	if g1.Endpoint != "127.0.0.1:2222" || g1.HostCA != o.hostCA.AuthorizedKey() || g1.Grant.ProjectID != o.project || g1.Grant.State != "active" {
		t.Errorf("grant = %+v, want the endpoint, the host CA, the node's project", g1)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g1.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	c := pk.(*ssh.Certificate)
	if c.CertType != ssh.UserCert || c.KeyId != g1.Grant.ID || c.Serial != g1.Grant.Serial || len(c.ValidPrincipals) != 1 || c.ValidPrincipals[0] != "moat-ops" {
		t.Errorf("certificate: type %d id %q serial %d principals %v", c.CertType, c.KeyId, c.Serial, c.ValidPrincipals)
	}
	if vb := time.Unix(int64(c.ValidBefore), 0); vb.After(before.Add(10*time.Minute+time.Second)) || vb.Before(before.Add(9*time.Minute)) {
		t.Errorf("ValidBefore = %s, want 10 minutes after %s", vb, before)
	}
	if len(c.Extensions) != 1 || c.Extensions["permit-pty"] != "" || len(c.CriticalOptions) != 1 || c.CriticalOptions["source-address"] != "127.0.0.1/32" {
		t.Errorf("certificate options %v extensions %v, want source-address and permit-pty only", c.CriticalOptions, c.Extensions)
	}
	if string(c.SignatureKey.Marshal()) != string(o.userCA.PublicKey().Marshal()) {
		t.Error("certificate not signed by the operators' CA")
	}

	var revoked apitype.OpsGrant
	o.must(200, &revoked, "POST", "/v1/ops/grants/"+g1.Grant.ID+"/revoke", o.operator, nil)
	if revoked.State != "revoked" {
		t.Errorf("revoked grant state = %q", revoked.State)
	}
	if r := o.do("POST", "/v1/ops/grants/"+g1.Grant.ID+"/revoke", o.operator, nil); r.Status != 409 {
		t.Errorf("second revoke = %d, want 409", r.Status)
	}
	var l apitype.List[apitype.OpsGrant]
	o.must(200, &l, "GET", "/v1/ops/grants?node="+o.node, o.operator, nil)
	if len(l.Items) != 2 {
		t.Errorf("grants of the node = %d, want 2", len(l.Items))
	}
	es := o.audit()
	if !hasEntry(es, "ops.grant.create", "success", `reason="INC-42: replica lag"`) || !hasEntry(es, "ops.grant.revoke", "success", "serial=") {
		t.Errorf("tenant's audit log lacks the grant or its revocation: %+v", es)
	}
}

// TestSupportGrantGatesPsql: a psql grant is refused (and the refusal
// audited in the tenant's log) until the project's admin consents; a
// revoked consent refuses again.
func TestSupportGrantGatesPsql(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	o.register()
	if _, r := o.grant(true); r.Status != 403 || r.Problem.Code != "no_support_grant" || !strings.Contains(r.Problem.Hint, "moat support grant") {
		t.Fatalf("psql grant without consent = %d %+v, want 403 no_support_grant", r.Status, r.Problem)
	}
	if !hasEntry(o.audit(), "ops.grant.create", "denied", "no_support_grant") {
		t.Error("the refused psql grant is not in the tenant's audit log")
	}
	viewer := o.addToken(o.project, domain.RoleViewer)
	sgReq := apitype.SupportGrantCreate{Reason: "ticket 77: slow queries", TTL: "2h"}
	if r := o.do("POST", "/v1/projects/"+o.project+"/support-grants", viewer, sgReq); r.Status != 403 {
		t.Errorf("support grant by a viewer = %d, want 403", r.Status)
	}
	if r := o.do("POST", "/v1/projects/"+o.project+"/support-grants", o.admin, apitype.SupportGrantCreate{Reason: "ticket 77: slow queries", TTL: "100h"}); r.Status != 400 || r.Problem.Field != "ttl" {
		t.Errorf("support grant of 100h = %d %+v, want 400 on ttl", r.Status, r.Problem)
	}
	var sg apitype.SupportGrant
	o.must(201, &sg, "POST", "/v1/projects/"+o.project+"/support-grants", o.admin, sgReq)
	if sg.State != "active" || len(sg.Privileges) == 0 {
		t.Errorf("support grant = %+v", sg)
	}
	if _, r := o.grant(true); r.Status != 201 {
		t.Fatalf("psql grant with consent = %d %s", r.Status, r.Body)
	}
	if !hasEntry(o.audit(), "ops.grant.create", "success", "support_grant="+sg.ID) {
		t.Error("the psql grant's use of the support grant is not in the audit log")
	}
	o.must(200, nil, "POST", "/v1/projects/"+o.project+"/support-grants/"+sg.ID+"/revoke", o.admin, nil)
	if _, r := o.grant(true); r.Status != 403 {
		t.Errorf("psql grant after the consent was revoked = %d, want 403", r.Status)
	}
	var l apitype.List[apitype.SupportGrant]
	o.must(200, &l, "GET", "/v1/projects/"+o.project+"/support-grants", viewer, nil)
	if len(l.Items) != 1 || l.Items[0].State != "revoked" {
		t.Errorf("support grants = %+v, want the one, revoked", l.Items)
	}
}

// TestOpsEventsReachTenant: the agent's endpoint events become entries of
// the node's project and sessions; a recording is stored sealed.
func TestOpsEventsReachTenant(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	o.register()
	g, _ := o.grant(false)
	now := time.Now().UTC()
	base := apitype.OpsEvent{NodeID: o.node, Session: "ses-0123456789abcdef", Remote: "127.0.0.1:5555", User: "moat-ops", GrantID: g.Grant.ID, Serial: g.Grant.Serial}
	ev := func(action string, f func(*apitype.OpsEvent)) apitype.OpsEvent {
		e := base
		e.Action, e.Time = action, now
		if f != nil {
			f(&e)
		}
		return e
	}
	events := apitype.OpsEvents{Events: []apitype.OpsEvent{
		ev(ops.ActionSessionOpened, nil),
		ev(ops.ActionExec, func(e *apitype.OpsEvent) { e.Command = "uptime" }),
		ev(ops.ActionShell, nil),
		ev(ops.ActionSessionClosed, func(e *apitype.OpsEvent) { e.Reason, e.DurationMS, e.BytesIn, e.BytesOut = "client", 1500, 10, 20 }),
		{NodeID: o.node, Time: now, Action: ops.ActionRefused, Reason: "password", Remote: "127.0.0.1:6666", User: "root"},
	}}
	other := o.addAgentToken("h2")
	if r := o.do("POST", "/v1/hosts/h2/ops/events", other, events); r.Status != 400 {
		t.Errorf("events of another host's node = %d, want 400", r.Status)
	}
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/events", o.agent, events)
	es := o.audit()
	for _, want := range []struct{ action, outcome, detail string }{
		{ops.ActionSessionOpened, "success", "ses-0123456789abcdef"},
		{ops.ActionExec, "success", `command="uptime"`},
		{ops.ActionSessionClosed, "success", `bytes="in 10 out 20"`},
		{ops.ActionRefused, "denied", `reason="password"`},
	} {
		if !hasEntry(es, want.action, want.outcome, want.detail) {
			t.Errorf("tenant's audit log lacks %s %s %s", want.action, want.outcome, want.detail)
		}
	}
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/recordings", o.agent, apitype.OpsRecordingUpload{NodeID: o.node, SessionID: base.Session, Channel: 1, Cast: "{\"version\":2}\n[0.1,\"o\",\"secret-output\"]\n"})
	var sl apitype.List[apitype.OpsSession]
	o.must(200, &sl, "GET", "/v1/ops/sessions", o.operator, nil)
	if len(sl.Items) != 1 {
		t.Fatalf("sessions = %+v, want 1", sl.Items)
	}
	if s := sl.Items[0]; s.State != "closed" || s.Commands != 1 || s.Recordings != 1 || s.BytesOut != 20 || s.CloseReason != "client" || s.ProjectID != o.project {
		t.Errorf("session = %+v", s)
	}
	var rec apitype.OpsRecording
	o.must(200, &rec, "GET", "/v1/ops/sessions/"+base.Session+"/recordings/1", o.operator, nil)
	if !strings.Contains(rec.Cast, "secret-output") {
		t.Errorf("recording = %q", rec.Cast)
	}
	ctx := context.Background()
	if err := o.st.View(ctx, func(tx store.Tx) error {
		b, err := tx.GetMeta(ctx, "ops_recording_"+base.Session+"_1")
		if err == nil && strings.Contains(string(b), "secret-output") {
			t.Error("the recording is stored in the clear")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSpooledEventsOnce: a spooled batch sent again (its answer was lost)
// is taken once, a batch that overlaps it adds only what is new, and
// another spool of the host (a reinstalled agent) starts afresh.
func TestSpooledEventsOnce(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	o.register()
	now := time.Now().UTC()
	ev := func(seq uint64, cmd string) apitype.OpsEvent {
		return apitype.OpsEvent{NodeID: o.node, Time: now, Action: ops.ActionRefused, Reason: "password", Remote: "127.0.0.1:6666", User: cmd, Seq: seq}
	}
	count := func() map[string]int {
		n := map[string]int{}
		for _, e := range o.audit() {
			if e.Action == ops.ActionRefused {
				for _, u := range []string{"u1", "u2", "u3", "u4"} {
					if strings.Contains(e.Detail, `user="`+u+`"`) {
						n[u]++
					}
				}
			}
		}
		return n
	}
	first := apitype.OpsEvents{Spool: "0123456789abcdef", Events: []apitype.OpsEvent{ev(1, "u1"), ev(2, "u2")}}
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/events", o.agent, first)
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/events", o.agent, first)
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/events", o.agent, apitype.OpsEvents{Spool: first.Spool, Events: []apitype.OpsEvent{ev(2, "u2"), ev(3, "u3")}})
	if got := count(); got["u1"] != 1 || got["u2"] != 1 || got["u3"] != 1 {
		t.Errorf("entries per event after a batch sent twice and an overlapping one = %v, want each once", got)
	}
	// A new spool numbers from 1 again: its events are new.
	o.must(204, nil, "POST", "/v1/hosts/h1/ops/events", o.agent, apitype.OpsEvents{Spool: "fedcba9876543210", Events: []apitype.OpsEvent{ev(1, "u4")}})
	if got := count(); got["u4"] != 1 {
		t.Errorf("entries of a new spool's first event = %d, want 1", got["u4"])
	}
}

// TestNoTenantPathToAShell pins the rule the authorization matrix checks
// route by route: every operator-access route (a grant and its
// certificate, sessions, recordings, the endpoints') is for operators or
// agents only, and no route a project token or any authenticated caller
// reaches takes or returns an operator-access type. The tenant's routes
// about operators are support grants: consent, not access.
func TestNoTenantPathToAShell(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	var opsRoutes, support int
	for _, rt := range o.srv.Routes() {
		name := rt.Method + " " + rt.Pattern
		restricted := rt.Access == apiserver.Operator || rt.Access == apiserver.Agent
		if strings.Contains(rt.Pattern, "/ops/") || strings.HasPrefix(rt.Pattern, "/v1/ops") {
			opsRoutes++
			if !restricted {
				t.Errorf("%s: access %v, want operator or agent only", name, rt.Access)
			}
		}
		if restricted {
			continue
		}
		for _, v := range []any{rt.Request, rt.Response} {
			if v == nil {
				continue
			}
			if ty := fmt.Sprintf("%T", v); strings.Contains(ty, "Ops") {
				t.Errorf("%s (access %v) carries %s", name, rt.Access, ty)
			}
		}
		if strings.Contains(rt.Pattern, "support-grants") {
			support++
		}
	}
	if opsRoutes < 9 || support != 3 {
		t.Errorf("found %d operator-access routes and %d support-grant routes, want at least 9 and 3 (the check no longer sees them)", opsRoutes, support)
	}
}
