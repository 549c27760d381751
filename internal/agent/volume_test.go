package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/volume"
)

// TestVolumeNode runs a real node on its encrypted volume: its data
// directory is on an ext4 mount backed by a loop device (over FUSE, or
// dm-crypt), a row written and checkpointed is not in the container file
// in clear, the key is in no file under the agent's directory, a stopped
// and restarted agent adopts the served volume while PostgreSQL keeps
// serving, and the wipe leaves no mount, no loop device and no file.
func TestVolumeNode(t *testing.T) {
	requirePostgres(t)
	testenv.MustHaveCommand(t, "mkfs.ext4")
	losetup := testenv.MustHaveCommand(t, "losetup")
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "needs %s: %v", p, err)
		}
	}
	exe, err := os.Executable() // runs as moat: see main_test.go
	if err != nil {
		t.Fatal(err)
	}
	pair := netnstest.NewPair(t, 0)
	dir := dataDir(t)
	cs := newCerts(t)
	const host, nodeID = "host-1", "nod-vol1"
	container := filepath.Join(dir, "volumes", nodeID+volumeExt)
	mnt := filepath.Join(dir, "volumes", nodeID)
	pgdata := filepath.Join(mnt, "pgdata")
	t.Cleanup(func() { // before dataDir's: whatever a failure left
		in, err := postgres.New(postgres.Config{DataDir: pgdata, TLSDir: filepath.Join(dir, "nodes", nodeID, "tls"),
			SocketDir: filepath.Join(dir, "nodes", nodeID, "run"), LogFile: filepath.Join(dir, "nodes", nodeID, "postgres.log"),
			ServerCertPEM: []byte("unused"), ServerKeyPEM: []byte("unused"), User: nodeUserOrPostgres(nodeID)})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			in.Stop(ctx)
			cancel()
		}
		if err := volume.Destroy(container, mnt); err != nil {
			t.Errorf("clean up the volume: %v", err)
		}
		// The agent made its volumes directory a shared mount of itself.
		if err := unix.Unmount(filepath.Join(dir, "volumes"), unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the volumes directory: %v", err)
		}
	})

	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{{
			NodeID: nodeID, ServiceID: "svc-1", ProjectID: "prj-1", Role: apitype.RolePrimary, State: stateCreating,
			Namespace: pair.Server.Name, Address: pair.ServerV4.String(), Port: 5432,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS:     cs.node(t, nodeID, "n1.svc.test", pair.ServerV4.String()),
			AllowV4: []string{pair.ClientV4.String() + "/32"}, AllowlistRevision: 1,
		}}
	})
	cfg := Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true,
		MoatBinary: exe, VolumeSize: 256 << 20}
	var keyMu sync.Mutex
	var key []byte
	t0 := time.Now()
	stop := startAgentWith(t, cfg, func(a *Agent) {
		a.onVolumeKey = func(_ string, k []byte) {
			keyMu.Lock()
			key = bytes.Clone(k)
			keyMu.Unlock()
		}
	})
	rep := src.waitReport(t, nodeID, 2*time.Minute, running(1))
	t.Logf("node with a volume running after %v (volume %+v)", time.Since(t0), rep.Volume)
	if v := rep.Volume; v == nil || v.Format != "LUKS2" || v.Cipher != "aes-xts-plain64" || v.Size <= 0 || v.Used <= 0 || v.Full {
		t.Errorf("report's volume %+v, want LUKS2 aes-xts-plain64 with a size and some use, not full", rep.Volume)
	}

	// The data directory is on the volume's ext4, over a loop device or
	// a dm-crypt mapping.
	source, fstype := mountOf(t, mnt)
	if fstype != "ext4" || !(strings.HasPrefix(source, "/dev/loop") || strings.HasPrefix(source, "/dev/mapper/moat-")) {
		t.Errorf("%s is mounted from %s (%s), want ext4 on a loop device or a dm-crypt mapping", mnt, source, fstype)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); err != nil {
		t.Errorf("the cluster is not on the volume: %v", err)
	}

	// A marker row, checkpointed, is on the volume but not in the file.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	marker := "moat-marker-" + rand.Text()
	conn := mgmt(ctx, t, dir, nodeID, postgres.Database)
	for _, q := range []string{"CREATE TABLE marker (v text)", "INSERT INTO marker VALUES ('" + marker + "')", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw, err := os.ReadFile(container)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(marker)) {
		t.Errorf("the marker row is in clear in the container file")
	}
	if !onVolume(t, pgdata, marker) {
		t.Errorf("the marker row is not in the cluster's files: the check above proves nothing")
	}

	// The key is in no file under the agent's directory.
	keyMu.Lock()
	k := key
	keyMu.Unlock()
	if len(k) != volume.KeySize {
		t.Fatalf("key seen by the test hook: %d bytes, want %d", len(k), volume.KeySize)
	}
	forms := [][]byte{k[:32], k[32:], []byte(hex.EncodeToString(k[:32])), []byte(hex.EncodeToString(k[32:])),
		[]byte(base64.StdEncoding.EncodeToString(k[:30])), []byte(base64.StdEncoding.EncodeToString(k[33:63]))}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil // a file removed meanwhile
		}
		for _, f := range forms {
			if bytes.Contains(b, f) {
				t.Errorf("the volume key is in %s", p)
				break
			}
		}
		return nil
	})

	// The agent stops (an upgrade): the volume's server and PostgreSQL
	// run on; a new agent adopts the volume.
	pid := pidOf(t, pgdata)
	stop()
	if _, served, err := (&hostVolumes{}).Served(container, mnt); err != nil || !served {
		t.Fatalf("agent stopped: volume served %v (%v), want served", served, err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM marker").Scan(&one); err != nil || one != 1 {
		t.Fatalf("agent stopped: marker rows %d (%v), want 1", one, err)
	}
	src.mu.Lock()
	delete(src.reports, nodeID)
	src.mu.Unlock()
	startAgent(t, Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true,
		MoatBinary: exe, VolumeSize: 256 << 20}, nil)
	rep = src.waitReport(t, nodeID, time.Minute, running(1))
	if rep.Volume == nil {
		t.Errorf("adopted volume not reported")
	}
	if got := pidOf(t, pgdata); got != pid {
		t.Errorf("postmaster %d after the agent's restart, want %d (adopted, not restarted)", got, pid)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM marker").Scan(&one); err != nil || one != 1 {
		t.Fatalf("agent restarted: marker rows %d (%v), want 1", one, err)
	}
	conn.Close(ctx)

	// Deleted: nothing mounted or attached, no file.
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateDeleting })
	src.waitReport(t, nodeID, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), filepath.Join(dir, "volumes")+"/") {
		t.Errorf("a volume's mount is left after the wipe:\n%s", mounts)
	}
	out, err := exec.Command(losetup, "-a").CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -a: %v: %s", err, out)
	}
	if strings.Contains(string(out), filepath.Join(dir, "volumes")) {
		t.Errorf("a loop device is left after the wipe:\n%s", out)
	}
	for _, p := range []string{container, mnt, container + ".fuse"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after the wipe: %v, want it gone", p, err)
		}
	}
}

// mountOf returns the source and type of what is mounted at dir.
func mountOf(t *testing.T, dir string) (source, fstype string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) > 4 && len(g) > 1 && f[4] == real {
			source, fstype = g[1], g[0]
		}
	}
	return source, fstype
}

// onVolume reports whether a file under dir holds s.
func onVolume(t *testing.T, dir, s string) bool {
	t.Helper()
	found := false
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
			found = true
		}
		return nil
	})
	return found
}

// pidOf returns the postmaster's PID from pgdata's postmaster.pid.
func pidOf(t *testing.T, pgdata string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
