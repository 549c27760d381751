package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnresponsive is returned by Check when the volume's server does not
// answer in time.
var ErrUnresponsive = errors.New("volume server does not answer")

// Check reads the first sector of the volume's data through its server
// and returns an error wrapping ErrUnresponsive if no answer comes within
// timeout (the server is stopped or hung; the read goes on in the
// background until it answers or is killed). With dm-crypt the kernel
// serves the volume: Check returns nil.
func Check(container string, timeout time.Duration) error {
	if _, ok := dmMapping(container); ok {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		// Opening goes through the server too (lookup, open).
		f, err := os.Open(filepath.Join(fuseDir(container), dataName))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = f.ReadAt(make([]byte, SectorSize), 0)
		done <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("check volume: %w", err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("check volume %s: %w within %v", container, ErrUnresponsive, timeout)
	}
}

// Kill kills the volume's server (the process holding the container's
// lock), if there is one, and waits until it has let go of the lock: its
// key, and so the volume, are lost. The kernel aborts its FUSE
// connection, so I/O on the volume fails at once instead of waiting.
// Destroy cleans up what is left.
func Kill(container string) error {
	if err := killServer(container); err != nil {
		return err
	}
	return waitUnlocked(container, detachTimeout)
}

// KillUsers kills (SIGKILL) every process but this one whose working
// directory, root or an open file is on the file system mounted at
// mountpoint, and returns their pids. It is for a volume whose key is
// lost: what runs on it can never write again (a PostgreSQL answers
// from memory until its next write fails), is never to be restarted on
// it, and would keep the file system busy so that the wipe cannot
// unmount it. /proc's links name paths without reading the volume, so
// this never waits on a dead server.
func KillUsers(mountpoint string) ([]int, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	abs = resolveParent(abs)
	on := func(link string) bool {
		p, err := os.Readlink(link)
		return err == nil && (p == abs || strings.HasPrefix(p, abs+"/"))
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("kill the volume's users: %w", err)
	}
	var killed []int
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		uses := on(filepath.Join(dir, "cwd")) || on(filepath.Join(dir, "root"))
		if !uses {
			fds, _ := os.ReadDir(filepath.Join(dir, "fd")) // gone meanwhile: nothing to kill
			for _, fd := range fds {
				if on(filepath.Join(dir, "fd", fd.Name())) {
					uses = true
					break
				}
			}
		}
		if !uses {
			continue
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return killed, fmt.Errorf("kill the volume's user %d: %w", pid, err)
		}
		killed = append(killed, pid)
	}
	return killed, nil
}
