package sqlitestore_test

import (
	"path/filepath"
	"testing"

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
