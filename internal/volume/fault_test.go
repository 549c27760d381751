package volume

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDestroyHungServer: a server that does not answer (stopped here,
// with dirty data in its file system that the unmount must flush) is
// found by Check, and does not hold the wipe up: Destroy kills it after
// its grace, the unmount's I/O fails, and nothing is left mounted,
// attached or on disk.
func TestDestroyHungServer(t *testing.T) {
	mustHaveVolumeHost(t)
	if HasDeviceMapper() {
		t.Skip("device-mapper present: the kernel serves the volume, there is no userspace server to hang")
	}
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, testSize)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, container, mnt, key, true, EngineUserspace)
	devs := loopsBacking(filepath.Join(fuseDir(container), dataName))
	if err := os.WriteFile(filepath.Join(mnt, "dirty"), bytes.Repeat([]byte("d"), 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if pids, err := lockHolders(container); err != nil || !slices.Equal(pids, []int{s.cmd.Process.Pid}) {
		t.Fatalf("lockHolders = %v, %v; want the server %d", pids, err, s.cmd.Process.Pid)
	}
	if err := Check(container, 5*time.Second); err != nil {
		t.Fatalf("Check of a served volume: %v", err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Signal(syscall.SIGCONT) })
	waitStopped(t, s.cmd.Process.Pid)
	if err := Check(container, 500*time.Millisecond); !errors.Is(err, ErrUnresponsive) {
		t.Fatalf("Check of a stopped server = %v, want ErrUnresponsive", err)
	}

	const grace = time.Second
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- destroy(container, mnt, grace) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Destroy with a stopped server: %v", err)
		}
		t.Logf("Destroy with a stopped server took %v (grace %v)", time.Since(t0).Round(time.Millisecond), grace)
	case <-time.After(grace + 30*time.Second):
		s.cmd.Process.Signal(syscall.SIGCONT) // lets Destroy and the test end
		t.Fatalf("Destroy hangs on a stopped server: %v", <-done)
	}
	if err := <-s.exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("server exit = %v, want killed", err)
	}
	s.exited <- nil // for the cleanup
	assertNothingLeft(t, container, mnt, devs[0])
	if _, err := os.Stat(container); !os.IsNotExist(err) {
		t.Errorf("container after Destroy: %v, want it gone", err)
	}
}

// waitStopped waits until every thread of process pid is stopped (a
// signal's delivery is asynchronous).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(stats) > 0
		for _, s := range stats {
			b, err := os.ReadFile(s)
			i := bytes.LastIndexByte(b, ')')
			if err == nil && i > 0 && i+2 < len(b) && b[i+2] != 'T' {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped 10s after SIGSTOP", pid)
		}
	}
}

// TestLockHoldersNotSelf: the only holder being this process (Destroy's
// own lock, the agent's probe), nothing is killed.
func TestLockHoldersNotSelf(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "vol")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	pids, err := lockHolders(path)
	if err != nil || !slices.Equal(pids, []int{os.Getpid()}) {
		t.Fatalf("lockHolders = %v, %v; want this process %d", pids, err, os.Getpid())
	}
	if err := killServer(path); err != nil { // were it to kill this process, the test would not pass
		t.Fatalf("killServer: %v", err)
	}
}
