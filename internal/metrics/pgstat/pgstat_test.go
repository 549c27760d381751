package pgstat_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// monitorDSN creates the monitoring role on srv (twice: the statements are
// idempotent) and returns a DSN that logs in as it to database db.
func monitorDSN(t *testing.T, srv *pgtest.Server, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for range 2 {
		for _, q := range pgstat.MonitorRoleSQL() {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	u, err := url.Parse(srv.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(pgstat.MonitorRole)
	return u.String()
}

func dbName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path[1:]
}

func database(s pgstat.Snapshot, name string) (pgstat.Database, bool) {
	for _, d := range s.Databases {
		if d.Name == name {
			return d, true
		}
	}
	return pgstat.Database{}, false
}

func TestScrape(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	name := dbName(t, dsn)
	mon := monitorDSN(t, srv, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tenant, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer tenant.Close(ctx)
	if _, err := tenant.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}

	first, err := pgstat.ScrapeDSN(ctx, mon, 5*time.Second)
	if err != nil {
		t.Fatalf("ScrapeDSN: %v", err)
	}
	if !first.Up || first.Role != pgstat.RolePrimary {
		t.Errorf("Up, Role = %v, %q, want true, %q", first.Up, first.Role, pgstat.RolePrimary)
	}
	d, ok := database(first, name)
	if !ok {
		t.Fatalf("no database %q in %+v", name, first.Databases)
	}
	if d.SizeBytes <= 0 || d.ID == "" {
		t.Errorf("database %q: size %d, datid %q; want a size > 0 and an oid", name, d.SizeBytes, d.ID)
	}
	if first.Replication.IsReplica || first.Replication.LagSeconds != 0 {
		t.Errorf("a primary's Replication = %+v, want not a replica and no lag", first.Replication)
	}
	locks := 0
	for _, l := range first.Locks {
		if l.Datname == name {
			locks++
		}
	}
	if locks != 9 {
		t.Errorf("%d lock modes for %q, want 9 (one per mode, zeros included)", locks, name)
	}

	// A transaction in the tenant's database shows as a commit (PostgreSQL
	// flushes a backend's statistics when it exits, or idle after up to
	// 10 s), and a checkpoint as a requested one.
	once, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := once.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	once.Close(ctx)
	super, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() (bool, string) {
		s, err := pgstat.ScrapeDSN(ctx, mon, 5*time.Second)
		if err != nil {
			t.Fatalf("ScrapeDSN: %v", err)
		}
		d2, _ := database(s, name)
		return d2.XactCommit > d.XactCommit && s.BGWriter.CheckpointsReq > first.BGWriter.CheckpointsReq,
			fmt.Sprintf("after a commit and a CHECKPOINT: xact_commit %d → %d, checkpoints_req %d → %d; want both to grow",
				d.XactCommit, d2.XactCommit, first.BGWriter.CheckpointsReq, s.BGWriter.CheckpointsReq)
	})

	// An open transaction shows as the longest one.
	tx, err := tenant.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM t"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() (bool, string) {
		s, err := pgstat.ScrapeDSN(ctx, mon, 5*time.Second)
		if err != nil {
			t.Fatalf("ScrapeDSN: %v", err)
		}
		var open pgstat.Activity
		for _, a := range s.Activity {
			if a.Datname == name && a.State == "idle in transaction" {
				open = a
			}
		}
		return open.Count == 1 && open.MaxTxDurationSeconds > 0,
			fmt.Sprintf("with a transaction open: idle-in-transaction activity %+v; want one, with an age", open)
	})
}

// waitFor polls cond for up to 10 s and fails t with cond's last message.
func waitFor(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestMonitorRoleIsReadOnly(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	mon := monitorDSN(t, srv, dbName(t, dsn))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, mon)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE nope (x int)"); err == nil {
		t.Error("the monitoring role created a table")
	}
	var super, member bool
	err = conn.QueryRow(ctx, `SELECT rolsuper, pg_has_role(current_user, 'pg_monitor', 'MEMBER') FROM pg_roles WHERE rolname = current_user`).Scan(&super, &member)
	if err != nil {
		t.Fatal(err)
	}
	if super || !member {
		t.Errorf("superuser %v, pg_monitor member %v; want false, true", super, member)
	}
}

func TestScrapeUnreachable(t *testing.T) {
	t.Parallel()
	s, err := pgstat.ScrapeDSN(context.Background(), "postgres://x@127.0.0.1:1/x?sslmode=disable", 2*time.Second)
	if err == nil || s.Up {
		t.Fatalf("ScrapeDSN(closed port) = Up %v, %v; want down and an error", s.Up, err)
	}
	if s.At.IsZero() {
		t.Error("a failed scrape has no time")
	}
}
