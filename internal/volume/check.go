package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
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
