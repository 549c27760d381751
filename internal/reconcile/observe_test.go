package reconcile_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/reconcile"
)

// TestMetricsObserveFleet: a pass records each live node's state,
// certificate expiry and WAL archiving, each service's last backup and
// interval, the project CA's expiry; once the node is gone its series
// and its tenant statistics are forgotten, and the service's with it.
func TestMetricsObserveFleet(t *testing.T) {
	reg := prometheus.NewRegistry()
	tenants := metrics.NewTenants()
	f := newFixtureWith(t, func(c *reconcile.Config) {
		c.Metrics, c.Tenants = metrics.NewControlPlane(reg), tenants
		c.BackupInterval, c.Backups = 6*time.Hour, nil
	})
	f.projectCA()
	backup := time.Unix(1_800_000_000, 0).UTC()
	svc := backupService(f, domain.StateRunning)
	f.edit(svc, func() { svc.LastBackupAt = backup })
	n := primary(f, svc.ID, domain.StateRunning)
	notAfter := time.Unix(1_900_000_000, 0).UTC()
	f.edit(n, func() {
		n.CertNotAfterAt = notAfter
		n.Archive = &domain.ArchiveStatus{LastArchivedAt: backup, LastFailedAt: backup.Add(time.Minute), Failing: true}
	})
	tenants.Update("proj-test", pgstat.Snapshot{Service: svc.ID, Node: n.ID, At: time.Now(), Up: true})
	f.mustOnce()
	body := scrape(reg)
	ids := `project="proj-test",service="` + svc.ID + `"`
	for series, want := range map[string]float64{
		`moat_node_state{node="` + n.ID + `",` + ids + `,state="running"}`:                                   1,
		`moat_pki_certificate_expiry_timestamp_seconds{kind="node",node="` + n.ID + `",project="proj-test"}`: 1.9e9,
		`moat_wal_archive_failing{node="` + n.ID + `",` + ids + `}`:                                          1,
		`moat_backup_last_success_timestamp_seconds{` + ids + `}`:                                            1.8e9,
		`moat_backup_failures_total{` + ids + `}`:                                                            0,
	} {
		if got := metricValue(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if metricValue(body, `moat_pki_certificate_expiry_timestamp_seconds{kind="project_ca",node="",project="proj-test"}`) == 0 {
		t.Errorf("no expiry for the project CA:\n%s", body)
	}

	// The pass stored the service's replication and health: edit the
	// stored versions.
	n, svc = get[domain.Node](f, n.ID), get[domain.Service](f, svc.ID)
	f.edit(n, func() { n.State = domain.StateDeleted })
	f.edit(svc, func() { svc.State = domain.StateDeleted })
	f.mustOnce()
	body = scrape(reg)
	for _, name := range []string{"moat_node_state", "moat_wal_archive_failing", "moat_backup_last_success_timestamp_seconds", "moat_backup_failures_total"} {
		if v := metricValue(body, name+`{node="`+n.ID+`",`+ids+`,state="running"}`) + metricValue(body, name+`{node="`+n.ID+`",`+ids+`}`) + metricValue(body, name+`{`+ids+`}`); v != 0 {
			t.Errorf("%s keeps a series of the deleted node or service:\n%s", name, body)
		}
	}
	if got := tenants.Snapshots("proj-test"); len(got) != 0 {
		t.Errorf("tenants keep %d snapshots of the deleted node", len(got))
	}
}
