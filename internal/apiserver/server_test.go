package apiserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
	"github.com/moatdb/moat/internal/secret"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

// env is an API server on a fresh SQLite store with an operator token.
type env struct {
	t        testing.TB
	srv      *apiserver.Server
	http     *httptest.Server
	st       store.Store
	operator string
	signer   *audit.Signer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with the server's configuration adjusted by
// configure.
func newEnvWith(t testing.TB, configure func(*apiserver.Config)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "moat.db"), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := secret.LoadOrCreateKey(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st}
	if err := st.Update(ctx, func(tx store.Tx) (err error) {
		e.signer, err = audit.LoadOrCreateSigner(ctx, tx, keys)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cfg := apiserver.Config{Store: st, Keys: keys, AuditKey: e.signer.PublicKey()}
	if configure != nil {
		configure(&cfg)
	}
	e.srv, err = apiserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if cfg.Now != nil {
		now = cfg.Now()
	}
	if err := fleettest.Register(ctx, st, cfg.Catalog, 0, now); err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv)
	t.Cleanup(e.http.Close)
	e.operator = e.addToken("", domain.RoleOperator)
	return e
}

// addToken stores a token directly and returns its bearer string.
func (e *env) addToken(project string, role domain.Role) string {
	e.t.Helper()
	secretStr := apiserver.NewSecret()
	tok := &domain.Token{Meta: domain.Meta{ID: domain.NewID(domain.PrefixToken), ProjectID: project, State: domain.StateActive, CreatedAt: time.Now()},
		Role: role, Hash: apiserver.HashSecret(secretStr)}
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error { return store.Put(ctx, tx, tok) }); err != nil {
		e.t.Fatal(err)
	}
	return apiserver.FormatToken(tok.ID, secretStr)
}

type resp struct {
	Status  int
	Header  http.Header
	Body    []byte
	Problem apitype.Problem
}

func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	out := resp{Status: res.StatusCode, Header: res.Header}
	out.Body, _ = io.ReadAll(res.Body)
	if res.StatusCode >= 400 {
		if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
			e.t.Errorf("%s %s: error with Content-Type %q", method, path, ct)
		}
		if err := json.Unmarshal(out.Body, &out.Problem); err != nil {
			e.t.Errorf("%s %s: problem body %q: %v", method, path, out.Body, err)
		}
	}
	return out
}

// must performs a request that must answer want and decodes into v.
func (e *env) must(want int, v any, method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	r := e.do(method, path, token, body, hdr...)
	if r.Status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, r.Status, r.Body, want)
	}
	if v != nil {
		if err := json.Unmarshal(r.Body, v); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, r.Body, err)
		}
	}
	return r
}

// project creates a project and its admin token.
func (e *env) project(name string) (id, admin string) {
	e.t.Helper()
	var p apitype.Project
	e.must(201, &p, "POST", "/v1/projects", e.operator, apitype.ProjectCreate{Name: name})
	var tok apitype.Token
	e.must(201, &tok, "POST", "/v1/projects/"+p.ID+"/tokens", e.operator, apitype.TokenCreate{Role: "admin"})
	return p.ID, tok.Secret
}

// setState forces an object's state in the store (what a reconciler does).
func setState[T any, P store.Ptr[T]](e *env, id, state string) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		o, err := store.Get[T, P](ctx, tx, id)
		if err != nil {
			return err
		}
		o.Base().State = state
		return store.Put(ctx, tx, o)
	}); err != nil {
		e.t.Fatal(err)
	}
}

func TestValidationErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	base := "/v1/projects/" + p
	var v1 apitype.VPC
	e.must(201, &v1, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "main", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	setState[domain.VPC](e, v1.ID, domain.StateActive)
	var pcx apitype.Peering
	e.must(201, &pcx, "POST", base+"/peerings", admin, apitype.PeeringCreate{VPCID: v1.ID, PeerAccountID: "123456789012", PeerVPCID: "vpc-0a1b2c3d", PeerRegion: "us-east-1", PeerCIDRs: []string{"172.31.0.0/16"}})
	var svc apitype.Service
	e.must(201, &svc, "POST", base+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})

	many := make([]apitype.AllowEntry, 8001)
	for i := range many {
		many[i].CIDR = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	peering := func(f func(*apitype.PeeringCreate)) apitype.PeeringCreate {
		in := apitype.PeeringCreate{VPCID: v1.ID, PeerAccountID: "210987654321", PeerVPCID: "vpc-0123456789abcdef0", PeerRegion: "eu-west-1", PeerCIDRs: []string{"192.168.0.0/16"}}
		f(&in)
		return in
	}
	for _, tc := range []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		code, field, hint  string
	}{
		{"vpc /15", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "10.8.0.0/15"}, nil, 400, "cidr_prefix_length", "cidr", "use a prefix length from /16 to /24"},
		{"vpc /25", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "10.8.0.0/25"}, nil, 400, "cidr_prefix_length", "cidr", "use a prefix length from /16 to /24"},
		{"vpc public range", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "8.8.8.0/24"}, nil, 400, "cidr_not_private", "cidr", "use RFC 1918 space: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"},
		{"vpc non-canonical", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "10.0.0.7/17"}, nil, 400, "non_canonical_cidr", "cidr", "use 10.0.0.0/17"},
		{"vpc overlap", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "10.0.0.0/16"}, nil, 409, "cidr_overlap", "cidr", "choose a range that overlaps none of the project's VPCs"},
		{"vpc unknown region", "POST", "/vpcs", apitype.VPCCreate{Name: "a", Region: "xx-nowhere-1", CIDR: "10.9.0.0/16"}, nil, 400, "invalid_region", "region", "supported regions: us-east-1, eu-west-1"},
		{"vpc unknown field", "POST", "/vpcs", `{"name":"a","region":"us-east-1","cidr":"10.9.0.0/16","colour":"red"}`, nil, 400, "unknown_field", "colour", "remove it; see /v1/openapi.json for the fields"},
		{"vpc wrong type", "POST", "/vpcs", `{"name":7}`, nil, 400, "invalid_json", "name", "see /v1/openapi.json"},
		{"peering 13-digit account", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.PeerAccountID = "1234567890123" }), nil, 400, "invalid_account_id", "peer_account_id", "an AWS account ID is exactly 12 digits, e.g. 123456789012"},
		{"peering malformed vpc id", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.PeerVPCID = "vpc-xyz" }), nil, 400, "invalid_peer_vpc_id", "peer_vpc_id", "an AWS VPC ID is vpc- followed by 8 or 17 lower-case hex digits, e.g. vpc-0a1b2c3d4e5f67890"},
		{"peering duplicate", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.PeerAccountID, in.PeerVPCID = "123456789012", "vpc-0a1b2c3d" }), nil, 409, "duplicate_peering", "peer_vpc_id", "use the existing peering, or delete it first"},
		{"peering overlaps vpc", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.PeerCIDRs = []string{"10.0.64.0/18"} }), nil, 409, "cidr_overlap", "peer_cidrs[0]", "peer ranges must not overlap the VPC's 10.0.0.0/17; renumber one side"},
		{"peering overlaps other peering", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.PeerCIDRs = []string{"172.31.5.0/24"} }), nil, 409, "cidr_overlap", "peer_cidrs[0]", "each peering of a VPC needs its own ranges; delete the other peering or use another range"},
		{"peering unknown vpc", "POST", "/peerings", peering(func(in *apitype.PeeringCreate) { in.VPCID = "vpc-aaaaaaaaaaaaaaaa" }), nil, 404, "not_found", "", "check the ID and the project (MOAT_PROJECT)"},
		{"service unknown region", "POST", "/services", apitype.ServiceCreate{Name: "x", Region: "ap-south-1"}, nil, 400, "unsupported_region", "region", "supported regions: us-east-1, eu-west-1"},
		{"service 4 nodes", "POST", "/services", apitype.ServiceCreate{Name: "x", Region: "us-east-1", Nodes: 4}, nil, 400, "invalid_nodes", "nodes", "a service has 1, 2 or 3 nodes"},
		{"allowlist 8001", "PUT", "/services/" + svc.ID + "/allowlist", apitype.AllowlistUpdate{AllowedIPs: many}, nil, 400, "too_many_entries", "allowed_ips", "merge neighbouring ranges into wider CIDRs; at most 8000 entries are allowed"},
		{"allowlist empty", "PUT", "/services/" + svc.ID + "/allowlist", apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{}}, nil, 400, "empty_allowlist_unconfirmed", "allowed_ips", "an empty allowlist refuses every connection; confirm it explicitly (confirm_empty=true, or --confirm-empty)"},
		{"allowlist non-canonical", "PUT", "/services/" + svc.ID + "/allowlist", apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.9/24"}}}, nil, 400, "non_canonical_cidr", "allowed_ips[0].cidr", "use 203.0.113.0/24"},
		{"allowlist stale If-Match", "PUT", "/services/" + svc.ID + "/allowlist", apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.0/24"}}}, []string{"If-Match", `"99"`}, 412, "stale_revision", "If-Match", "GET it again, reapply your change, and retry with the new ETag"},
		{"attach unknown vpc", "POST", "/services/" + svc.ID + "/attach", apitype.AttachRequest{VPCID: "vpc-aaaaaaaaaaaaaaaa"}, nil, 404, "not_found", "", "check the ID and the project (MOAT_PROJECT)"},
		{"detach public", "POST", "/services/" + svc.ID + "/detach", nil, nil, 409, "not_attached", "", "the service is already public"},
		{"delete vpc in use", "DELETE", "/vpcs/" + v1.ID, nil, nil, 409, "in_use", "", "detach the services and delete the peerings first"},
		{"bad page token", "GET", "/vpcs?page_token=!!", nil, nil, 400, "invalid_page_token", "page_token", "pass next_page_token from the previous page unchanged"},
		{"bad limit", "GET", "/vpcs?limit=0", nil, nil, 400, "invalid_limit", "limit", "use 1 to 1000"},
	} {
		r := e.do(tc.method, base+tc.path, admin, tc.body, tc.hdr...)
		got := fmt.Sprintf("%d %s field=%q hint=%q", r.Status, r.Problem.Code, r.Problem.Field, r.Problem.Hint)
		want := fmt.Sprintf("%d %s field=%q hint=%q", tc.status, tc.code, tc.field, tc.hint)
		if got != want {
			t.Errorf("%s: %s %s = %s (%s), want %s", tc.name, tc.method, tc.path, got, r.Problem.Detail, want)
		}
	}

	// The VPC quota: three VPCs, a fourth is refused naming the operator,
	// an operator raises it, and the fourth succeeds.
	e.must(201, nil, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "two", Region: "us-east-1", CIDR: "10.1.0.0/16"})
	e.must(201, nil, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "three", Region: "eu-west-1", CIDR: "10.2.0.0/16"})
	r := e.do("POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "four", Region: "us-east-1", CIDR: "10.3.0.0/16"})
	if r.Status != 409 || r.Problem.Code != "quota_exceeded" || !strings.Contains(r.Problem.Hint, "operator") {
		t.Errorf("4th VPC = %d %+v, want 409 quota_exceeded with a hint naming the operator", r.Status, r.Problem)
	}
	four := 4
	e.must(403, nil, "PUT", base+"/quota", admin, apitype.QuotaUpdate{VPCs: &four})
	e.must(200, nil, "PUT", base+"/quota", e.operator, apitype.QuotaUpdate{VPCs: &four})
	e.must(201, nil, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "four", Region: "us-east-1", CIDR: "10.3.0.0/16"})
}

func TestAllowlistETagAndIdempotency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	base := "/v1/projects/" + p

	// Idempotent create: the same key and body replay; another body is refused.
	in := apitype.ServiceCreate{Name: "db", Region: "eu-west-1", Nodes: 3}
	var a, b apitype.Service
	e.must(201, &a, "POST", base+"/services", admin, in, "Idempotency-Key", "k1")
	r := e.must(201, &b, "POST", base+"/services", admin, in, "Idempotency-Key", "k1")
	if a.ID != b.ID || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed create = %s (replayed %q), want %s", b.ID, r.Header.Get("Idempotent-Replayed"), a.ID)
	}
	in.Name = "other"
	if r := e.do("POST", base+"/services", admin, in, "Idempotency-Key", "k1"); r.Status != 422 || r.Problem.Code != "idempotency_key_reused" {
		t.Errorf("reused key = %d %s, want 422 idempotency_key_reused", r.Status, r.Problem.Code)
	}
	var list apitype.List[apitype.Service]
	e.must(200, &list, "GET", base+"/services", admin, nil)
	if len(list.Items) != 1 {
		t.Errorf("services after idempotent replay = %d, want 1", len(list.Items))
	}
	// Nodes are spread over three AZs.
	var got apitype.Service
	e.must(200, &got, "GET", base+"/services/"+a.ID, admin, nil)
	azs := map[string]bool{}
	for _, n := range got.NodeList {
		azs[n.AZ] = true
	}
	if len(got.NodeList) != 3 || len(azs) != 3 {
		t.Errorf("3-node service nodes = %+v, want 3 nodes in 3 AZs", got.NodeList)
	}
	if !got.WideOpen || len(got.AllowedIPs) != 2 {
		t.Errorf("new service allowlist = %+v (wide_open %v), want the open default", got.AllowedIPs, got.WideOpen)
	}

	// Two editors: both read ETag 1; the first write wins, the second gets 412.
	var al apitype.Allowlist
	r = e.must(200, &al, "GET", base+"/services/"+a.ID+"/allowlist", admin, nil)
	tag := r.Header.Get("ETag")
	if tag != `"1"` {
		t.Fatalf("allowlist ETag = %q, want \"1\"", tag)
	}
	one := apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.7", Description: "office"}}}
	var after apitype.Allowlist
	r = e.must(200, &after, "PUT", base+"/services/"+a.ID+"/allowlist", admin, one, "If-Match", tag)
	if after.Revision != 2 || after.AllowedIPs[0].CIDR != "203.0.113.7/32" || r.Header.Get("ETag") != `"2"` || after.Applied {
		t.Errorf("after PUT: %+v ETag %s, want revision 2, 203.0.113.7/32, not yet applied", after, r.Header.Get("ETag"))
	}
	two := apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "198.51.100.0/24"}}}
	if r := e.do("PUT", base+"/services/"+a.ID+"/allowlist", admin, two, "If-Match", tag); r.Status != 412 {
		t.Errorf("stale PUT = %d, want 412", r.Status)
	}
	e.must(200, &al, "GET", base+"/services/"+a.ID+"/allowlist", admin, nil)
	if al.AllowedIPs[0].CIDR != "203.0.113.7/32" {
		t.Errorf("stale write changed the allowlist: %+v", al.AllowedIPs)
	}
	// An empty list with confirmation is accepted.
	e.must(200, &al, "PUT", base+"/services/"+a.ID+"/allowlist", admin, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{}, ConfirmEmpty: true})
	if len(al.AllowedIPs) != 0 {
		t.Errorf("confirmed empty list = %+v", al.AllowedIPs)
	}
}

func TestPaginationAndOperations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	base := "/v1/projects/" + p
	for i := range 5 {
		e.must(201, nil, "POST", base+"/services", admin, apitype.ServiceCreate{Name: fmt.Sprintf("db%d", i), Region: "us-east-1"})
	}
	var names []string
	token := ""
	for pages := 0; ; pages++ {
		var page apitype.List[apitype.Service]
		e.must(200, &page, "GET", base+"/services?limit=2&page_token="+token, admin, nil)
		for _, s := range page.Items {
			names = append(names, s.Name)
		}
		if page.NextPageToken == "" || pages > 5 {
			break
		}
		token = page.NextPageToken
	}
	if strings.Join(names, ",") != "db0,db1,db2,db3,db4" {
		t.Errorf("paged services = %v, want db0..db4 in creation order", names)
	}

	// Attach creates an operation and marks the service migrating.
	var vpc apitype.VPC
	e.must(201, &vpc, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "net", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	var svcs apitype.List[apitype.Service]
	e.must(200, &svcs, "GET", base+"/services", admin, nil)
	svc := svcs.Items[0]
	if r := e.do("POST", base+"/services/"+svc.ID+"/attach", admin, apitype.AttachRequest{VPCID: vpc.ID}); r.Status != 409 || r.Problem.Code != "invalid_state" {
		t.Errorf("attach to a creating VPC = %d %s, want 409 invalid_state", r.Status, r.Problem.Code)
	}
	setState[domain.VPC](e, vpc.ID, domain.StateActive)
	setState[domain.Service](e, svc.ID, domain.StateRunning)
	var op apitype.Operation
	r := e.must(202, &op, "POST", base+"/services/"+svc.ID+"/attach", admin, apitype.AttachRequest{VPCID: vpc.ID})
	if op.State != "pending" || op.Type != domain.OpServiceAttach || !strings.HasPrefix(op.ID, "op-") || r.Header.Get("Location") == "" {
		t.Errorf("attach = %+v, want a pending service.attach operation with a Location", op)
	}
	var got apitype.Service
	e.must(200, &got, "GET", base+"/services/"+svc.ID, admin, nil)
	if got.State != "migrating" || got.OperationID != op.ID {
		t.Errorf("service during attach = %s op %s, want migrating %s", got.State, got.OperationID, op.ID)
	}
	if r := e.do("POST", base+"/services/"+svc.ID+"/attach", admin, apitype.AttachRequest{VPCID: vpc.ID}); r.Status != 409 {
		t.Errorf("second attach = %d, want 409", r.Status)
	}
	if r := e.do("DELETE", base+"/vpcs/"+vpc.ID, admin, nil); r.Status != 409 || r.Problem.Code != "in_use" {
		t.Errorf("delete VPC during attach = %d %s, want 409 in_use", r.Status, r.Problem.Code)
	}
	var ops apitype.List[apitype.Operation]
	e.must(200, &ops, "GET", base+"/operations?target_id="+svc.ID, admin, nil)
	if len(ops.Items) != 1 || ops.Items[0].ID != op.ID {
		t.Errorf("operations for %s = %+v", svc.ID, ops.Items)
	}
}

func TestAuditRecordsMutationsAndRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	base := "/v1/projects/" + p
	viewer := e.addToken(p, domain.RoleViewer)
	e.must(201, nil, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "net", Region: "us-east-1", CIDR: "10.0.0.0/17"}, "X-Request-Id", "req-test-1")
	e.must(400, nil, "POST", base+"/vpcs", admin, apitype.VPCCreate{Name: "net2", Region: "us-east-1", CIDR: "10.0.0.7/17"})
	e.must(403, nil, "POST", base+"/vpcs", viewer, apitype.VPCCreate{Name: "net3", Region: "us-east-1", CIDR: "10.1.0.0/16"})
	e.must(401, nil, "POST", base+"/vpcs", "", apitype.VPCCreate{Name: "net3", Region: "us-east-1", CIDR: "10.1.0.0/16"})

	var all apitype.List[apitype.AuditEntry]
	e.must(200, &all, "GET", "/v1/audit", e.operator, nil)
	var got []string
	for _, a := range all.Items {
		got = append(got, a.Action+"/"+a.Outcome)
	}
	want := "project.create/success token.create/success vpc.create/success vpc.create/invalid vpc.create/denied vpc.create/denied"
	if strings.Join(got, " ") != want {
		t.Errorf("audit = %v, want %s", got, want)
	}
	vc := all.Items[2]
	if vc.RequestID != "req-test-1" || vc.Source != "127.0.0.1" || vc.ProjectID != p || !strings.HasPrefix(vc.Target, "vpc-") || !strings.HasPrefix(vc.Actor, "admin:tok-") {
		t.Errorf("vpc.create entry = %+v", vc)
	}
	// A tenant sees only its project's entries.
	var mine apitype.List[apitype.AuditEntry]
	e.must(200, &mine, "GET", base+"/audit", admin, nil)
	for _, a := range mine.Items {
		if a.ProjectID != p {
			t.Errorf("project audit shows entry of project %q", a.ProjectID)
		}
	}
	var v apitype.AuditVerify
	e.must(200, &v, "GET", "/v1/audit/verify", e.operator, nil)
	if !v.OK || v.Entries != int64(len(all.Items)) {
		t.Errorf("verify = %+v, want ok over %d entries", v, len(all.Items))
	}
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	e.must(200, &doc, "GET", "/v1/openapi.json", "", nil)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version = %q", doc.OpenAPI)
	}
	inDoc := 0
	for _, m := range doc.Paths {
		inDoc += len(m)
	}
	for _, rt := range e.srv.Routes() {
		op, ok := doc.Paths[rt.Pattern][strings.ToLower(rt.Method)]
		if !ok {
			t.Errorf("route %s %s is missing from the OpenAPI document", rt.Method, rt.Pattern)
			continue
		}
		if _, ok := op.(map[string]any)["responses"]; !ok {
			t.Errorf("route %s %s has no responses in the OpenAPI document", rt.Method, rt.Pattern)
		}
	}
	if inDoc != len(e.srv.Routes()) {
		t.Errorf("OpenAPI has %d operations, the route table %d", inDoc, len(e.srv.Routes()))
	}
	// PATCH a service answers the service (settings) or the resize's
	// operation (nodes): both documented.
	patch, _ := doc.Paths["/v1/projects/{p}/services/{id}"]["patch"].(map[string]any)
	if rs, _ := patch["responses"].(map[string]any); rs["200"] == nil || rs["202"] == nil {
		t.Errorf("PATCH service responses = %v, want 200 and 202", rs)
	}
	// Every route answers at its path: nothing in the table is unreachable.
	// (A service makes the desired-state revision positive, so the agents'
	// long poll with after=0 answers at once.)
	p, admin := e.project("acme")
	e.must(201, nil, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	for _, rt := range e.srv.Routes() {
		path := strings.NewReplacer("{p}", "proj-aaaaaaaaaaaaaaaa", "{id}", "x", "{host}", "h").Replace(rt.Pattern)
		if strings.HasSuffix(path, "/desired") {
			path += "?after=0"
		}
		if r := e.do(rt.Method, path, e.operator, nil); r.Problem.Code == "route_not_found" {
			t.Errorf("%s %s is in the table but not served", rt.Method, rt.Pattern)
		}
	}
}

// addAgentToken stores an agent token bound to host.
func (e *env) addAgentToken(host string) string {
	e.t.Helper()
	secretStr := apiserver.NewSecret()
	tok := &domain.Token{Meta: domain.Meta{ID: domain.NewID(domain.PrefixToken), State: domain.StateActive, CreatedAt: time.Now()},
		Role: domain.RoleAgent, Hash: apiserver.HashSecret(secretStr), Host: host}
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		// The host is registered (in us-east-1a; healthy once its agent
		// reports), as an operator does before its agent runs.
		h, err := domain.NewHost(domain.DefaultCatalog(), host, "us-east-1", "us-east-1a", 0, nil, time.Now())
		if err != nil {
			return err
		}
		if err := store.Put(ctx, tx, h); err != nil {
			return err
		}
		return store.Put(ctx, tx, tok)
	}); err != nil {
		e.t.Fatal(err)
	}
	return apiserver.FormatToken(tok.ID, secretStr)
}

// TestConsoleLinkWithoutConsole: an API served without a console (no
// Config.SignInLink) answers the operator's link request 501 with a hint.
func TestConsoleLinkWithoutConsole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/v1/console/links", e.operator, nil)
	if r.Status != 501 || r.Problem.Code != "console_unavailable" || r.Problem.Hint == "" {
		t.Errorf("POST /v1/console/links without a console = %d %+v, want 501 console_unavailable with a hint", r.Status, r.Problem)
	}
}
