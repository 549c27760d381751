// Package pgstat reads one PostgreSQL node's statistics for its tenant: a
// Snapshot holds what postgres_exporter would show (connections,
// transactions, database sizes, replication lag, WAL archiving,
// checkpoints, locks, the longest transaction), read in one round trip by
// a role that is a member of pg_monitor and nothing more.
//
// The agent scrapes each node (ScrapeDSN) every few seconds and sends the
// latest Snapshots to the control plane (apitype.HostStats); it renders the snapshots of
// a project for that project's tenants (internal/metrics.Tenants). This
// package only reads; it imports no Prometheus code, so the wire types may
// carry a Snapshot.
package pgstat

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MonitorRole is the role the agent scrapes as: LOGIN, a member of
// pg_monitor, nothing else.
const MonitorRole = "moat_monitor"

// MonitorRoleSQL returns the statements, run as a superuser on a primary,
// that create or update the monitoring role: idempotent, so the agent may
// run them on every start. The role has no password; the agent connects
// over the node's Unix socket (pg_hba: `local all moat_monitor peer` with a
// map from the agent's OS user, or trust on a socket only it can reach).
// Replicas get the role through replication.
func MonitorRoleSQL() []string {
	return []string{
		`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '` + MonitorRole + `') THEN
    CREATE ROLE ` + MonitorRole + `;
  END IF;
END $$`,
		`ALTER ROLE ` + MonitorRole + ` WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3`,
		`GRANT pg_monitor TO ` + MonitorRole,
		`ALTER ROLE ` + MonitorRole + ` SET default_transaction_read_only = on`,
		`ALTER ROLE ` + MonitorRole + ` SET statement_timeout = '5s'`,
		`ALTER ROLE ` + MonitorRole + ` SET lock_timeout = '1s'`,
	}
}

// Node roles, from pg_is_in_recovery().
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Snapshot is one scrape of one node. Counters are PostgreSQL's cumulative
// values; the reader computes rates.
type Snapshot struct {
	// Service and Node identify the node; the caller sets them.
	Service string `json:"service"`
	Node    string `json:"node"`
	// At is when the scrape ran.
	At time.Time `json:"at"`
	// Up is false when the node could not be reached or a query failed;
	// then only At, Service and Node are meaningful.
	Up bool `json:"up"`
	// Role is RolePrimary or RoleReplica.
	Role string `json:"role,omitempty"`

	Databases   []Database  `json:"databases,omitempty"`
	Replication Replication `json:"replication"`
	// Replicas are the standbys streaming from this node (pg_stat_replication).
	Replicas []Replica  `json:"replicas,omitempty"`
	Archiver Archiver   `json:"archiver"`
	BGWriter BGWriter   `json:"bgwriter"`
	Locks    []Lock     `json:"locks,omitempty"`
	Activity []Activity `json:"activity,omitempty"`
}

// Database is one database's size and pg_stat_database row.
type Database struct {
	ID           string `json:"datid"`
	Name         string `json:"datname"`
	SizeBytes    int64  `json:"size_bytes"`
	NumBackends  int64  `json:"numbackends"`
	XactCommit   int64  `json:"xact_commit"`
	XactRollback int64  `json:"xact_rollback"`
	BlksRead     int64  `json:"blks_read"`
	BlksHit      int64  `json:"blks_hit"`
	TupReturned  int64  `json:"tup_returned"`
	TupFetched   int64  `json:"tup_fetched"`
	TupInserted  int64  `json:"tup_inserted"`
	TupUpdated   int64  `json:"tup_updated"`
	TupDeleted   int64  `json:"tup_deleted"`
	Conflicts    int64  `json:"conflicts"`
	TempFiles    int64  `json:"temp_files"`
	TempBytes    int64  `json:"temp_bytes"`
	Deadlocks    int64  `json:"deadlocks"`
}

// Replication is this node's own replication state (postgres_exporter's
// pg_replication collector).
type Replication struct {
	// LagSeconds is 0 on a primary and on a replica that has replayed all
	// it received; else the age of the last replayed transaction.
	LagSeconds        float64 `json:"lag_seconds"`
	IsReplica         bool    `json:"is_replica"`
	LastReplaySeconds float64 `json:"last_replay_seconds"`
}

// Replica is one pg_stat_replication row: a standby streaming from this
// node. The client address is left out on purpose.
type Replica struct {
	ApplicationName    string  `json:"application_name"`
	State              string  `json:"state"`
	SlotName           string  `json:"slot_name"`
	CurrentWALLSNBytes float64 `json:"current_wal_lsn_bytes"`
	WALLSNDiff         float64 `json:"wal_lsn_diff"`
}

// Archiver is pg_stat_archiver.
type Archiver struct {
	ArchivedCount int64 `json:"archived_count"`
	FailedCount   int64 `json:"failed_count"`
	// LastArchiveAgeSeconds is nil when nothing was ever archived.
	LastArchiveAgeSeconds *float64 `json:"last_archive_age_seconds,omitempty"`
}

// BGWriter is pg_stat_bgwriter as of PostgreSQL 15 and 16 (times in
// milliseconds, as PostgreSQL counts them).
type BGWriter struct {
	CheckpointsTimed    int64   `json:"checkpoints_timed"`
	CheckpointsReq      int64   `json:"checkpoints_req"`
	CheckpointWriteTime float64 `json:"checkpoint_write_time"`
	CheckpointSyncTime  float64 `json:"checkpoint_sync_time"`
	BuffersCheckpoint   int64   `json:"buffers_checkpoint"`
	BuffersClean        int64   `json:"buffers_clean"`
	MaxwrittenClean     int64   `json:"maxwritten_clean"`
	BuffersBackend      int64   `json:"buffers_backend"`
	BuffersBackendFsync int64   `json:"buffers_backend_fsync"`
	BuffersAlloc        int64   `json:"buffers_alloc"`
}

// Lock is the number of locks held or awaited in one database in one mode
// (lower case, as postgres_exporter labels it).
type Lock struct {
	Datname string `json:"datname"`
	Mode    string `json:"mode"`
	Count   int64  `json:"count"`
}

// Activity is the number of connections to one database in one state and
// the age of the oldest transaction among them.
type Activity struct {
	Datname              string  `json:"datname"`
	State                string  `json:"state"`
	Count                int64   `json:"count"`
	MaxTxDurationSeconds float64 `json:"max_tx_duration_seconds"`
}

// The queries of a scrape, sent as one batch: one round trip, one implicit
// transaction, so the statistics are one consistent snapshot. They follow
// postgres_exporter's collectors, less the labels that would name users or
// addresses.
const (
	qRole = `SELECT pg_is_in_recovery()`

	qDatabases = `SELECT d.oid::text, d.datname, pg_database_size(d.oid),
  COALESCE(s.numbackends, 0), COALESCE(s.xact_commit, 0), COALESCE(s.xact_rollback, 0),
  COALESCE(s.blks_read, 0), COALESCE(s.blks_hit, 0),
  COALESCE(s.tup_returned, 0), COALESCE(s.tup_fetched, 0), COALESCE(s.tup_inserted, 0),
  COALESCE(s.tup_updated, 0), COALESCE(s.tup_deleted, 0),
  COALESCE(s.conflicts, 0), COALESCE(s.temp_files, 0), COALESCE(s.temp_bytes, 0),
  COALESCE(s.deadlocks, 0)
FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
ORDER BY d.datname`

	qReplication = `SELECT
  CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE GREATEST(0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())))
  END::float8,
  pg_is_in_recovery(),
  COALESCE(GREATEST(0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))), 0)::float8`

	qReplicas = `SELECT COALESCE(r.application_name, ''), COALESCE(r.state, ''), COALESCE(s.slot_name::text, ''),
  COALESCE((CASE pg_is_in_recovery() WHEN true THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0') ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END)::float8, 0),
  COALESCE((CASE pg_is_in_recovery() WHEN true THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), r.replay_lsn) ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) END)::float8, 0)
FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
ORDER BY 1, 3`

	qArchiver = `SELECT archived_count, failed_count,
  EXTRACT(EPOCH FROM (now() - last_archived_time))::float8
FROM pg_stat_archiver`

	qBGWriter = `SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time,
  buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync, buffers_alloc
FROM pg_stat_bgwriter`

	qLocks = `SELECT d.datname, m.mode, COALESCE(l.count, 0)
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), ('shareupdateexclusivelock'),
  ('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS m(mode)
CROSS JOIN pg_database d
LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks
  WHERE database IS NOT NULL GROUP BY database, lower(mode)) l
  ON l.mode = m.mode AND l.database = d.oid
ORDER BY 1, 2`

	qActivity = `SELECT datname, state, count(*),
  COALESCE(MAX(EXTRACT(EPOCH FROM (now() - xact_start))), 0)::float8
FROM pg_stat_activity
WHERE datname IS NOT NULL AND state IS NOT NULL AND pid <> pg_backend_pid()
GROUP BY datname, state
ORDER BY 1, 2`
)

// Batcher is what Scrape needs of a connection: *pgx.Conn, *pgxpool.Pool
// and pgx.Tx all have it.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Scrape reads a snapshot through conn in one round trip. On error the
// snapshot has Up false. The caller sets Service and Node.
func Scrape(ctx context.Context, conn Batcher) (Snapshot, error) {
	s := Snapshot{At: time.Now()}
	var (
		inRecovery bool
		lastAge    *float64
	)
	b := &pgx.Batch{}
	b.Queue(qRole).QueryRow(func(r pgx.Row) error { return r.Scan(&inRecovery) })
	b.Queue(qDatabases).Query(func(rows pgx.Rows) error {
		var err error
		s.Databases, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Database, error) {
			var d Database
			err := r.Scan(&d.ID, &d.Name, &d.SizeBytes, &d.NumBackends, &d.XactCommit, &d.XactRollback,
				&d.BlksRead, &d.BlksHit, &d.TupReturned, &d.TupFetched, &d.TupInserted, &d.TupUpdated,
				&d.TupDeleted, &d.Conflicts, &d.TempFiles, &d.TempBytes, &d.Deadlocks)
			return d, err
		})
		return err
	})
	b.Queue(qReplication).QueryRow(func(r pgx.Row) error {
		return r.Scan(&s.Replication.LagSeconds, &s.Replication.IsReplica, &s.Replication.LastReplaySeconds)
	})
	b.Queue(qReplicas).Query(func(rows pgx.Rows) error {
		var err error
		s.Replicas, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Replica, error) {
			var x Replica
			err := r.Scan(&x.ApplicationName, &x.State, &x.SlotName, &x.CurrentWALLSNBytes, &x.WALLSNDiff)
			return x, err
		})
		return err
	})
	b.Queue(qArchiver).QueryRow(func(r pgx.Row) error {
		return r.Scan(&s.Archiver.ArchivedCount, &s.Archiver.FailedCount, &lastAge)
	})
	b.Queue(qBGWriter).QueryRow(func(r pgx.Row) error {
		w := &s.BGWriter
		return r.Scan(&w.CheckpointsTimed, &w.CheckpointsReq, &w.CheckpointWriteTime, &w.CheckpointSyncTime,
			&w.BuffersCheckpoint, &w.BuffersClean, &w.MaxwrittenClean, &w.BuffersBackend,
			&w.BuffersBackendFsync, &w.BuffersAlloc)
	})
	b.Queue(qLocks).Query(func(rows pgx.Rows) error {
		var err error
		s.Locks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lock, error) {
			var l Lock
			err := r.Scan(&l.Datname, &l.Mode, &l.Count)
			return l, err
		})
		return err
	})
	b.Queue(qActivity).Query(func(rows pgx.Rows) error {
		var err error
		s.Activity, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Activity, error) {
			var a Activity
			err := r.Scan(&a.Datname, &a.State, &a.Count, &a.MaxTxDurationSeconds)
			return a, err
		})
		return err
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return Snapshot{At: s.At}, fmt.Errorf("scrape postgresql statistics: %w", err)
	}
	s.Up = true
	s.Role = RolePrimary
	if inRecovery {
		s.Role = RoleReplica
	}
	s.Archiver.LastArchiveAgeSeconds = lastAge
	return s, nil
}

// ScrapeDSN connects to dsn (as MonitorRole), scrapes and disconnects, all
// within timeout. A node that cannot be reached gives a snapshot with Up
// false and the error.
func ScrapeDSN(ctx context.Context, dsn string, timeout time.Duration) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Snapshot{At: time.Now()}, fmt.Errorf("connect to postgresql: %w", err)
	}
	defer conn.Close(ctx) // after a timeout it still closes the socket
	return Scrape(ctx, conn)
}
