package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/store"
)

// TestTenantMetrics: the statistics an agent posts for its nodes are
// served at GET /v1/projects/{p}/metrics in the Prometheus text format,
// under the node's own service and ID (not the snapshot's say), to a
// viewer of the project; another project sees none of them; a node not on
// the posting agent's host is ignored; posting writes no audit entry.
func TestTenantMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, adminA := e.project("alpha")
	b, adminB := e.project("beta")
	viewerA := e.addToken(a, domain.RoleViewer)
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+a+"/services", adminA, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	ctx := context.Background()
	var node *domain.Node
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		ns, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil {
			return err
		}
		node = ns[0]
		node.Host = "h1"
		return store.Put(ctx, tx, node)
	}); err != nil {
		t.Fatal(err)
	}
	auditBefore := auditCount(e)
	snap := pgstat.Snapshot{Service: "svc-other", Node: node.ID, At: time.Now(), Up: true, Role: pgstat.RolePrimary,
		Databases: []pgstat.Database{{ID: "5", Name: "defaultdb", SizeBytes: 7_000_000, XactCommit: 42}}}
	elsewhere := pgstat.Snapshot{Node: "nod-unknown", At: time.Now(), Up: true}
	e.must(204, nil, "POST", "/v1/hosts/h1/stats", agent, apitype.HostStats{Nodes: []pgstat.Snapshot{snap, elsewhere}})
	if n := auditCount(e); n != auditBefore {
		t.Errorf("statistics added %d audit entries, want none (they change nothing stored)", n-auditBefore)
	}
	// Another host's agent cannot post for this node.
	other := e.addAgentToken("h2")
	e.must(204, nil, "POST", "/v1/hosts/h2/stats", other, apitype.HostStats{Nodes: []pgstat.Snapshot{{Node: node.ID, At: time.Now(), Up: false}}})

	r := e.must(200, nil, "GET", "/v1/projects/"+a+"/metrics", viewerA, nil)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want the Prometheus text format", ct)
	}
	body := string(r.Body)
	for _, want := range []string{
		`pg_up{node="` + node.ID + `",role="primary",service="` + svc.ID + `"} 1`,
		`pg_database_size_bytes{datname="defaultdb",node="` + node.ID + `",role="primary",service="` + svc.ID + `"} 7e+06`,
		`pg_stat_database_xact_commit{datid="5",datname="defaultdb",node="` + node.ID + `",role="primary",service="` + svc.ID + `"} 42`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "svc-other") || strings.Contains(body, "nod-unknown") {
		t.Errorf("the snapshot's own service, or a node not on the host, reached the exposition:\n%s", body)
	}
	if r := e.do("GET", "/v1/projects/"+a+"/metrics", adminB, nil); r.Status != 404 || r.Problem.Code != "not_found" {
		t.Errorf("another project's token = %d %s, want 404 not_found", r.Status, r.Problem.Code)
	}
	r = e.must(200, nil, "GET", "/v1/projects/"+b+"/metrics", adminB, nil)
	if strings.Contains(string(r.Body), "pg_up") {
		t.Errorf("project beta sees alpha's nodes:\n%s", r.Body)
	}
}
