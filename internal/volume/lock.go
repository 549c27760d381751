package volume

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// killServer kills the server of container (the process holding its
// exclusive lock, never this one), if there is one. Killed, it drops its
// FUSE connection, which the kernel then aborts.
func killServer(container string) error {
	pids, err := lockHolders(container)
	if err != nil {
		return fmt.Errorf("kill volume server: %w", err)
	}
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill volume server %d: %w", pid, err)
		}
	}
	return nil
}

// lockHolders returns the processes holding an exclusive flock on path,
// from /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF";
// waiters' lines have "->" and are skipped).
func lockHolders(path string) ([]int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" || fields[5] != id {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, sc.Err()
}
