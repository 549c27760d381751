package sqlitestore_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
	"github.com/moatdb/moat/internal/store/storetest"
)

func open(t *testing.T, path string, opts sqlitestore.Options) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "moat.db"), sqlitestore.Options{NoSync: true})
	})
}

// TestShared opens the file twice, as two processes would: commits by the
// other are noticed by polling, within the poll interval.
func TestShared(t *testing.T) {
	const poll = 100 * time.Millisecond
	storetest.RunShared(t, poll+300*time.Millisecond, func(t *testing.T) (store.Store, store.Store) {
		path := filepath.Join(t.TempDir(), "moat.db")
		opts := sqlitestore.Options{NoSync: true, PollInterval: poll}
		return open(t, path, opts), open(t, path, opts)
	})
}
