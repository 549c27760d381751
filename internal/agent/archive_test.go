package agent

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
)

// TestArchiveStatus: a primary archives its WAL into the store (encrypted,
// through the agent's socket: the node's user can neither read nor
// write the store), and when the store stops taking files the agent's
// report says archiving is failing, then recovers.
func TestArchiveStatus(t *testing.T) {
	t.Parallel()
	requirePostgres(t)
	pair := netnstest.NewPair(t, 1)
	dir := dataDir(t)
	cs := newCerts(t)
	key, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := backup.MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := backup.MarshalPrivateKeyPEM(key)
	authKey, err := backup.AuthKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	const host, nodeID = "host-a", "nod-arch"
	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{{
			NodeID: nodeID, ServiceID: "svc-arch", ProjectID: "prj-1", Role: apitype.RolePrimary, State: stateCreating,
			Namespace: pair.Server.Name, Address: pair.ServerV4.String(), Port: 5432,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS: cs.node(t, nodeID, "a.svc.test", pair.ServerV4.String()), AllowlistRevision: 1,
			BackupPublicKeyPEM: string(pub), BackupAuthKey: authKey, Archive: &apitype.NodeArchive{Region: "us-east-1", StoreDir: store},
		}}
	})
	exe, err := os.Executable() // runs as moat: see main_test.go
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true, MoatBinary: exe}
	startAgentWith(t, cfg, func(a *Agent) { a.archiveEvery = 50 * time.Millisecond })
	src.waitReport(t, nodeID, 30*time.Second, running(1))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn := mgmt(ctx, t, dir, nodeID, "postgres")
	switchWAL := func() string {
		t.Helper()
		if _, err := conn.Exec(ctx, "BEGIN; SELECT pg_current_xact_id(); COMMIT"); err != nil {
			t.Fatal(err) // WAL to switch away from
		}
		var seg string
		if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
			t.Fatal(err)
		}
		return seg
	}
	seg := switchWAL()
	rep := src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool {
		return r.Archive != nil && r.Archive.LastArchivedWAL >= seg && !r.Archive.Failing
	})
	if rep.Archive.LastArchivedAt.IsZero() {
		t.Errorf("archive status without a time: %+v", rep.Archive)
	}
	walFile := filepath.Join(store, "us-east-1", "svc-arch", "00000001", "wal", seg)
	if b, err := os.ReadFile(walFile); err != nil || len(b) < 6 || string(b[:4]) != "moat" {
		t.Fatalf("archived %s: %v, starts %q, want a moat1 file", walFile, err, b[:min(len(b), 8)])
	}
	// Archived by the agent with a record the service's key authenticates.
	rc := &archive.Config{Version: archive.ConfigVersion, Store: archive.StoreConfig{Dir: store}, Region: "us-east-1", Service: "svc-arch",
		Timeline: 1, PublicKey: string(pub), PrivateKey: key, AuthKey: authKey}
	if err := archive.FetchTo(ctx, rc, seg, io.Discard); err != nil {
		t.Errorf("FetchTo(%s) with the service's keys: %v", seg, err)
	}
	// The node's user can neither write nor read the store.
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(store); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("store %v, %v: want root's, mode 0700", fi.Mode(), err)
		}
		for _, script := range []string{"echo x > " + store + "/planted", "ls " + store, "echo x > " + walFile} {
			sh := exec.Command("/bin/sh", "-c", script)
			_, uid, gid, err := lookupUser("postgres")
			if err != nil {
				t.Fatal(err)
			}
			sh.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
			if out, err := sh.CombinedOutput(); err == nil {
				t.Errorf("as the postgres user, %q succeeded (%s): nodes reach the store", script, out)
			}
		}
	}

	// The store refuses new files: the report says archiving fails. (The
	// agent is root: a file where its directory should be stops it.)
	if err := os.RemoveAll(filepath.Join(store, "us-east-1")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "us-east-1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	failed := switchWAL()
	t.Cleanup(func() {
		if t.Failed() {
			b, err := os.ReadFile(filepath.Join(dir, "nodes", nodeID, "postgres.log"))
			if err != nil {
				t.Logf("postgres.log: %v", err)
			}
			t.Logf("postgres.log:\n%s", b[max(len(b)-3000, 0):])
			src.mu.Lock()
			t.Logf("last archive status: %+v", src.reports[nodeID].Archive)
			src.mu.Unlock()
		}
	})
	rep = src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool {
		return r.Archive != nil && r.Archive.Failing
	})
	if rep.Archive.LastFailedWAL != failed || rep.Archive.LastFailedAt.IsZero() {
		t.Errorf("failing archive status = %+v, want %s failed", rep.Archive, failed)
	}

	// Writable again: the next switch wakes the archiver, which catches up.
	if err := os.Remove(filepath.Join(store, "us-east-1")); err != nil {
		t.Fatal(err)
	}
	next := switchWAL()
	src.waitReport(t, nodeID, 60*time.Second, func(r apitype.NodeReport) bool {
		return r.Archive != nil && !r.Archive.Failing && r.Archive.LastArchivedWAL >= next
	})
}
