package apiserver_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/testenv"
)

// TestMetricsRecorded: with Config.Metrics the API counts its requests by
// route pattern, and an agent's poll and report set the desired and
// applied revisions, the host's heartbeat, and count the backup operation
// the report ended; an allowlist change is pending from its PUT until the
// report says every node enforces it.
func TestMetricsRecorded(t *testing.T) {
	testenv.CheckGoroutines(t)
	reg := metrics.NewRegistry()
	m := metrics.NewControlPlane(reg)
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *apiserver.Config) {
		c.Backups, c.BackupDir = dir, "/backups"
		c.Metrics = m
	})
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	setState[domain.Service](e, svc.ID, domain.StateRunning)
	var op apitype.Operation
	e.must(202, &op, "POST", "/v1/projects/"+p+"/services/"+svc.ID+"/backups", admin, nil)

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
	scrape := func() string {
		rec := httptest.NewRecorder()
		metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return string(body)
	}
	var al apitype.Allowlist
	e.must(200, &al, "PUT", "/v1/projects/"+p+"/services/"+svc.ID+"/allowlist", admin, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "203.0.113.7"}}})
	pending := `moat_allowlist_pending_since_timestamp_seconds{project="` + p + `",service="` + svc.ID + `"} `
	if body := scrape(); !strings.Contains(body, pending) {
		t.Errorf("after the allowlist PUT the scrape lacks %q:\n%s", pending, grepMoat(body))
	}

	var desired apitype.HostDesired
	e.must(200, &desired, "GET", "/v1/hosts/h1/desired", agent, nil)
	report := apitype.HostReport{Nodes: []apitype.NodeReport{{NodeID: node.ID, Revision: desired.Revision, AllowlistRevision: al.Revision, State: apitype.NodeReportFailed,
		Message: "start: disk full", Tasks: []apitype.TaskReport{{ID: op.ID, State: apitype.TaskFailed, Message: "disk full"}}}}}
	e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, report)
	if body := scrape(); !strings.Contains(body, pending) {
		t.Errorf("a failed node does not enforce the allowlist, but it is no longer pending")
	}
	// Only a running node reports what it enforces.
	report = apitype.HostReport{Nodes: []apitype.NodeReport{{NodeID: node.ID, Revision: desired.Revision, AllowlistRevision: al.Revision, State: apitype.NodeReportRunning}}}
	e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, report)
	e.must(404, nil, "GET", "/nowhere", admin, nil)

	body := scrape()
	if strings.Contains(body, pending) {
		t.Errorf("the allowlist is enforced but still pending: %q", pending)
	}
	for _, want := range []string{
		`moat_allowlist_enforce_duration_seconds_count{project="` + p + `",service="` + svc.ID + `"} 1`,
		`moat_api_requests_total{route="POST /v1/projects/{p}/services",status="201"} 1`,
		`moat_api_requests_total{route="POST /v1/hosts/{host}/report",status="204"} 2`,
		`moat_api_requests_total{route="/",status="404"} 1`,
		`moat_host_last_heartbeat_timestamp_seconds{host="h1"} `,
		"moat_host_heartbeat_gap_seconds_count 1",
		`moat_operations_total{kind="service.backup",outcome="failed"} 1`,
		`moat_backup_failures_total{project="` + p + `",service="` + svc.ID + `"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	applied := `moat_host_applied_revision{host="h1"} ` + strconv.FormatInt(desired.Revision, 10) + "\n"
	if !strings.Contains(body, applied) {
		t.Errorf("scrape lacks %q", applied)
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", grepMoat(body))
	}
}

func grepMoat(body string) string {
	var b strings.Builder
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "moat_") && !strings.Contains(l, "_bucket{") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
