package metrics_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/metrics/promtest"
	"github.com/moatdb/moat/internal/pgtest"
)

var now = time.Unix(1_800_000_000, 0)

func primary(service, node string) pgstat.Snapshot {
	age := 12.5
	return pgstat.Snapshot{
		Service: service, Node: node, At: now.Add(-10 * time.Second), Up: true, Role: pgstat.RolePrimary,
		Databases: []pgstat.Database{{ID: "5", Name: "postgres", SizeBytes: 7_500_000, NumBackends: 2, XactCommit: 41, Deadlocks: 1}},
		Replicas:  []pgstat.Replica{{ApplicationName: "node-2", State: "streaming", CurrentWALLSNBytes: 1 << 24, WALLSNDiff: 128}},
		Archiver:  pgstat.Archiver{ArchivedCount: 7, FailedCount: 1, LastArchiveAgeSeconds: &age},
		BGWriter:  pgstat.BGWriter{CheckpointsTimed: 3, CheckpointsReq: 1},
		Locks:     []pgstat.Lock{{Datname: "postgres", Mode: "accesssharelock", Count: 4}},
		Activity:  []pgstat.Activity{{Datname: "postgres", State: "idle in transaction", Count: 1, MaxTxDurationSeconds: 61}},
	}
}

func tenants() *metrics.Tenants {
	ts := metrics.NewTenants()
	ts.Now = func() time.Time { return now }
	ts.Update("prj-a", primary("svc-a", "node-1"))
	replica := pgstat.Snapshot{Service: "svc-a", Node: "node-2", At: now, Up: true, Role: pgstat.RoleReplica,
		Replication: pgstat.Replication{LagSeconds: 3, IsReplica: true, LastReplaySeconds: 3}}
	ts.Update("prj-a", replica)
	ts.Update("prj-a", pgstat.Snapshot{Service: "svc-a", Node: "node-3", At: now.Add(-5 * time.Minute), Up: true, Role: pgstat.RoleReplica})
	ts.Update("prj-a", pgstat.Snapshot{Service: "svc-c", Node: "node-4", At: now, Up: false})
	ts.Update("prj-b", primary("svc-b", "node-9"))
	return ts
}

func scrapeTenant(t *testing.T, ts *metrics.Tenants, project string) string {
	t.Helper()
	srv := httptest.NewServer(ts.Handler(project))
	defer srv.Close()
	return string(get(t, srv.Client(), srv.URL, ""))
}

func TestTenantExposition(t *testing.T) {
	t.Parallel()
	out := scrapeTenant(t, tenants(), "prj-a")
	for _, want := range []string{
		`pg_up{node="node-1",role="primary",service="svc-a"} 1`,
		`pg_up{node="node-2",role="replica",service="svc-a"} 1`,
		`pg_up{node="node-3",role="replica",service="svc-a"} 0`, // five minutes old
		`pg_up{node="node-4",role="",service="svc-c"} 0`,        // scrape failed
		`pg_database_size_bytes{datname="postgres",node="node-1",role="primary",service="svc-a"} 7.5e+06`,
		`# TYPE pg_stat_database_xact_commit untyped`,
		`pg_stat_database_xact_commit{datid="5",datname="postgres",node="node-1",role="primary",service="svc-a"} 41`,
		`pg_stat_database_deadlocks{datid="5",datname="postgres",node="node-1",role="primary",service="svc-a"} 1`,
		`pg_replication_lag_seconds{node="node-2",role="replica",service="svc-a"} 3`,
		`pg_replication_is_replica{node="node-2",role="replica",service="svc-a"} 1`,
		`pg_stat_replication_pg_wal_lsn_diff{application_name="node-2",node="node-1",role="primary",service="svc-a",slot_name="",state="streaming"} 128`,
		`pg_stat_archiver_failed_count{node="node-1",role="primary",service="svc-a"} 1`,
		`pg_stat_archiver_last_archive_age{node="node-1",role="primary",service="svc-a"} 12.5`,
		`# TYPE pg_stat_bgwriter_checkpoints_timed_total counter`,
		`pg_stat_bgwriter_checkpoints_req_total{node="node-1",role="primary",service="svc-a"} 1`,
		`pg_locks_count{datname="postgres",mode="accesssharelock",node="node-1",role="primary",service="svc-a"} 4`,
		`pg_stat_activity_max_tx_duration{datname="postgres",node="node-1",role="primary",service="svc-a",state="idle in transaction"} 61`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition lacks %s", want)
		}
	}
	for _, never := range []string{"svc-b", "node-9", `node="node-3",role="replica",service="svc-a"} 3`} {
		if strings.Contains(out, never) {
			t.Errorf("exposition contains %q (another project's, or a stale node's values)", never)
		}
	}
	checkTenantLabels(t, out)
	promtest.CheckMetrics(t, []byte(out))
}

// checkTenantLabels fails t if a series of out is labelled with a user or
// a client address (postgres_exporter's usename, client_addr), or a label
// value is an address or a CIDR.
func checkTenantLabels(t *testing.T, out string) {
	t.Helper()
	n := 0
	for _, m := range regexp.MustCompile(`([a-z_]+)="([^"]*)"`).FindAllStringSubmatch(out, -1) {
		n++
		if m[1] == "usename" || m[1] == "client_addr" || m[1] == "client_hostname" || isAddress(m[2]) {
			t.Errorf("tenant exposition has label %s=%q: never a user or an address", m[1], m[2])
		}
	}
	if n == 0 {
		t.Error("tenant exposition has no labels to check")
	}
}

func TestTenantKeepsNewestAndForgets(t *testing.T) {
	t.Parallel()
	ts := metrics.NewTenants()
	newer, older := primary("s", "n"), primary("s", "n")
	newer.Databases[0].XactCommit, older.At = 50, older.At.Add(-time.Minute)
	ts.Update("p", newer)
	ts.Update("p", older) // a late report
	if got := ts.Snapshots("p"); len(got) != 1 || got[0].Databases[0].XactCommit != 50 {
		t.Errorf("after a late report: %+v, want the newer snapshot", got)
	}
	ts.Forget("n")
	if got := ts.Snapshots("p"); len(got) != 0 {
		t.Errorf("after Forget: %d snapshots, want 0", len(got))
	}
	if out := scrapeTenant(t, ts, "p"); strings.Contains(out, "pg_") {
		t.Errorf("exposition of an empty project:\n%s", out)
	}
}

// TestTenantExpositionFromPostgres renders a real server's snapshot.
func TestTenantExpositionFromPostgres(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	snap, err := pgstat.ScrapeDSN(context.Background(), srv.DSN("postgres"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	snap.Service, snap.Node = "svc-1", "node-1"
	// The snapshot travels in the agent's report as JSON.
	wire, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var got pgstat.Snapshot
	if err := json.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snap, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("snapshot after a JSON round trip (-sent +received):\n%s", diff)
	}
	ts := metrics.NewTenants()
	ts.Update("prj-1", got)
	out := scrapeTenant(t, ts, "prj-1")
	if !strings.Contains(out, `pg_up{node="node-1",role="primary",service="svc-1"} 1`) ||
		!strings.Contains(out, `pg_database_size_bytes{datname="postgres"`) {
		t.Errorf("exposition of a live server lacks pg_up 1 or the database size:\n%s", out)
	}
	checkTenantLabels(t, out)
	promtest.CheckMetrics(t, []byte(out))
}
