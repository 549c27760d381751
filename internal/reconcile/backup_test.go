package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/reconcile"
	"github.com/moatdb/moat/internal/secret"
	"github.com/moatdb/moat/internal/store"
)

func (f *fixture) ops(target string) []*domain.Operation {
	f.t.Helper()
	var out []*domain.Operation
	err := f.store.View(f.t.Context(), func(tx store.Tx) (err error) {
		out, err = store.List[domain.Operation](f.t.Context(), tx, store.Query{ProjectID: "proj-test", Parent: target})
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) edit(o domain.Object, fn func()) {
	f.t.Helper()
	fn()
	f.put(o)
}

func backupService(f *fixture, state string) *domain.Service {
	id := domain.NewID(domain.PrefixService)
	return f.put(&domain.Service{Meta: domain.Meta{ID: id, ProjectID: "proj-test", State: state},
		Region: "us-east-1", NodeCount: 1, BackupPublicKeyPEM: "PUB", BackupKeySealed: sealedTestKey(f.t, id)}).(*domain.Service)
}

// testKeyPEM is package backup's test key (generating one per test is
// slow).
func testKeyPEM(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "backup", "testdata", "test-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// sealedTestKey seals the test key for service id with the fixture's
// keyring.
func sealedTestKey(t *testing.T, id string) []byte {
	keys, err := secret.NewKeyring(make([]byte, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return keys.Seal(testKeyPEM(t), domain.BackupKeyAD(id))
}

func primary(f *fixture, svc, state string) *domain.Node {
	return f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: state},
		ServiceID: svc, Index: 0, Host: "h", Namespace: "ns"}).(*domain.Node)
}

// TestScheduleBackups: a running service without a recent backup gets one
// backup operation (not one per pass); it starts once its primary runs; a
// failed one pauses scheduling; a fresh backup stops it.
func TestScheduleBackups(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f := newFixtureWith(t, func(c *reconcile.Config) {
		d, err := objstore.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.Backups, c.BackupInterval, c.BackupKeep, c.Now = d, time.Hour, 2, func() time.Time { return now }
	})
	svc := backupService(f, domain.StateRunning)
	idle := backupService(f, domain.StateCreating)
	f.mustOnce()
	f.mustOnce()
	ops := f.ops(svc.ID)
	if len(ops) != 1 || ops[0].Type != domain.OpServiceBackup || ops[0].State != domain.StatePending {
		t.Fatalf("operations after two passes = %+v, want one pending backup", ops)
	}
	if got := f.ops(idle.ID); len(got) != 0 {
		t.Errorf("a service that is not running got %d operations", len(got))
	}
	primary(f, svc.ID, domain.StateRunning)
	f.mustOnce()
	op := get[domain.Operation](f, ops[0].ID)
	if op.State != domain.StateRunning {
		t.Fatalf("backup with a running primary is %s, want running", op.State)
	}
	f.edit(op, func() { op.State, op.UpdatedAt = domain.StateFailed, now })
	f.mustOnce()
	if got := f.ops(svc.ID); len(got) != 1 {
		t.Fatalf("a new backup right after a failure: %d operations", len(got))
	}
	now = now.Add(6 * time.Minute)
	f.mustOnce()
	if got := f.ops(svc.ID); len(got) != 2 {
		t.Fatalf("after the pause: %d operations, want 2", len(got))
	}
	for _, o := range f.ops(svc.ID) {
		if o.State != domain.StateFailed {
			f.edit(o, func() { o.State = domain.StateSucceeded })
		}
	}
	cur := get[domain.Service](f, svc.ID)
	f.edit(cur, func() { cur.LastBackupAt = now.Add(-time.Minute) })
	f.mustOnce()
	if got := f.ops(svc.ID); len(got) != 2 {
		t.Errorf("a backup a minute old started another: %d operations", len(got))
	}

	// A WAL switch nobody finishes fails after its timeout.
	sw := f.put(&domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: "proj-test", State: domain.StateRunning, CreatedAt: now},
		Type: domain.OpServiceSwitchWAL, TargetID: svc.ID}).(*domain.Operation)
	f.mustOnce()
	if o := get[domain.Operation](f, sw.ID); o.State != domain.StateRunning {
		t.Fatalf("fresh WAL switch = %s", o.State)
	}
	now = now.Add(4 * time.Minute)
	f.mustOnce()
	if o := get[domain.Operation](f, sw.ID); o.State != domain.StateFailed || o.Error == nil || o.Error.Code != "timeout" {
		t.Errorf("WAL switch after 4 minutes = %s %+v, want failed: timeout", o.State, o.Error)
	}
}

// TestRestoreSteps: a restore waits for the source's WAL switch, then
// restores, and ends with its service running; a failed primary fails the
// restore and the service.
func TestRestoreSteps(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	src := backupService(f, domain.StateRunning)
	primary(f, src.ID, domain.StateRunning)
	newRestore := func() (*domain.Service, *domain.Operation, *domain.Operation) {
		dst := backupService(f, domain.StateCreating)
		sw := f.put(&domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: "proj-test", State: domain.StatePending, CreatedAt: time.Now()},
			Type: domain.OpServiceSwitchWAL, TargetID: src.ID}).(*domain.Operation)
		op := f.put(&domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: "proj-test", State: domain.StatePending},
			Type: domain.OpServiceRestore, TargetID: dst.ID, SourceID: src.ID, WaitID: sw.ID}).(*domain.Operation)
		f.edit(dst, func() { dst.RestoreFrom, dst.OperationID = src.ID, op.ID })
		return dst, op, sw
	}
	dst, op, sw := newRestore()
	f.mustOnce()
	f.mustOnce()
	if o := get[domain.Operation](f, op.ID); o.State != domain.StateRunning || o.Step != domain.StepSwitchWAL {
		t.Fatalf("restore = %s/%s, want running/switch-wal", o.State, o.Step)
	}
	if o := get[domain.Operation](f, sw.ID); o.State != domain.StateRunning {
		t.Fatalf("WAL switch = %s, want running (the source's primary runs)", o.State)
	}
	f.mustOnce()
	if o := get[domain.Operation](f, op.ID); o.Step != domain.StepSwitchWAL {
		t.Fatalf("the restore went on before the WAL switch ended: step %s", o.Step)
	}
	swNow := get[domain.Operation](f, sw.ID)
	f.edit(swNow, func() { swNow.State = domain.StateSucceeded })
	f.mustOnce()
	if o := get[domain.Operation](f, op.ID); o.Step != domain.StepRestore {
		t.Fatalf("restore step %s after the switch, want restore", o.Step)
	}
	cur := get[domain.Service](f, dst.ID)
	f.edit(cur, func() { cur.State = domain.StateRunning })
	f.mustOnce()
	if o := get[domain.Operation](f, op.ID); o.State != domain.StateSucceeded {
		t.Fatalf("restore of a running service = %s, want succeeded", o.State)
	}
	if s := get[domain.Service](f, dst.ID); s.OperationID != "" {
		t.Errorf("the service still names the finished restore %s", s.OperationID)
	}

	// A failed restore fails its service, with the node's message.
	dst, op, sw = newRestore()
	n := primary(f, dst.ID, domain.StateFailed)
	f.edit(n, func() {
		n.StateInfo = &domain.Info{Code: "node_failed", Message: "recovery ended before configured recovery target was reached"}
	})
	swNow = get[domain.Operation](f, sw.ID)
	f.edit(swNow, func() { swNow.State = domain.StateSucceeded })
	for range 3 {
		f.mustOnce()
	}
	o := get[domain.Operation](f, op.ID)
	if o.State != domain.StateFailed || o.Error == nil || !strings.Contains(o.Error.Message, "recovery target") {
		t.Fatalf("restore with a failed primary = %s %+v", o.State, o.Error)
	}
	if s := get[domain.Service](f, dst.ID); s.State != domain.StateFailed || s.StateInfo == nil || s.StateInfo.Code != "restore_failed" {
		t.Errorf("service of a failed restore = %s %+v", s.State, s.StateInfo)
	}

	// A restore to the latest state whose source cannot archive its WAL
	// fails (it would restore less than asked), naming the fix.
	dst, op, sw = newRestore()
	swNow = get[domain.Operation](f, sw.ID)
	f.edit(swNow, func() {
		swNow.State, swNow.Error = domain.StateFailed, &domain.Info{Code: "timeout", Message: "not archived"}
	})
	for range 3 {
		f.mustOnce()
	}
	o = get[domain.Operation](f, op.ID)
	if o.State != domain.StateFailed || o.Error == nil || !strings.Contains(o.Error.Message, "--to-time") {
		t.Errorf("restore to latest after a failed WAL switch = %s %+v", o.State, o.Error)
	}
	_ = dst

	// Deleting the source fails the restores from it first, and deletes
	// its backups only after a grace.
	dst, op, _ = newRestore()
	f.mustOnce()
	srcNow := get[domain.Service](f, src.ID)
	f.edit(srcNow, func() { srcNow.State = domain.StateDeleting })
	for _, n := range f.nodes(src.ID) {
		f.edit(n, func() { n.State = domain.StateDeleted })
	}
	f.mustOnce()
	if o := get[domain.Operation](f, op.ID); o.State != domain.StateFailed || !strings.Contains(o.Error.Message, "delet") {
		t.Errorf("restore whose source is being deleted = %s %+v", o.State, o.Error)
	}
	if s := get[domain.Service](f, src.ID); s.State != domain.StateDeleting {
		t.Errorf("source deleted (state %s) within the grace of a restore from it", s.State)
	}
	_ = dst
}

func (f *fixture) nodes(svc string) []*domain.Node {
	f.t.Helper()
	var out []*domain.Node
	if err := f.store.View(f.t.Context(), func(tx store.Tx) (err error) {
		out, err = store.List[domain.Node](f.t.Context(), tx, store.Query{Parent: svc})
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// TestPruneAfterBackup: a new backup triggers retention once: older base
// backups beyond the count are deleted from the store.
func TestPruneAfterBackup(t *testing.T) {
	t.Parallel()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Backups, c.BackupKeep = dir, 2 })
	svc := backupService(f, domain.StateRunning)
	ctx := context.Background()
	ak, err := backup.AuthKey(testKeyPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	acfg := &archive.Config{Region: svc.Region, Service: svc.ID, ObjectStore: dir, AuthKey: ak}
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		start := t0.Add(time.Duration(i) * 24 * time.Hour)
		label := start.Format("20060102T150405Z")
		key, _ := objstore.Key(svc.Region, svc.ID, 1, objstore.KindBase, label+".tar")
		b := archive.Backup{Label: label, Timeline: 1, StartWAL: "00000001000000000000000" + string(rune('1'+i)), StartTime: start, EndTime: start.Add(time.Minute), Object: key}
		if err := dir.Put(ctx, key, strings.NewReader("encrypted")); err != nil {
			t.Fatal(err)
		}
		if err := archive.StoreManifest(ctx, acfg, b); err != nil {
			t.Fatal(err)
		}
	}
	cur := get[domain.Service](f, svc.ID)
	f.edit(cur, func() { cur.LastBackupAt = t0.Add(72*time.Hour + time.Minute) })
	f.mustOnce()
	left, err := archive.ListBackups(ctx, acfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0].Label != "20261122T000000Z" {
		t.Fatalf("after retention: %+v, want the 2 newest", left)
	}
	if s := get[domain.Service](f, svc.ID); !s.PrunedAt.Equal(s.LastBackupAt) {
		t.Errorf("pruned at %v, last backup %v", s.PrunedAt, s.LastBackupAt)
	}
}

// TestPruneRefusesForgedManifest: a manifest in service A's prefix that
// A's key does not authenticate, naming service B's backup, stops A's
// retention (an error every pass, nothing deleted, PrunedAt not
// advanced) and leaves B's backup alone.
func TestPruneRefusesForgedManifest(t *testing.T) {
	t.Parallel()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Backups, c.BackupKeep = dir, 1 })
	a, b := backupService(f, domain.StateRunning), backupService(f, domain.StateCreating)
	ctx := context.Background()
	ak, err := backup.AuthKey(testKeyPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var objects []string
	put := func(svc *domain.Service, start time.Time) archive.Backup {
		key, _ := objstore.Key(svc.Region, svc.ID, 1, objstore.KindBase, start.Format("20060102T150405Z")+".tar")
		bk := archive.Backup{Label: start.Format("20060102T150405Z"), Timeline: 1, StartWAL: "000000010000000000000002", StartTime: start, EndTime: start.Add(time.Minute), Object: key}
		if err := dir.Put(ctx, key, strings.NewReader("encrypted")); err != nil {
			t.Fatal(err)
		}
		if err := archive.StoreManifest(ctx, &archive.Config{Region: svc.Region, Service: svc.ID, ObjectStore: dir, AuthKey: ak}, bk); err != nil {
			t.Fatal(err)
		}
		objects = append(objects, key)
		return bk
	}
	victim := put(b, t0)
	put(a, t0.Add(24*time.Hour))
	put(a, t0.Add(48*time.Hour))
	// The forged manifest: older than A's backups, so retention would
	// delete its object first.
	forged := victim
	forged.Label = "20261101T000000Z"
	fkey, _ := objstore.Key(a.Region, a.ID, 1, objstore.KindBase, forged.Label+".json")
	raw, _ := json.Marshal(forged)
	if err := dir.Put(ctx, fkey, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	cur := get[domain.Service](f, a.ID)
	f.edit(cur, func() { cur.LastBackupAt = t0.Add(49 * time.Hour) })
	for range 2 {
		if err := f.once(); err == nil || !strings.Contains(err.Error(), "not authenticated") {
			t.Fatalf("Once = %v, want retention refused: not authenticated", err)
		}
	}
	for _, k := range objects {
		if _, err := dir.Stat(ctx, k); err != nil {
			t.Errorf("%s deleted by a retention that read a forged manifest: %v", k, err)
		}
	}
	if s := get[domain.Service](f, a.ID); !s.PrunedAt.IsZero() {
		t.Errorf("retention recorded as done (pruned at %v)", s.PrunedAt)
	}
}
