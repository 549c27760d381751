package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/volume"
)

// TestVolumeNode runs a real node on its encrypted volume: its data
// directory is on an ext4 mount backed by a loop device (over FUSE, or
// dm-crypt), a row written and checkpointed is not in the container file
// in clear, the key is in no file under the agent's directory, a stopped
// and restarted agent adopts the served volume while PostgreSQL keeps
// serving, and the wipe leaves no mount, no loop device and no file.
func TestVolumeNode(t *testing.T) {
	losetup := mustHaveVolumeNodes(t)
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
	cleanVolumeNode(t, dir, nodeID)

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
	// The agents' logs go to the test's log and to logs, searched for
	// the key at the end.
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Host: host, Source: src, DataDir: dir, Logger: logger, NoSync: true,
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

	// The key is in no file under the agent's directory (its state, the
	// volume server's log, PostgreSQL's files and log, the volume's
	// file system), nor in the volume server's command line or
	// environment.
	keyMu.Lock()
	k := key
	keyMu.Unlock()
	if len(k) != volume.KeySize {
		t.Fatalf("key seen by the test hook: %d bytes, want %d", len(k), volume.KeySize)
	}
	files := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil // a file removed meanwhile
		}
		files++
		if hasKey(b, k) {
			t.Errorf("the volume key is in %s", p)
		}
		return nil
	})
	if files < 100 {
		t.Errorf("searched %d files for the key, want the node's whole tree", files)
	}
	server := volumeServerPID(t, container)
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", server, f))
		if err != nil {
			t.Fatal(err)
		}
		if hasKey(b, k) {
			t.Errorf("the volume key is in the volume server's %s", f)
		}
	}

	// The agent stops (an upgrade): the volume's server and PostgreSQL
	// run on, answering new connections throughout; a new agent adopts
	// the volume.
	pid := pidOf(t, pgdata)
	probed := probe(dir, nodeID)
	stop()
	if _, served, err := (&hostVolumes{}).Served(container, mnt); err != nil || !served {
		t.Fatalf("agent stopped: volume served %v (%v), want served", served, err)
	}
	probed.next(t)
	var one int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM marker").Scan(&one); err != nil || one != 1 {
		t.Fatalf("agent stopped: marker rows %d (%v), want 1", one, err)
	}
	src.mu.Lock()
	delete(src.reports, nodeID)
	src.mu.Unlock()
	startAgent(t, cfg, nil)
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
	if n, err := probed.stop(); err != nil || n < 2 {
		t.Errorf("PostgreSQL while the agent stopped and restarted: %d connections, then %v; want every one to answer", n, err)
	} else {
		t.Logf("PostgreSQL answered all %d new connections while the agent stopped and restarted", n)
	}
	conn.Close(ctx)

	// Deleted: nothing mounted or attached, no file, and the header was
	// overwritten before the file went (seen through a second link).
	keep := filepath.Join(dir, "volumes", nodeID+".keep")
	if err := os.Link(container, keep); err != nil {
		t.Fatal(err)
	}
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateDeleting })
	src.waitReport(t, nodeID, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	assertVolumeGone(t, losetup, dir, nodeID)
	if f, err := os.Open(keep); err != nil {
		t.Error(err)
	} else {
		if _, err := volume.ReadHeader(f); !errors.Is(err, volume.ErrNotLUKS2) {
			t.Errorf("the wiped volume's header: ReadHeader = %v, want ErrNotLUKS2 (overwritten)", err)
		}
		head := make([]byte, 16<<20) // both headers and the keyslot area
		if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, make([]byte, len(head))) {
			t.Errorf("the wiped volume's first 16 MiB are not all zeros (%v)", err)
		}
		f.Close()
	}

	// Nor did either agent log it, from the volume's creation to its wipe.
	if l := logs.String(); !strings.Contains(l, "volume destroyed") {
		t.Errorf("the agents' log has no volume destroyed line: the search proves nothing")
	} else if hasKey([]byte(l), k) {
		t.Errorf("the volume key is in the agents' log")
	}
}

// hasKey reports whether b holds a key in any form: raw, hex or base64,
// either half of it.
func hasKey(b, key []byte) bool {
	for _, f := range [][]byte{key[:32], key[32:],
		[]byte(hex.EncodeToString(key[:32])), []byte(hex.EncodeToString(key[32:])),
		[]byte(base64.StdEncoding.EncodeToString(key[:30])), []byte(base64.StdEncoding.EncodeToString(key[33:63])),
		[]byte(base64.RawURLEncoding.EncodeToString(key[:30])), []byte(base64.RawURLEncoding.EncodeToString(key[33:63]))} {
		if bytes.Contains(b, f) {
			return true
		}
	}
	return false
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// prober connects to a node's PostgreSQL and queries it every 20 ms.
type prober struct {
	answered chan struct{} // a probe succeeded
	stop     func() (int, error)
}

// probe starts a prober of node's PostgreSQL. Its stop function ends it
// and returns the number of probes and the first failure (probing stops
// there).
func probe(dir, nodeID string) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	p := &prober{answered: make(chan struct{}, 1)}
	go func() {
		var r result
		defer func() { done <- r }()
		cfg, err := pgx.ParseConfig("sslmode=disable")
		if err != nil {
			r.err = err
			return
		}
		cfg.Host, cfg.Port, cfg.User, cfg.Database = filepath.Join(dir, "nodes", nodeID, "run"), 5432, "postgres", postgres.Database
		cfg.ConnectTimeout = 5 * time.Second
		for ; ; r.n++ {
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				var one int
				err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
				conn.Close(context.Background())
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.err = fmt.Errorf("probe %d: %w", r.n+1, err)
				return
			}
			select {
			case p.answered <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	p.stop = func() (int, error) {
		cancel()
		r := <-done
		return r.n, r.err
	}
	return p
}

// next waits for a probe that starts after the call to succeed.
func (p *prober) next(t *testing.T) {
	t.Helper()
	for range 2 { // the first may have started before
		select {
		case <-p.answered:
		case <-time.After(10 * time.Second):
			t.Errorf("PostgreSQL did not answer a probe within 10s")
			return
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
