package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/moatdb/moat/internal/store/sqlitestore"
	"github.com/moatdb/moat/internal/store/storetest"
)

// BenchmarkAllowlistPut: 16 concurrent allowlist writes, durable commits
// (synchronous=FULL).
func BenchmarkAllowlistPut(b *testing.B) {
	s, err := sqlitestore.Open(context.Background(), filepath.Join(b.TempDir(), "moat.db"), sqlitestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchAllowlistPut(b, s)
}
