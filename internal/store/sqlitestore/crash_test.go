package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

// TestCrashMidUpdate kills a process in the middle of a large read-write
// transaction (SIGKILL, after enough writes that SQLite has spilled pages
// to the WAL) and checks that the file is intact, holds the transaction
// committed before, and nothing of the interrupted one.
func TestCrashMidUpdate(t *testing.T) {
	if path := os.Getenv("SQLITESTORE_CRASH_DB"); path != "" {
		crashChild(path)
		return
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "moat.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidUpdate$")
	cmd.Env = append(os.Environ(), "SQLITESTORE_CRASH_DB="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL\n%s", err, out)
	}
	if !strings.Contains(string(out), "spilled") {
		t.Fatalf("child did not reach the kill:\n%s", out)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v", check, err)
	}
	db.Close()

	s := open(t, path, sqlitestore.Options{})
	defer s.Close()
	err = s.View(t.Context(), func(tx store.Tx) error {
		recs, err := tx.List(t.Context(), store.Query{Kind: "node", IncludeDeleted: true})
		if err != nil {
			return err
		}
		if len(recs) != 1 || recs[0].ID != "node-committed" || recs[0].Revision != 1 {
			t.Errorf("after the crash: %d nodes, want node-committed alone at revision 1", len(recs))
		}
		if last, err := tx.LastAudit(t.Context()); err != nil || last.Seq != 1 {
			t.Errorf("LastAudit = %d, %v; want 1", last.Seq, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rev, err := s.Revision(t.Context()); err != nil || rev != 1 {
		t.Errorf("Revision = %d, %v; want 1", rev, err)
	}
}

func crashChild(path string) {
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, path, sqlitestore.Options{})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	node := func(id string, i int) store.Record {
		data := fmt.Sprintf(`{"id":%q,"pad":%q}`, id, strings.Repeat("x", 2000+i%7))
		return store.Record{Kind: "node", ID: id, State: "running", Data: []byte(data)}
	}
	entry := func(seq int64) domain.AuditEntry {
		return domain.AuditEntry{Seq: seq, Actor: "a", Action: "x", Outcome: "success", PrevHash: "p", Hash: "h"}
	}
	err = s.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Put(ctx, node("node-committed", 0)); err != nil {
			return err
		}
		if _, err := tx.BumpRevision(ctx); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, entry(1))
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	s.Update(ctx, func(tx store.Tx) error {
		r := node("node-committed", 1)
		r.Revision = 1
		if _, err := tx.Put(ctx, r); err != nil {
			return err
		}
		tx.BumpRevision(ctx)
		tx.AppendAudit(ctx, entry(2))
		for i := range 6000 { // 12 MB: more than the page cache holds
			if _, err := tx.Put(ctx, node(fmt.Sprintf("node-%d", i), i)); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
		}
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 4<<20 {
			fmt.Println("spilled", fi.Size())
		}
		os.Stdout.Sync()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
}
