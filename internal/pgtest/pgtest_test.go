package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/testenv"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDatabase(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	a, b := srv.NewDatabase(t), srv.NewDatabase(t)
	if a == b {
		t.Fatalf("NewDatabase returned %q twice", a)
	}
	ctx := context.Background()
	for _, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Errorf("create table in %s: %v", dsn, err)
		}
		var v string
		if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
			t.Error(err)
		}
		conn.Close(ctx)
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("connected after Stop")
	}
}

func TestUnavailableSkips(t *testing.T) {
	if testenv.InCI() {
		t.Skip("CI=true turns the skip into a failure")
	}
	t.Setenv("MOAT_PG_BINDIR", t.TempDir())
	ok := t.Run("start", func(t *testing.T) {
		pgtest.Start(t)
		t.Error("Start returned without PostgreSQL binaries")
	})
	if !ok {
		t.Fatal("subtest failed instead of skipping")
	}
}
