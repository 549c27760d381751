package pgstore_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/pgstore"
	"github.com/moatdb/moat/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := pgtest.Shared(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, srv.NewDatabase(t))
	})
}

// TestShared runs two Stores on one database, as two server replicas.
func TestShared(t *testing.T) {
	srv := pgtest.Shared(t)
	storetest.RunShared(t, 300*time.Millisecond, func(t *testing.T) (store.Store, store.Store) {
		dsn := srv.NewDatabase(t)
		return open(t, dsn), open(t, dsn)
	})
}

// TestListenReconnects cuts a Store's LISTEN connection and checks that a
// commit by another Store still wakes its WaitRevision.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	defer a.Close()
	defer b.Close()
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	err = admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n)
	if err != nil || n != 2 {
		t.Fatalf("terminated %d listeners, %v; want 2", n, err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := a.WaitRevision(ctx, 0)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	err = b.Update(ctx, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitRevision still blocked 3s after the commit")
	}
}

// BenchmarkAllowlistPut: 16 concurrent allowlist writes (the test server
// runs with fsync off).
func BenchmarkAllowlistPut(b *testing.B) {
	s, err := pgstore.Open(b.Context(), pgtest.Shared(b).NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchAllowlistPut(b, s)
}
