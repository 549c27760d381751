package volume

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The dm-crypt path: cryptsetup opens the container with the key read
// from a pipe (never a file or argv), the kernel holds the key, and this
// process keeps the container's lock while the volume is open.

// dmName is the device-mapper name of the container's mapping.
func dmName(hdr *Header) string { return "moat-" + hdr.UUID }

func serveDM(ctx context.Context, cfg Config, log *slog.Logger) error {
	f, err := os.OpenFile(cfg.Container, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open volume: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("open volume %s: %w", cfg.Container, ErrLocked)
	}
	hdr, err := ReadHeader(f)
	if err != nil {
		return fmt.Errorf("open volume %s: %w", cfg.Container, err)
	}
	if err := hdr.VerifyKey(cfg.Key); err != nil {
		return fmt.Errorf("open volume %s: %w", cfg.Container, err)
	}
	if err := checkNotMounted(cfg.Mountpoint); err != nil {
		return err
	}
	name := dmName(hdr)
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("open volume: %w", err)
	}
	cmd := exec.Command("cryptsetup", "open", "--type", "luks2", "--key-size", "512",
		"--volume-key-file", "/dev/fd/3", cfg.Container, name)
	cmd.ExtraFiles = []*os.File{r}
	_, werr := w.Write(cfg.Key) // 64 bytes fit the pipe's buffer
	w.Close()
	clear(cfg.Key)
	out, err := cmd.CombinedOutput()
	r.Close()
	if werr != nil {
		return fmt.Errorf("cryptsetup open: write key: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("cryptsetup open %s: %w: %s", cfg.Container, err, strings.TrimSpace(string(out)))
	}
	dev := "/dev/mapper/" + name
	err = Share(filepath.Dir(cfg.Mountpoint))
	if err == nil {
		err = mountExt4(dev, cfg)
	}
	if err != nil {
		exec.Command("cryptsetup", "close", name).Run()
		return err
	}
	log.Info("volume served", "container", cfg.Container, "mountpoint", cfg.Mountpoint, "device", dev, "engine", EngineDMCrypt)
	if cfg.Ready != nil {
		cfg.Ready()
	}
	// Serve until Unmount (from any process) removes the mapping, or ctx
	// ends; then unmount here, unless the file system is busy.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	stopping, done := false, ctx.Done()
	for {
		select {
		case <-done:
			stopping, done = true, nil
		case <-tick.C:
		}
		if _, err := os.Stat(dev); err != nil {
			log.Info("volume unmounted", "container", cfg.Container)
			return nil
		}
		if !stopping {
			continue
		}
		if err := unmountIfMounted(cfg.Mountpoint); err != nil {
			log.Error("volume stop", "container", cfg.Container, "err", err)
			continue
		}
		return closeDM(cfg.Container)
	}
}

// dmMapping returns the name of the container's mapping, if it exists.
func dmMapping(container string) (string, bool) {
	f, err := os.Open(container)
	if err != nil {
		return "", false // no container, no mapping to find
	}
	hdr, err := ReadHeader(f)
	f.Close()
	if err != nil {
		return "", false
	}
	name := dmName(hdr)
	_, err = os.Stat("/dev/mapper/" + name)
	return name, err == nil
}

// closeDM removes the container's mapping if it exists.
func closeDM(container string) error {
	name, ok := dmMapping(container)
	if !ok {
		return nil
	}
	if out, err := exec.Command("cryptsetup", "close", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cryptsetup close %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
