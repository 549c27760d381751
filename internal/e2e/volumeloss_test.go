package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/up"
	"github.com/moatdb/moat/internal/volume"
)

// Volume loss on a 3-node service (issue 12, docs/design/0011 "Faults"):
// every node runs on its own encrypted volume served by its own
// userspace server; the primary's server is killed (SIGKILL) while a
// writer commits one row per transaction. The volume's I/O fails at once
// (PostgreSQL's next write PANICs), the node is failed with volume_lost
// and fenced (what runs on the volume killed), the control plane fails
// over to a
// replica and replaces the lost node by a new one (new ID, new volume
// with a new key), the service runs again with every acknowledged row,
// and the old volume is wiped: nothing of it is mounted or attached.

// TestPrimaryVolumeLost runs the scenario on one stack of us-east-1 with
// one host per AZ (the replacement goes to the lost node's host, healthy
// but for that volume).
func TestPrimaryVolumeLost(t *testing.T) {
	t.Parallel()
	losetup := testenv.MustHaveCommand(t, "losetup")
	if volume.HasDeviceMapper() {
		t.Skip("device-mapper present: the kernel holds the volume's key, there is no userspace server to kill")
	}
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	e := startStack(t, "", "", func(c *up.Config) {
		c.ControlPlane.Failover = fastFailover
		c.ControlPlane.Catalog = domain.Catalog{Regions: []domain.Region{{Code: "us-east-1", AZs: []string{"us-east-1a", "us-east-1b", "us-east-1c"}}}}
	})
	e.newProject("acme")
	created, pw := e.createService("ha", 3)
	svc := e.waitReplicated(created.ID, domain.ReplQuorum, 2)
	old := primaryNode(t, svc)
	vols := filepath.Join(up.AgentDir(e.dir, old.Host), "volumes")
	container, mnt := filepath.Join(vols, old.ID+".luks"), filepath.Join(vols, old.ID)
	oldDigest := keyDigest(t, container)
	original := map[string]bool{}
	for _, n := range svc.NodeList {
		original[n.ID] = true
	}
	phase("3 nodes streaming on encrypted volumes")

	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table w (id int primary key)"); r.code != 0 {
		t.Fatalf("create table: %v", r)
	}
	mh := e.multiHost(svc)
	w := e.startHAWriter(pw, func() string { return mh })
	waitFor(t, 30*time.Second, func() bool { return w.count() >= 20 })
	before := w.count()

	// PostgreSQL's log is outside the volume; the node's wipe removes
	// it, so it is read from the kill on.
	pglog := &logWatch{path: filepath.Join(up.AgentDir(e.dir, old.Host), "nodes", old.ID, "postgres.log"), stop: make(chan struct{}), done: make(chan struct{})}
	killed := time.Now()
	if err := volume.Kill(container); err != nil {
		t.Fatalf("kill the primary's volume server: %v", err)
	}
	go pglog.run()
	// The stack runs PostgreSQL with fsync off (fast tests): its WAL
	// writes stay in the page cache until ext4's next journal commit,
	// seconds away. Sync the file system now, as a commit's WAL flush
	// does in production: the journal aborts on the dead volume and
	// PostgreSQL's next write fails. From a child process: the agent's
	// fence kills whatever holds the lost volume open, this test too.
	out, err := syncFS(mnt)
	if err == nil || !(strings.Contains(string(out), "Input/output error") || strings.Contains(string(out), "Read-only file system")) {
		t.Errorf("sync -f on a volume whose server was killed: %v: %s; want an I/O error at once", err, out)
	}
	t.Logf("sync -f on the lost volume: %v: %s", err, out)
	phase("primary's volume server killed")

	// The node is failed with a clear reason.
	var lostInfo *apitype.StateInfo
	e.waitService(svc.ID, time.Minute, func(s apitype.Service) bool {
		for _, n := range s.NodeList {
			if n.ID == old.ID && n.StateInfo != nil && n.StateInfo.Code == domain.CodeVolumeLost {
				lostInfo = n.StateInfo
				return n.Volume != nil && n.Volume.Lost
			}
		}
		return false
	})
	phase("primary reported failed, volume lost")
	if lostInfo == nil || !strings.Contains(lostInfo.Message, "lost its key") {
		t.Errorf("lost primary's state info = %+v, want volume_lost saying its key is lost", lostInfo)
	}

	op := e.failoverOp(svc.ID, 2*time.Minute)
	if op.State != domain.StateSucceeded {
		t.Fatalf("failover operation = %+v, want succeeded", op)
	}
	phase("failed over")
	// Fenced: nothing runs on the lost volume any more (its PostgreSQL,
	// whose postmaster.pid is unreadable, was killed).
	waitFor(t, 30*time.Second, func() bool { return len(processesUnder(mnt)) == 0 })
	if pids := processesUnder(mnt); len(pids) > 0 {
		t.Errorf("processes %v still run on the lost volume after the failover", pids)
	}
	// The writer commits on the new primary. (Each commit may take the
	// connect timeout, 2 s: the multi-host string lists the fenced old
	// primary, whose closed firewall drops the connection, first.)
	waitFor(t, 2*time.Minute, func() bool { return w.count() >= before+5 })
	after := e.waitService(svc.ID, 3*time.Minute, func(s apitype.Service) bool {
		return left(s, old) && s.State == domain.StateRunning && s.Replication != nil && s.Replication.Mode == domain.ReplQuorum && streaming(s) == 2
	})
	phase("replaced: running on three streaming nodes")
	acked, gap, normal := w.halt()
	t.Logf("volume lost: %d rows acknowledged, the writer unavailable %v after the kill (longest gap %v, normal commit interval %v)",
		len(acked), w.longestGapSince(killed), gap, normal)
	if lost := e.lostRows(after, pw, "w", acked); lost > 0 {
		t.Errorf("%d of %d acknowledged rows lost", lost, len(acked))
	}
	if p := primaryNode(t, after); p.ID == old.ID {
		t.Errorf("primary still %s", old.ID)
	}
	e.checkReplaced(after, old, false)
	for _, n := range after.NodeList {
		if domain.Going(n.State) {
			continue
		}
		if n.Volume == nil || n.Volume.Format != volume.FormatName || n.Volume.Lost {
			t.Errorf("node %s's volume = %+v, want a served LUKS2 volume", n.ID, n.Volume)
		}
		if !original[n.ID] {
			// The replacement: its own volume, with a key of its own.
			file := filepath.Join(up.AgentDir(e.dir, n.Host), "volumes", n.ID+".luks")
			if d := keyDigest(t, file); d == oldDigest {
				t.Errorf("replacement %s's volume key digest = the lost node's (%s)", n.ID, d)
			}
		}
	}

	// What PostgreSQL logged of the dead volume: its next WAL write
	// PANICs with EIO or EROFS, unless the fence killed it first (when
	// no commit reached it in between); either way it acknowledged
	// nothing that is lost (checked above).
	t.Logf("PostgreSQL's I/O errors:\n%s", strings.Join(pglog.halt(), "\n"))

	// The old node's volume is wiped: nothing mounted, attached or left.
	e.waitWiped(old)
	waitFor(t, time.Minute, func() bool {
		_, err := os.Stat(container)
		return os.IsNotExist(err)
	})
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt, container + ".fuse"} {
		if strings.Contains(string(mounts), " "+p+" ") {
			t.Errorf("%s is still mounted after the wipe", p)
		}
	}
	if out, err := exec.Command(losetup, "-a").CombinedOutput(); err != nil {
		t.Errorf("losetup -a: %v: %s", err, out)
	} else if strings.Contains(string(out), container) {
		t.Errorf("a loop device is left on the lost node's volume after the wipe:\n%s", out)
	}
	phase("old volume wiped")
}

// processesUnder returns the processes whose working directory is under
// dir.
func processesUnder(dir string) []string {
	var pids []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if cwd, err := os.Readlink(filepath.Join("/proc", p.Name(), "cwd")); err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			pids = append(pids, p.Name())
		}
	}
	return pids
}

// syncFS syncs the file system mounted at dir (syncfs(2), by sync -f),
// for at most 30 s.
func syncFS(dir string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "sync", "-f", dir).CombinedOutput()
}

// keyDigest returns the key digest a LUKS2 container's header carries
// (its JSON area's "digest"): two volumes with one key would share it.
func keyDigest(t *testing.T, container string) string {
	t.Helper()
	f, err := os.Open(container)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 16<<10)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatalf("read %s's header: %v", container, err)
	}
	m := regexp.MustCompile(`"digest":\s*"([^"]+)"`).FindSubmatch(hdr)
	if m == nil {
		t.Fatalf("%s: no key digest in the LUKS2 header", container)
	}
	return string(m[1])
}

// logWatch keeps the I/O errors a PostgreSQL log shows while it exists.
type logWatch struct {
	path string
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	errs []string
}

func (l *logWatch) run() {
	defer close(l.done)
	for {
		if b, err := os.ReadFile(l.path); err == nil {
			var errs []string
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "Input/output error") || strings.Contains(line, "Read-only file system") {
					errs = append(errs, line)
				}
			}
			l.mu.Lock()
			if len(errs) > len(l.errs) {
				l.errs = errs
			}
			l.mu.Unlock()
		}
		select {
		case <-l.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// halt stops the watch and returns the I/O errors seen.
func (l *logWatch) halt() []string {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}
