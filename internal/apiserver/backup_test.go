package apiserver_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
)

// TestBackupsUnavailable: without a backup store the routes say so.
func TestBackupsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	for _, m := range []string{"GET", "POST"} {
		r := e.do(m, "/v1/projects/"+p+"/services/"+svc.ID+"/backups", admin, nil)
		if r.Status != 501 || r.Problem.Code != "backups_unavailable" {
			t.Errorf("%s backups without a store = %d %s", m, r.Status, r.Body)
		}
	}
}

// TestBackupOperationAndRestorePlan: a backup request is one operation
// (a second one returns it), its node task's report finishes it, a report
// of someone else's task is refused; a restore is planned from the
// manifests in the store and refused, naming the field, when it cannot be.
func TestBackupOperationAndRestorePlan(t *testing.T) {
	t.Parallel()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var keys apiserver.Sealer
	e := newEnvWith(t, func(c *apiserver.Config) { c.Backups, c.BackupDir, keys = dir, "/backups", c.Keys })
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	office := []apitype.AllowEntry{{CIDR: "203.0.113.0/24", Description: "office"}}
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1", AllowedIPs: office})
	path := "/v1/projects/" + p + "/services/" + svc.ID + "/backups"

	r := e.do("POST", path, admin, nil)
	if r.Status != 409 || !strings.Contains(r.Problem.Detail, "only a running service is backed up") {
		t.Fatalf("backup of a creating service = %d %s", r.Status, r.Body)
	}
	setState[domain.Service](e, svc.ID, domain.StateRunning)
	var op, again apitype.Operation
	e.must(202, &op, "POST", path, admin, nil)
	e.must(202, &again, "POST", path, admin, nil)
	if op.Type != "service.backup" || op.State != "pending" || again.ID != op.ID {
		t.Fatalf("backup operations %+v then %+v, want one pending service.backup", op, again)
	}

	// The primary's agent reports the task done, with the backup.
	ctx := context.Background()
	var node *domain.Node
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		ns, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil {
			return err
		}
		node = ns[0]
		node.Host, node.Address = "h1", "198.18.0.7"
		return store.Put(ctx, tx, node)
	}); err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 23, 9, 0, 5, 0, time.UTC)
	report := func(task apitype.TaskReport) resp {
		return e.do("POST", "/v1/hosts/h1/report", agent, apitype.HostReport{Nodes: []apitype.NodeReport{
			{NodeID: node.ID, Revision: 1, State: apitype.NodeReportRunning, Tasks: []apitype.TaskReport{task}}}})
	}
	if r := report(apitype.TaskReport{ID: "op-someoneelse123", State: apitype.TaskDone}); r.Status != 400 || r.Problem.Field != "nodes[0].tasks[0].id" {
		t.Errorf("report of an unknown task = %d %s", r.Status, r.Body)
	}
	if r := report(apitype.TaskReport{ID: op.ID, State: apitype.TaskDone, Backup: &apitype.Backup{Label: "20261123T090000Z", EndTime: end}}); r.Status != 204 {
		t.Fatalf("task report = %d %s", r.Status, r.Body)
	}
	e.must(200, &op, "GET", "/v1/projects/"+p+"/operations/"+op.ID, admin, nil)
	if op.State != "succeeded" || op.BackupLabel != "20261123T090000Z" {
		t.Fatalf("backup operation after the report = %+v", op)
	}

	// A restore is planned from the store's manifests.
	var backups apitype.List[apitype.Backup]
	e.must(200, &backups, "GET", path, admin, nil)
	if len(backups.Items) != 0 {
		t.Fatalf("backups = %+v, want none in the store yet", backups.Items)
	}
	restore := func(name string, to *time.Time) resp {
		return e.do("POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: name, RestoreFrom: &apitype.RestoreFrom{ServiceID: svc.ID, ToTime: to}})
	}
	if r := restore("r0", nil); r.Status != 409 || r.Problem.Code != "no_backup" || r.Problem.Field != "restore_from.service_id" {
		t.Errorf("restore without a backup = %d %s", r.Status, r.Body)
	}
	start := end.Add(-5 * time.Second)
	key, _ := objstore.Key("us-east-1", svc.ID, 1, objstore.KindBase, "20261123T090000Z.tar")
	privPEM := setKey(t, e, keys, svc.ID)
	// A manifest the service's key does not authenticate is refused.
	mj, _ := json.Marshal(archive.Backup{Label: "20261123T090000Z", Timeline: 1, StartTime: start, EndTime: end, Object: key})
	if err := dir.Put(ctx, strings.TrimSuffix(key, ".tar")+".json", strings.NewReader(string(mj))); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", path, admin, nil); r.Status != 500 || r.Problem.Code != "backup_store_untrusted" {
		t.Errorf("listing with a forged manifest = %d %s, want 500", r.Status, r.Body)
	}
	ak, err := backup.AuthKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.StoreManifest(ctx, &archive.Config{Region: "us-east-1", Service: svc.ID, ObjectStore: dir, AuthKey: ak},
		archive.Backup{Label: "20261123T090000Z", Timeline: 1, StartTime: start, EndTime: end, Object: key}); err != nil {
		t.Fatal(err)
	}
	e.must(200, &backups, "GET", path, admin, nil)
	if len(backups.Items) != 1 || !backups.Items[0].EndTime.Equal(end) {
		t.Fatalf("backups = %+v", backups.Items)
	}
	early := end.Add(-time.Minute)
	if r := restore("r1", &early); r.Status != 400 || r.Problem.Code != "before_first_backup" || r.Problem.Field != "restore_from.to_time" {
		t.Errorf("restore before the first backup = %d %s", r.Status, r.Body)
	}
	later := end.Add(time.Minute)
	var restored apitype.Service
	e.must(201, &restored, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "r2", RestoreFrom: &apitype.RestoreFrom{ServiceID: svc.ID, ToTime: &later}})
	if restored.Region != "us-east-1" || restored.AdminPassword == "" {
		t.Errorf("restored service = %+v", restored)
	}
	if len(restored.AllowedIPs) != 1 || restored.AllowedIPs[0] != office[0] {
		t.Errorf("restored service's allowlist = %+v, want the source's %+v", restored.AllowedIPs, office)
	}
	var ops apitype.List[apitype.Operation]
	e.must(200, &ops, "GET", "/v1/projects/"+p+"/operations?target_id="+restored.ID, admin, nil)
	if len(ops.Items) != 1 || ops.Items[0].Type != "service.restore" || ops.Items[0].SourceID != svc.ID || ops.Items[0].BackupLabel != "20261123T090000Z" {
		t.Errorf("restore operations = %+v", ops.Items)
	}
	e.must(200, &ops, "GET", "/v1/projects/"+p+"/operations?target_id="+svc.ID, admin, nil)
	switches := 0
	for _, o := range ops.Items {
		if o.Type == "service.switch_wal" {
			switches++
		}
	}
	if switches != 1 {
		t.Errorf("WAL switches of the source = %d, want 1 (%+v)", switches, ops.Items)
	}
}

// setKey gives service id a backup key pair (package backup's test key,
// sealed with keys) and returns its private key.
func setKey(t *testing.T, e *env, keys apiserver.Sealer, id string) []byte {
	t.Helper()
	priv, err := os.ReadFile(filepath.Join("..", "backup", "testdata", "test-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		s, err := store.Get[domain.Service](ctx, tx, id)
		if err != nil {
			return err
		}
		s.BackupPublicKeyPEM, s.BackupKeySealed = "PUB", keys.Seal(priv, domain.BackupKeyAD(id))
		return store.Put(ctx, tx, s)
	}); err != nil {
		t.Fatal(err)
	}
	return priv
}
