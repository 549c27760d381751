package pgstore_test

import (
	"testing"
	"time"

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
