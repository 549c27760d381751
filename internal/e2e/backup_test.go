package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/up"
)

// marker is written into the database; the backup store must never hold
// it in the clear.
const marker = "moat-plaintext-marker"

// TestBackupRestore is the backup promise end to end with real
// PostgreSQL: a new service is backed up on schedule and archives its
// WAL; data loaded with pgbench and a writer; an on-demand base backup;
// a restore to a time T holds exactly the state at T; a restore to the
// latest state holds every committed row; the store holds no plaintext;
// the restored services have their own passwords and archives.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	e := startWith(t, "", "", func(c *controlplane.Config) {
		c.BackupInterval = 24 * time.Hour
		fullFleet(c) // a restore into the other region is refused
	})
	e.newProject("acme")
	src, pw := e.createService("ledger", 1)
	laptop := up.LaptopHost
	sql := func(svc apitype.Service, pw, q string) string {
		t.Helper()
		r := e.psql(laptop, pw, e.conninfo(svc, ""), "-v", "ON_ERROR_STOP=1", "-c", q)
		if r.code != 0 {
			t.Fatalf("%s on %s: %v", q, svc.ID, r)
		}
		return r.stdout
	}

	// The scheduler backs a new service up at once.
	scheduled := e.waitBackups(src.ID, 1)
	if scheduled[0].KeyFingerprint == "" || scheduled[0].StartLSN == "" || scheduled[0].Size == 0 {
		t.Fatalf("scheduled backup = %+v", scheduled[0])
	}

	// Load with pgbench, keep writing (pgbench and marker rows), take a
	// base backup on demand, keep writing.
	pgbench := func(args ...string) {
		t.Helper()
		argv := append([]string{"env", "PGPASSWORD=" + pw, "pgbench", "-n"}, args...)
		argv = append(argv, e.conninfo(src, ""))
		var out bytes.Buffer
		code, err := e.stack.Sim.Exec(e.ctx(), laptop, argv, nil, &out, &out)
		if err != nil || code != 0 {
			t.Fatalf("pgbench %v: exit %d, %v\n%s", args, code, err, out.String())
		}
	}
	argvInit := []string{"-i", "-s", "2", "-q"}
	pgbench(argvInit...)
	sql(src, pw, "CREATE TABLE marks (id int PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	next := 1
	write := func(n int) {
		t.Helper()
		for range n {
			sql(src, pw, fmt.Sprintf("INSERT INTO marks (id, note) VALUES (%d, '%s-%d')", next, marker, next))
			next++
		}
	}
	write(5)
	pgbench("-T", "1", "-c", "2")
	// On demand, through the CLI.
	code, out, errOut := e.moatAPI("backup", "create", src.ID, "--wait", "-o", "json")
	var op apitype.Operation
	if code != 0 || json.Unmarshal([]byte(out), &op) != nil {
		t.Fatalf("moat backup create --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	if op.Type != "service.backup" || op.State != "succeeded" || op.BackupLabel == "" {
		t.Fatalf("backup operation = %+v", op)
	}
	if bs := e.waitBackups(src.ID, 2); bs[len(bs)-1].Label != op.BackupLabel {
		t.Fatalf("newest backup %s, want %s", bs[len(bs)-1].Label, op.BackupLabel)
	}
	write(5)
	pgbench("-T", "1", "-c", "2")
	write(3)

	// T: between two commits of the writer, nothing else writing.
	state := func(svc apitype.Service, pw string) string {
		return sql(svc, pw, "SELECT (SELECT count(*) || '/' || max(id) FROM marks), (SELECT sum(abalance) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_history)")
	}
	atT := state(src, pw)
	time.Sleep(20 * time.Millisecond)
	toTime := time.Now().UTC()
	time.Sleep(20 * time.Millisecond)
	write(4)
	pgbench("-T", "1", "-c", "2")
	write(2)
	final := state(src, pw)
	if atT == final {
		t.Fatalf("nothing was written after T: %s", final)
	}

	// Restore to T: exactly the state at T.
	atTSvc, atTPw := e.restore("ledger-at-t", src.ID, &toTime)
	if got := state(atTSvc, atTPw); got != atT {
		t.Errorf("restore to %s: state %s, want %s (the source at T)", toTime.Format(time.RFC3339Nano), got, atT)
	}
	// The release of the source's key to the restore is in the audit log.
	entries, err := e.op.ListAudit(e.ctx(), e.project)
	if err != nil {
		t.Fatal(err)
	}
	released := 0
	for _, a := range entries {
		if a.Action == "backup.key.release" && a.Target == src.ID && strings.Contains(a.Detail, atTSvc.ID) {
			released++
		}
	}
	if released != 1 {
		t.Errorf("%d audit entries backup.key.release of %s to %s, want 1", released, src.ID, atTSvc.ID)
	}

	// Restore to the latest state, through the CLI: every committed row.
	code, out, errOut = e.moatAPI("service", "restore", "--from", src.ID, "--name", "ledger-latest", "--wait", "-o", "json")
	var latest apitype.Service
	if code != 0 || json.Unmarshal([]byte(out), &latest) != nil || latest.State != "running" || latest.AdminPassword == "" {
		t.Fatalf("moat service restore --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	latestPw := latest.AdminPassword
	if got := state(latest, latestPw); got != final {
		t.Errorf("restore to latest: state %s, want %s", got, final)
	}
	// The restored service has its own password, not the source's.
	if r := e.psql(laptop, pw, e.conninfo(latest, ""), "-c", "select 1"); r.code == 0 {
		t.Errorf("the source's password opens the restored service")
	}
	// ... and it is backed up on its own schedule, under its own key, on
	// the timeline its promotion started (the source's is 1).
	own := e.waitBackups(latest.ID, 1)
	if own[0].KeyFingerprint == scheduled[0].KeyFingerprint {
		t.Errorf("restored service's backup is under the source's key %s", own[0].KeyFingerprint)
	}
	if own[0].Timeline != 2 {
		t.Errorf("restored service's first base backup on timeline %d, want 2", own[0].Timeline)
	}

	// A restore of the restored service: its archive is on timeline 2
	// (the restore promoted it), with its own base backups and history.
	sql(latest, latestPw, fmt.Sprintf("INSERT INTO marks (id, note) VALUES (%d, '%s-after-restore')", next, marker))
	afterRestore := state(latest, latestPw)
	op2, err := e.op.CreateBackup(e.ctx(), e.project, latest.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.op.WaitOperation(e.ctx(), e.project, op2.ID, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	e.waitBackups(latest.ID, 2)
	again, againPw := e.restore("ledger-again", latest.ID, nil)
	if got := state(again, againPw); got != afterRestore {
		t.Errorf("restore of the restored service: state %s, want %s", got, afterRestore)
	}
	if bs := e.waitBackups(again.ID, 1); bs[0].Timeline != 3 {
		t.Errorf("restore of the restored service backed up on timeline %d, want 3", bs[0].Timeline)
	}

	// A restore right after a base backup, nothing written since: the
	// source's WAL switch finds its segment archived at once. Two nodes:
	// the replica streams from the restored primary.
	e.waitBackups(again.ID, 1)
	quiet, quietPw := e.restore("ledger-quiet", again.ID, nil, 2)
	if got := state(quiet, quietPw); got != afterRestore {
		t.Errorf("restore of a quiet service: state %s, want %s", got, afterRestore)
	}
	for _, n := range quiet.NodeList {
		if n.Index == 0 {
			continue
		}
		q := "SELECT (SELECT count(*) || '/' || max(id) FROM marks), (SELECT sum(abalance) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_history), pg_is_in_recovery()"
		if r := e.psql(laptop, quietPw, e.conninfo(quiet, n.Address), "-c", q); r.code != 0 || r.stdout != afterRestore+"|t" {
			t.Errorf("replica %s of the restored service: %v, want %s|t", n.Address, r, afterRestore)
		}
	}

	// A restore to a time after which the source wrote nothing: the
	// restore's own WAL switch gives recovery a commit to stop at.
	quietTime := time.Now().UTC()
	atQuiet, atQuietPw := e.restore("ledger-quiet-at", again.ID, &quietTime)
	if got := state(atQuiet, atQuietPw); got != afterRestore {
		t.Errorf("restore of a quiet service to %s: state %s, want %s", quietTime.Format(time.RFC3339Nano), got, afterRestore)
	}

	// The source's primary reports its archiving on the service.
	waitFor(t, 30*time.Second, func() bool {
		got, err := e.op.GetService(e.ctx(), e.project, src.ID)
		return err == nil && len(got.NodeList) == 1 && got.NodeList[0].Archive != nil &&
			got.NodeList[0].Archive.LastArchivedWAL != "" && !got.NodeList[0].Archive.Failing
	})

	// Nothing in the store is plaintext: no marker, no table name in the
	// WAL or base backups. Manifests (*.json) and digests hold no content.
	var files, wal int
	root := filepath.Join(e.dir, controlplane.BackupDirName)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if strings.Contains(p, "/wal/") && !strings.HasSuffix(p, ".digest") {
			wal++
		}
		for _, s := range []string{marker, "pgbench_accounts"} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q in the clear", p, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if wal < 2 {
		t.Errorf("%d files in the store, %d archived WAL files: archiving did not run", files, wal)
	}

	// Bad restore requests name the field and the fix.
	future := time.Now().Add(time.Hour)
	before := scheduled[0].StartTime.Add(-time.Hour)
	for _, tc := range []struct {
		in    apitype.ServiceCreate
		field string
	}{
		{apitype.ServiceCreate{Name: "r1", RestoreFrom: &apitype.RestoreFrom{ServiceID: src.ID, ToTime: &future}}, "restore_from.to_time"},
		{apitype.ServiceCreate{Name: "r2", RestoreFrom: &apitype.RestoreFrom{ServiceID: src.ID, ToTime: &before}}, "restore_from.to_time"},
		{apitype.ServiceCreate{Name: "r3", Region: "eu-west-1", RestoreFrom: &apitype.RestoreFrom{ServiceID: src.ID}}, "region"},
		{apitype.ServiceCreate{Name: "r4", RestoreFrom: &apitype.RestoreFrom{}}, "restore_from.service_id"},
	} {
		_, err := e.op.CreateService(e.ctx(), e.project, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("restore %+v: %v, want an error naming %s", tc.in.RestoreFrom, err, tc.field)
		}
	}
}

// waitBackups waits until service svc has at least n base backups.
func (e *env) waitBackups(svc string, n int) []apitype.Backup {
	e.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		bs, err := e.op.ListBackups(e.ctx(), e.project, svc)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(bs) >= n {
			return bs
		}
		if time.Now().After(deadline) {
			ops, _ := e.op.ListOperations(e.ctx(), e.project, svc)
			e.t.Fatalf("service %s has %d base backups after 90s, want %d; operations: %+v", svc, len(bs), n, ops)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restore restores service src to toTime (nil: latest) into a new
// service named name, waits until it runs, and returns it with its admin
// password.
func (e *env) restore(name, src string, toTime *time.Time, nodes ...int) (apitype.Service, string) {
	e.t.Helper()
	in := apitype.ServiceCreate{Name: name, RestoreFrom: &apitype.RestoreFrom{ServiceID: src, ToTime: toTime}}
	if len(nodes) > 0 {
		in.Nodes = nodes[0]
	}
	svc, err := e.op.CreateService(e.ctx(), e.project, in)
	if err != nil {
		e.t.Fatalf("restore %s: %v", name, err)
	}
	got, err := e.op.WaitService(e.ctx(), e.project, svc.ID, 20*time.Millisecond)
	if err != nil {
		e.t.Fatalf("restored service %s: %v", svc.ID, err)
	}
	return got, svc.AdminPassword
}
