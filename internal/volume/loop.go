package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// attachLoop puts a free loop device with blockSize-byte logical blocks on
// the file backing and returns its path.
func attachLoop(backing string, blockSize uint32) (string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("attach loop: %w", err)
	}
	defer ctl.Close()
	f, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("attach loop: %w", err)
	}
	defer f.Close()
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("attach loop: get free device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		err = configureLoop(dev, n, f, backing, blockSize, loFlagsDirectIO)
		if errors.Is(err, unix.EINVAL) {
			// A backing file without O_DIRECT: buffered I/O.
			err = configureLoop(dev, n, f, backing, blockSize, 0)
		}
		if errors.Is(err, unix.EBUSY) && attempt < 20 {
			continue // another process took it between the two calls
		}
		if err != nil {
			return "", fmt.Errorf("attach loop %s: %w", dev, err)
		}
		return dev, nil
	}
}

// loFlagsDirectIO (LO_FLAGS_DIRECT_IO) makes the loop driver issue
// asynchronous direct I/O to its file: several requests in flight, no
// second copy in the page cache.
const loFlagsDirectIO = 16

func configureLoop(dev string, n int, backing *os.File, name string, blockSize, flags uint32) error {
	lf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		// Containers often have a static /dev with a few loop nodes.
		if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		lf, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		return err
	}
	defer lf.Close()
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: blockSize}
	cfg.Info.Flags = flags
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)
	return unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
}

// detachLoop detaches dev and waits until the kernel has (the detach
// completes only when the last opener, such as a file system, is gone).
func detachLoop(dev string, timeout time.Duration) error {
	lf, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("detach loop: %w", err)
	}
	err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
	lf.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) { // ENXIO: already detached
		return fmt.Errorf("detach loop %s: %w", dev, err)
	}
	deadline := time.Now().Add(timeout)
	for loopAttached(dev) {
		if time.Now().After(deadline) {
			return fmt.Errorf("detach loop %s: still attached after %v", dev, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// loopAttached reports whether dev has a backing file.
func loopAttached(dev string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop"))
	return err == nil
}

// loopsBacking returns the loop devices whose backing file is path.
func loopsBacking(path string) []string {
	matches, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var devs []string
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		// The kernel appends " (deleted)" when the file is gone.
		if strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)") == path {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	return devs
}
