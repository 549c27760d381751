package metrics

import (
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatdb/moat/internal/metrics/pgstat"
)

// DefaultMaxAge is how old a node's snapshot may be before Tenants reports
// the node down (pg_up 0): four missed scrapes at the agent's 15 s.
const DefaultMaxAge = time.Minute

// Tenants keeps the latest PostgreSQL snapshot of every node, by project,
// and renders one project's snapshots with postgres_exporter's names. The
// control plane calls Update for each snapshot an agent sends and
// mounts Handler behind GET /v1/projects/{p}/metrics once the caller is
// authorised for {p}. Safe for concurrent use.
type Tenants struct {
	// MaxAge is how old a snapshot may be before its node counts as down;
	// DefaultMaxAge when 0.
	MaxAge time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu    sync.Mutex
	nodes map[string]tenantNode // by node ID
}

type tenantNode struct {
	project string
	snap    pgstat.Snapshot
}

// NewTenants returns an empty store.
func NewTenants() *Tenants { return &Tenants{nodes: map[string]tenantNode{}} }

// Update stores s as the latest snapshot of node s.Node in project.
func (t *Tenants) Update(project string, s pgstat.Snapshot) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.nodes[s.Node]; ok && old.snap.At.After(s.At) {
		return // a late report
	}
	t.nodes[s.Node] = tenantNode{project: project, snap: s}
}

// Forget drops a node that is gone. A nil *Tenants keeps nothing.
func (t *Tenants) Forget(node string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.nodes, node)
}

// Snapshots returns project's latest snapshots, sorted by service and
// node.
func (t *Tenants) Snapshots(project string) []pgstat.Snapshot {
	t.mu.Lock()
	var out []pgstat.Snapshot
	for _, n := range t.nodes {
		if n.project == project {
			out = append(out, n.snap)
		}
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// Handler serves project's PostgreSQL metrics. The caller has already
// checked that the request may read project.
func (t *Tenants) Handler(project string) http.Handler {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&tenantCollector{t: t, project: project})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func (t *Tenants) fresh(s pgstat.Snapshot) bool {
	maxAge, now := t.MaxAge, time.Now
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if t.Now != nil {
		now = t.Now
	}
	return s.Up && now().Sub(s.At) <= maxAge
}

// tenantCollector renders one project's snapshots.
type tenantCollector struct {
	t       *Tenants
	project string
}

// Every series carries these labels first; descriptors add the exporter's.
var nodeLabels = []string{"service", "node", "role"}

func pgDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string(nil), nodeLabels...), extra...), nil)
}

// Where postgres_exporter's name breaks an exposition rule that promtool
// checks (a counter not ending in _total: pg_stat_database_xact_commit,
// pg_stat_archiver_archived_count; a gauge ending in _count:
// pg_locks_count, pg_stat_activity_count), the series is exposed untyped
// under the exporter's name: renaming would break dashboards, and
// Prometheus queries untyped series like any other (rate() included).
var (
	descUp = pgDesc("pg_up", "Whether the last scrape of the node's PostgreSQL succeeded (1) or not (0), or is older than a minute (0).")

	descDBSize = pgDesc("pg_database_size_bytes", "Disk space used by the database.", "datname")

	dbLabels    = []string{"datid", "datname"}
	descBackend = pgDesc("pg_stat_database_numbackends", "Number of backends currently connected to this database.", dbLabels...)
	dbCounters  = []struct {
		desc *prometheus.Desc
		val  func(pgstat.Database) int64
	}{
		{pgDesc("pg_stat_database_xact_commit", "Number of transactions in this database that have been committed.", dbLabels...), func(d pgstat.Database) int64 { return d.XactCommit }},
		{pgDesc("pg_stat_database_xact_rollback", "Number of transactions in this database that have been rolled back.", dbLabels...), func(d pgstat.Database) int64 { return d.XactRollback }},
		{pgDesc("pg_stat_database_blks_read", "Number of disk blocks read in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.BlksRead }},
		{pgDesc("pg_stat_database_blks_hit", "Number of times disk blocks were found already in the buffer cache.", dbLabels...), func(d pgstat.Database) int64 { return d.BlksHit }},
		{pgDesc("pg_stat_database_tup_returned", "Number of rows returned by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TupReturned }},
		{pgDesc("pg_stat_database_tup_fetched", "Number of rows fetched by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TupFetched }},
		{pgDesc("pg_stat_database_tup_inserted", "Number of rows inserted by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TupInserted }},
		{pgDesc("pg_stat_database_tup_updated", "Number of rows updated by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TupUpdated }},
		{pgDesc("pg_stat_database_tup_deleted", "Number of rows deleted by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TupDeleted }},
		{pgDesc("pg_stat_database_conflicts", "Number of queries canceled due to conflicts with recovery in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.Conflicts }},
		{pgDesc("pg_stat_database_temp_files", "Number of temporary files created by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TempFiles }},
		{pgDesc("pg_stat_database_temp_bytes", "Total amount of data written to temporary files by queries in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.TempBytes }},
		{pgDesc("pg_stat_database_deadlocks", "Number of deadlocks detected in this database.", dbLabels...), func(d pgstat.Database) int64 { return d.Deadlocks }},
	}

	descReplLag        = pgDesc("pg_replication_lag_seconds", "Replication lag behind the primary in seconds.")
	descReplIsReplica  = pgDesc("pg_replication_is_replica", "Indicates if the server is a replica.")
	descReplLastReplay = pgDesc("pg_replication_last_replay_seconds", "Age of last replay in seconds.")

	replicaLabels  = []string{"application_name", "state", "slot_name"}
	descReplLSN    = pgDesc("pg_stat_replication_pg_current_wal_lsn_bytes", "WAL position in bytes.", replicaLabels...)
	descReplLSNDif = pgDesc("pg_stat_replication_pg_wal_lsn_diff", "Lag in bytes between primary and replica.", replicaLabels...)

	descArchived   = pgDesc("pg_stat_archiver_archived_count", "Number of WAL files that have been successfully archived.")
	descArchFailed = pgDesc("pg_stat_archiver_failed_count", "Number of failed attempts for archiving WAL files.")
	descArchAge    = pgDesc("pg_stat_archiver_last_archive_age", "Time in seconds since last WAL segment was successfully archived.")

	bgwCounters = []struct {
		desc *prometheus.Desc
		val  func(pgstat.BGWriter) float64
	}{
		{pgDesc("pg_stat_bgwriter_checkpoints_timed_total", "Number of scheduled checkpoints that have been performed."), func(b pgstat.BGWriter) float64 { return float64(b.CheckpointsTimed) }},
		{pgDesc("pg_stat_bgwriter_checkpoints_req_total", "Number of requested checkpoints that have been performed."), func(b pgstat.BGWriter) float64 { return float64(b.CheckpointsReq) }},
		{pgDesc("pg_stat_bgwriter_checkpoint_write_time_total", "Time spent writing files to disk during checkpoints, in milliseconds."), func(b pgstat.BGWriter) float64 { return b.CheckpointWriteTime }},
		{pgDesc("pg_stat_bgwriter_checkpoint_sync_time_total", "Time spent synchronizing files to disk during checkpoints, in milliseconds."), func(b pgstat.BGWriter) float64 { return b.CheckpointSyncTime }},
		{pgDesc("pg_stat_bgwriter_buffers_checkpoint_total", "Number of buffers written during checkpoints."), func(b pgstat.BGWriter) float64 { return float64(b.BuffersCheckpoint) }},
		{pgDesc("pg_stat_bgwriter_buffers_clean_total", "Number of buffers written by the background writer."), func(b pgstat.BGWriter) float64 { return float64(b.BuffersClean) }},
		{pgDesc("pg_stat_bgwriter_maxwritten_clean_total", "Number of times the background writer stopped a cleaning scan because it had written too many buffers."), func(b pgstat.BGWriter) float64 { return float64(b.MaxwrittenClean) }},
		{pgDesc("pg_stat_bgwriter_buffers_backend_total", "Number of buffers written directly by a backend."), func(b pgstat.BGWriter) float64 { return float64(b.BuffersBackend) }},
		{pgDesc("pg_stat_bgwriter_buffers_backend_fsync_total", "Number of times a backend had to execute its own fsync call."), func(b pgstat.BGWriter) float64 { return float64(b.BuffersBackendFsync) }},
		{pgDesc("pg_stat_bgwriter_buffers_alloc_total", "Number of buffers allocated."), func(b pgstat.BGWriter) float64 { return float64(b.BuffersAlloc) }},
	}

	descLocks         = pgDesc("pg_locks_count", "Number of locks.", "datname", "mode")
	descActivityCount = pgDesc("pg_stat_activity_count", "Number of connections in this state.", "datname", "state")
	descActivityMaxTx = pgDesc("pg_stat_activity_max_tx_duration", "Max duration in seconds any transaction in this state has been running.", "datname", "state")
)

// Describe sends nothing: the collector is unchecked, as which series
// exist depends on the snapshots.
func (c *tenantCollector) Describe(chan<- *prometheus.Desc) {}

func (c *tenantCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.t.Snapshots(c.project) {
		emitSnapshot(ch, s, c.t.fresh(s))
	}
}

func emitSnapshot(ch chan<- prometheus.Metric, s pgstat.Snapshot, up bool) {
	node := []string{s.Service, s.Node, s.Role}
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, append(append([]string(nil), node...), extra...)...)
	}
	if !up {
		emit(descUp, prometheus.GaugeValue, 0)
		return
	}
	emit(descUp, prometheus.GaugeValue, 1)
	for _, d := range s.Databases {
		emit(descDBSize, prometheus.GaugeValue, float64(d.SizeBytes), d.Name)
		emit(descBackend, prometheus.GaugeValue, float64(d.NumBackends), d.ID, d.Name)
		for _, c := range dbCounters {
			emit(c.desc, prometheus.UntypedValue, float64(c.val(d)), d.ID, d.Name)
		}
	}
	emit(descReplLag, prometheus.GaugeValue, s.Replication.LagSeconds)
	emit(descReplIsReplica, prometheus.GaugeValue, boolFloat(s.Replication.IsReplica))
	emit(descReplLastReplay, prometheus.GaugeValue, s.Replication.LastReplaySeconds)
	for _, r := range s.Replicas {
		emit(descReplLSN, prometheus.GaugeValue, r.CurrentWALLSNBytes, r.ApplicationName, r.State, r.SlotName)
		emit(descReplLSNDif, prometheus.GaugeValue, r.WALLSNDiff, r.ApplicationName, r.State, r.SlotName)
	}
	emit(descArchived, prometheus.UntypedValue, float64(s.Archiver.ArchivedCount))
	emit(descArchFailed, prometheus.UntypedValue, float64(s.Archiver.FailedCount))
	if a := s.Archiver.LastArchiveAgeSeconds; a != nil {
		emit(descArchAge, prometheus.GaugeValue, *a)
	}
	for _, c := range bgwCounters {
		emit(c.desc, prometheus.CounterValue, c.val(s.BGWriter))
	}
	for _, l := range s.Locks {
		emit(descLocks, prometheus.UntypedValue, float64(l.Count), l.Datname, l.Mode)
	}
	for _, a := range s.Activity {
		emit(descActivityCount, prometheus.UntypedValue, float64(a.Count), a.Datname, a.State)
		emit(descActivityMaxTx, prometheus.GaugeValue, a.MaxTxDurationSeconds, a.Datname, a.State)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
