package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/testenv"
)

// TestPostgresOnVolume: a real PostgreSQL keeps its data directory on a
// served volume; its rows are there through the mount and not in the
// container file.
func TestPostgresOnVolume(t *testing.T) {
	mustHaveVolumeHost(t)
	testenv.MustHavePostgres(t)
	dir := t.TempDir()
	// The postgres user reaches the mountpoint through the test's directories.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, container, mnt, key, true, EngineUserspace)
	os.Chmod(mnt, 0o755)
	empty := mustStat(t, container, mnt).Used
	t.Setenv("MOAT_PGTEST_DIR", mnt)
	srv := pgtest.Start(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const marker = "moat-row-marker-7f3a9c"
	if _, err := conn.Exec(ctx, `CREATE TABLE t AS SELECT g AS id, '`+marker+`-' || g AS v FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t WHERE v LIKE $1", marker+"%").Scan(&n); err != nil || n != 20000 {
		t.Fatalf("rows = %d, %v; want 20000", n, err)
	}
	// The checkpoint wrote the table through the volume; sync the
	// container and look for the rows' text.
	if err := writeSync(filepath.Join(mnt, "sync"), nil); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(container)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(marker)) {
		t.Error("the container file holds PostgreSQL's rows in plaintext")
	}
	if used := mustStat(t, container, mnt).Used; used-empty < 20<<20 {
		t.Errorf("Stat used = %d (%d when empty), want the data directory's size (> 20 MiB) more", used, empty)
	}
}

func mustStat(t *testing.T, container, mnt string) Info {
	t.Helper()
	info, err := Stat(container, mnt)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
