package volume

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillUsers: the processes whose working directory or an open file
// is under the mountpoint are killed; another is not.
func TestKillUsers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(filepath.Join(mnt, "pgdata"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(cwd string, script string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = cwd
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	// exec: the shell itself holds the descriptor, then is sleep.
	inside := start(filepath.Join(mnt, "pgdata"), "exec sleep 60")
	holding := start(dir, "exec 3<"+filepath.Join(mnt, "f")+"; exec sleep 60")
	outside := start(dir, "exec sleep 60")
	// mnt's sibling with a common prefix is not on it.
	if err := os.MkdirAll(mnt+"2", 0o700); err != nil {
		t.Fatal(err)
	}
	sibling := start(mnt+"2", "exec sleep 60")
	// The shells must have run their redirections (exec'ed sleep).
	for _, c := range []*exec.Cmd{inside, holding, outside, sibling} {
		waitExec(t, c.Process.Pid, "sleep")
	}

	killed, err := KillUsers(mnt)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(killed)
	want := []int{inside.Process.Pid, holding.Process.Pid}
	slices.Sort(want)
	if !slices.Equal(killed, want) {
		t.Errorf("KillUsers killed %v, want %v (inside %d, holding a file %d; not outside %d, sibling %d)",
			killed, want, inside.Process.Pid, holding.Process.Pid, outside.Process.Pid, sibling.Process.Pid)
	}
	for _, c := range []*exec.Cmd{inside, holding} {
		if err := c.Wait(); err == nil {
			t.Errorf("process %d exited normally, want killed", c.Process.Pid)
		}
	}
	for _, c := range []*exec.Cmd{outside, sibling} {
		if err := syscall.Kill(c.Process.Pid, 0); err != nil {
			t.Errorf("process %d, not on the volume: %v", c.Process.Pid, err)
		}
	}
}

// waitExec waits until process pid runs the command name.
func waitExec(t *testing.T, pid int, name string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(comm)) == name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d does not run %s after 10s (comm %q, %v)", pid, name, comm, err)
		}
	}
}
