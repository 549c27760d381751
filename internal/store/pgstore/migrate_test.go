package pgstore

import (
	"database/sql"
	"io/fs"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/pressly/goose/v3"

	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/store/storetest"
)

// TestMigrateHosts: migration 00002 indexes existing nodes by host and
// starts every host's revision at the global one, so agents that hold it
// neither miss a change nor see one that did not happen.
func TestMigrateHosts(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Shared(t).NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO records (id, kind, parent, revision, data) VALUES ('node-1', 'node', 'svc-1', 1, '{"id":"node-1","host":"h1"}')`,
		`INSERT INTO records (id, kind, parent, revision, data) VALUES ('node-2', 'node', 'svc-1', 1, '{"id":"node-2"}')`,
		`INSERT INTO records (id, kind, revision, data) VALUES ('svc-1', 'service', 1, '{"id":"svc-1","host":"h1"}')`,
		`UPDATE meta SET value = convert_to('5', 'UTF8') WHERE key = 'revision'`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckHostsMigrated(ctx, t, s)
}
