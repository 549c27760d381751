package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/volume"
)

// TestVolumeServerFaults kills the volume server of a node while its
// PostgreSQL writes: the writer gets an error, the node is reported
// failed with its volume lost (the form the fleet's replacement acts on),
// the agent goes on applying another node on the same host, and the
// failed node's wipe completes: nothing of it stays mounted, attached or
// on disk, so nothing hung on the dead volume. Then servers stop
// answering (SIGSTOP): a third node's, with its PostgreSQL's I/O waiting
// on it, as the node is deleted (the wipe kills the server and
// completes), and the other node's (the supervision kills it and reports
// that node's volume lost too).
func TestVolumeServerFaults(t *testing.T) {
	t.Parallel()
	losetup := mustHaveVolumeNodes(t)
	if volume.HasDeviceMapper() {
		t.Skip("device-mapper present: the kernel holds the key, there is no userspace server to kill")
	}
	pair, pair2 := netnstest.NewPair(t, 0), netnstest.NewPair(t, 0)
	dir := dataDir(t)
	cs := newCerts(t)
	const host, victim, bystander, frozen = "host-vk", "nod-vk1", "nod-vk2", "nod-vk3"
	cleanVolumeNode(t, dir, victim)
	cleanVolumeNode(t, dir, bystander)
	cleanVolumeNode(t, dir, frozen)
	node := func(id, svc string, ns *netnstest.NS, addr string) apitype.NodeDesired {
		return apitype.NodeDesired{
			NodeID: id, ServiceID: svc, ProjectID: "prj-vk", Role: apitype.RolePrimary, State: stateCreating,
			Namespace: ns.Name, Address: addr, Port: 5432,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS: cs.node(t, id+".svc.test", addr), AllowlistRevision: 1,
		}
	}
	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{
			node(victim, "svc-vk1", pair.Server, pair.ServerV4.String()),
			node(bystander, "svc-vk2", pair.Client, pair.ClientV4.String()),
			node(frozen, "svc-vk3", pair2.Server, pair2.ServerV4.String()),
		}
	})
	exe, err := os.Executable() // runs as moat: see main_test.go
	if err != nil {
		t.Fatal(err)
	}
	startAgentWith(t, Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true,
		MoatBinary: exe, VolumeSize: 256 << 20}, func(a *Agent) { a.volumeCheckTimeout = time.Second })
	src.waitReport(t, victim, 2*time.Minute, running(1))
	src.waitReport(t, bystander, 2*time.Minute, running(1))
	src.waitReport(t, frozen, 2*time.Minute, running(1))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	container := filepath.Join(dir, "volumes", victim+volumeExt)
	mnt := filepath.Join(dir, "volumes", victim)

	// A writer commits (each commit an fsync of the WAL through the
	// volume) until it fails.
	conn := mgmt(ctx, t, dir, victim, postgres.Database)
	if _, err := conn.Exec(ctx, "CREATE TABLE w (v text)"); err != nil {
		t.Fatal(err)
	}
	writeErr := make(chan error, 1)
	wrote := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			if _, err := conn.Exec(ctx, "INSERT INTO w SELECT repeat('x', 1000) FROM generate_series(1, 200)"); err != nil {
				writeErr <- err
				return
			}
			if i == 5 {
				close(wrote)
			}
		}
	}()
	select {
	case <-wrote:
	case err := <-writeErr:
		t.Fatalf("writer failed before the kill: %v", err)
	}
	pid := volumeServerPID(t, container)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the volume server: %v", err)
	}
	killed := time.Now()
	select {
	case err := <-writeErr:
		t.Logf("writer, %v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("writer hung 30s after the volume server was killed")
	}
	rep := src.waitReport(t, victim, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportFailed
	})
	t.Logf("node reported %s %v after the kill: %s", rep.State, time.Since(killed).Round(time.Millisecond), rep.Message)
	if !strings.Contains(rep.Message, "volume key lost") || rep.Volume == nil || !rep.Volume.Lost {
		t.Errorf("failed node's report: message %q, volume %+v; want the volume key lost", rep.Message, rep.Volume)
	}
	// The writer's first error may be ENOSPC (ext4 counts no free space
	// in groups whose bitmaps it cannot read); the WAL's next write, by
	// the WAL writer or this checkpoint, gets the I/O error.
	conn.Exec(ctx, "CHECKPOINT")
	var pg []byte
	var ioErrs []string
	for deadline := time.Now().Add(30 * time.Second); len(ioErrs) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if pg, err = os.ReadFile(filepath.Join(dir, "nodes", victim, "postgres.log")); err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(pg), "\n") {
			if strings.Contains(l, "Input/output error") || strings.Contains(l, "Read-only file system") {
				ioErrs = append(ioErrs, l)
			}
		}
	}
	if len(ioErrs) == 0 {
		t.Errorf("PostgreSQL's log shows no I/O error 30s after its volume server was killed:\n%s", pg)
	}
	t.Logf("PostgreSQL's I/O errors:\n%s", strings.Join(ioErrs, "\n"))

	// The agent goes on with the other node: a new allowlist revision is
	// applied, its PostgreSQL answers.
	src.update(func(d *apitype.HostDesired) { d.Nodes[1].AllowlistRevision = 2 })
	src.waitReport(t, bystander, time.Minute, running(2))
	var n int
	if err := mgmt(ctx, t, dir, bystander, postgres.Database).QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Errorf("the other node's PostgreSQL: %d, %v", n, err)
	}

	// The failed node's wipe: nothing of it is left mounted or attached,
	// which also proves no process of it hangs on the dead volume (a
	// process in D state would hold the file system busy).
	t.Cleanup(func() { // runs first: before the cleanups unmount anything
		if t.Failed() {
			t.Logf("processes in D state on the dead volume: %q", stuckOn(mnt))
		}
	})
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateDeleting })
	src.waitReport(t, victim, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	assertVolumeGone(t, losetup, dir, victim)
	if err := mgmt(ctx, t, dir, bystander, postgres.Database).QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Errorf("the other node's PostgreSQL after the wipe: %v", err)
	}

	// The third node's server stops answering while a writer syncs a
	// file on its volume (its I/O waits, in D state), and the node is
	// deleted: the wipe finds the server hung, kills it (the waiting I/O
	// fails instead of waiting for ever), stops PostgreSQL and completes.
	fpid := volumeServerPID(t, filepath.Join(dir, "volumes", frozen+volumeExt))
	if err := syscall.Kill(fpid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop the volume server: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(fpid, syscall.SIGCONT) }) // if it was not killed
	fwrite := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(dir, "volumes", frozen, "frozen"))
		if err == nil {
			_, err = f.Write(make([]byte, 1<<20))
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		fwrite <- err
	}()
	rev = src.update(func(d *apitype.HostDesired) { d.Nodes[2].State = stateDeleting })
	src.waitReport(t, frozen, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	select {
	case err := <-fwrite:
		if err == nil {
			t.Errorf("a file synced on a volume whose server was stopped")
		}
		t.Logf("writer on the frozen volume: %v", err)
	case <-time.After(30 * time.Second):
		t.Errorf("writer on the frozen volume still waits 30s after the node was wiped")
	}
	assertVolumeGone(t, losetup, dir, frozen)

	// The other node's server stops answering: the supervision's read
	// finds it within a second, the agent kills it (its I/O fails rather
	// than hangs, and it cannot resume) and reports the volume lost.
	pid = volumeServerPID(t, filepath.Join(dir, "volumes", bystander+volumeExt))
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop the volume server: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) }) // if it was not killed
	stopped := time.Now()
	rep = src.waitReport(t, bystander, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportFailed
	})
	t.Logf("node reported %s %v after its volume server stopped: %s", rep.State, time.Since(stopped).Round(time.Millisecond), rep.Message)
	if !strings.Contains(rep.Message, "volume key lost") || rep.Volume == nil || !rep.Volume.Lost {
		t.Errorf("hung server's node report: message %q, volume %+v; want the volume key lost", rep.Message, rep.Volume)
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && procState(string(stat)) != "Z" {
		t.Errorf("the stopped volume server still exists after its node failed: %s", stat)
	}
	rev = src.update(func(d *apitype.HostDesired) { d.Nodes[1].State = stateDeleting })
	src.waitReport(t, bystander, time.Minute, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	assertVolumeGone(t, losetup, dir, bystander)
}

// assertVolumeGone checks that nothing of node's volume is left after its
// wipe: no mount (/proc/mounts), no loop device (losetup -a), no file.
func assertVolumeGone(t *testing.T, losetup, dir, nodeID string) {
	t.Helper()
	container, mnt := filepath.Join(dir, "volumes", nodeID+volumeExt), filepath.Join(dir, "volumes", nodeID)
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
		t.Errorf("a loop device is left on %s's volume after the wipe:\n%s", nodeID, out)
	}
	for _, p := range []string{container, mnt, container + ".fuse", mnt + ".log"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the wipe: %v, want it gone", p, err)
		}
	}
}

// volumeParentEnv makes the test binary a stand-in agent process: it
// starts a volume server as the agent does (hostVolumes.Create), says
// "ready" and waits to be killed.
const volumeParentEnv = "MOAT_AGENT_TEST_VOLUME_PARENT"

func init() {
	// Before TestMain: this process is the stand-in agent, not a test run.
	if v := os.Getenv(volumeParentEnv); v != "" {
		os.Exit(volumeParent(v))
	}
}

func volumeParent(v string) int {
	os.Unsetenv(volumeParentEnv)  // the server is this binary too
	args := strings.Split(v, "|") // data dir|container|mountpoint|moat binary
	h := &hostVolumes{a: &Agent{cfg: Config{DataDir: args[0], MoatBinary: args[3]}}}
	if err := h.Create(context.Background(), args[1], args[2], 64<<20); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until killed (or the test is gone)
	return 0
}

// TestVolumeServerOutlivesKilledAgent: an agent process killed with
// SIGKILL (no cleanup of its own) leaves its volume servers serving: each
// is in its own session, needs nothing more from its parent once its
// file system is mounted, and goes on reparented; the volume is still
// served and readable and writable, and its wipe ends the server.
func TestVolumeServerOutlivesKilledAgent(t *testing.T) {
	t.Parallel()
	mustHaveVolumes(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	const nodeID = "nod-orphan"
	cleanVolumeNode(t, dir, nodeID)
	container, mnt := filepath.Join(dir, "volumes", nodeID+volumeExt), filepath.Join(dir, "volumes", nodeID)
	if err := mkdir0711(filepath.Join(dir, "volumes")); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(exe, "-test.run=^$")
	agent.Env = append(os.Environ(), volumeParentEnv+"="+strings.Join([]string{dir, container, mnt, exe}, "|"))
	var stderr strings.Builder
	agent.Stderr = &stderr
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("stand-in agent: %q: %s", line, stderr.String())
	}
	server := volumeServerPID(t, container)
	if got := ppid(t, server); got != agent.Process.Pid {
		t.Fatalf("volume server's parent is %d, want the agent %d", got, agent.Process.Pid)
	}
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.Wait()

	if got := ppid(t, server); got == agent.Process.Pid {
		t.Fatalf("volume server's parent is still the killed agent %d", got)
	}
	if _, served, err := (&hostVolumes{}).Served(container, mnt); err != nil || !served {
		t.Fatalf("agent killed: volume served %v (%v), want served", served, err)
	}
	f := filepath.Join(mnt, "after-kill")
	if err := os.WriteFile(f, []byte("still here"), 0o600); err != nil {
		t.Fatalf("agent killed: write to the volume: %v", err)
	}
	if b, err := os.ReadFile(f); err != nil || string(b) != "still here" {
		t.Fatalf("agent killed: read back %q, %v", b, err)
	}

	if err := (&hostVolumes{}).Destroy(container, mnt); err != nil {
		t.Fatal(err)
	}
	// Destroy waited for the server to let go of the container; it is
	// gone (or a zombie its new parent has not reaped yet).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", server))
		if err != nil || procState(string(stat)) == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume server %d still runs 10s after the wipe: %s", server, stat)
		}
	}
}

// ppid returns the parent of process pid.
func ppid(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(stat[strings.LastIndexByte(string(stat), ')'):]), " ")
	fields := strings.Fields(after) // state ppid ...
	p, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// procState returns the state letter of a /proc/PID/stat line (its
// command name may hold spaces and parentheses).
func procState(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return ""
	}
	return stat[i+2 : i+3]
}

// mustHaveVolumeNodes ends t unless the host can run nodes on volumes
// served from userspace (or by dm-crypt); it returns losetup's path.
func mustHaveVolumeNodes(t *testing.T) string {
	t.Helper()
	requirePostgres(t)
	return mustHaveVolumes(t)
}

// mustHaveVolumes ends t unless the host can serve volumes; it returns
// losetup's path.
func mustHaveVolumes(t *testing.T) string {
	t.Helper()
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "mkfs.ext4")
	losetup := testenv.MustHaveCommand(t, "losetup")
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "needs %s: %v", p, err)
		}
	}
	return losetup
}

// cleanVolumeNode registers a cleanup, run before dataDir's, that stops
// the PostgreSQL a failure left on node's volume and destroys the volume.
// Call it once per node; the last call also unmounts the volumes
// directory the agent made a shared mount of itself.
func cleanVolumeNode(t *testing.T, dir, nodeID string) {
	volumes := filepath.Join(dir, "volumes")
	t.Cleanup(func() {
		if err := unix.Unmount(volumes, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount the volumes directory: %v", err)
		}
	})
	container, mnt := filepath.Join(volumes, nodeID+volumeExt), filepath.Join(volumes, nodeID)
	t.Cleanup(func() {
		nd := filepath.Join(dir, "nodes", nodeID)
		in, err := postgres.New(postgres.Config{DataDir: filepath.Join(mnt, "pgdata"), TLSDir: filepath.Join(nd, "tls"),
			SocketDir: filepath.Join(nd, "run"), LogFile: filepath.Join(nd, "postgres.log"),
			ServerCertPEM: []byte("unused"), ServerKeyPEM: []byte("unused"), User: nodeUserOrPostgres(nodeID)})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			in.Stop(ctx)
			cancel()
		}
		if err := volume.Destroy(container, mnt); err != nil {
			t.Errorf("clean up the volume of %s: %v", nodeID, err)
		}
	})
}

// volumeServerPID returns the PID of the `moat volume serve` process of
// container.
func volumeServerPID(t *testing.T, container string) int {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil {
			continue // exited meanwhile
		}
		args := strings.Split(string(b), "\x00")
		if slices.Contains(args, "serve") && slices.Contains(args, container) {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(c)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("no volume server for %s", container)
	return 0
}

// stuckOn returns the processes in uninterruptible sleep (D) whose
// working directory is under dir.
func stuckOn(dir string) []string {
	var stuck []string
	cwds, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, c := range cwds {
		cwd, err := os.Readlink(c)
		if err != nil || !strings.HasPrefix(cwd, dir) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(c), "stat"))
		if err != nil {
			continue
		}
		if procState(string(stat)) == "D" {
			stuck = append(stuck, string(stat))
		}
	}
	return stuck
}
