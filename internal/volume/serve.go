package volume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Config is what a volume server serves.
type Config struct {
	// Container is the path of the container file.
	Container string
	// Key is the volume key (ReadKey reads it from the agent's pipe). Serve
	// clears this slice once the key is in the engine or the kernel.
	Key Key
	// Mountpoint is where the ext4 file system is mounted.
	Mountpoint string
	// MakeFS makes a new ext4 file system first (a new volume).
	MakeFS bool
	// Engine chooses the path: EngineDMCrypt or EngineUserspace; empty
	// means dm-crypt where device-mapper exists, else userspace.
	Engine string
	// Ready, if set, is called once the file system is mounted.
	Ready func()
	// Logger receives the server's events (never the key).
	Logger *slog.Logger
}

// The two ways to serve a volume (Config.Engine, Info.Engine).
const (
	EngineDMCrypt   = "dm-crypt"
	EngineUserspace = "userspace"
)

// detachTimeout bounds the wait for a loop device to detach.
const detachTimeout = 30 * time.Second

// fuseDir is where the server mounts the decrypted data area
// (<container>.fuse/data).
func fuseDir(container string) string { return container + ".fuse" }

// HasDeviceMapper reports whether this host can use dm-crypt: the
// device-mapper control device opens (in containers the node may exist
// without a driver behind it: ENODEV).
func HasDeviceMapper() bool {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Serve serves the volume until it is unmounted (Unmount or Destroy, from
// any process) or ctx ends. It is the body of the long-lived volume
// server: one process per volume, outliving the agent. A second server
// for the same container gets ErrLocked. When ctx ends Serve unmounts the
// file system; if the file system is busy it logs that and keeps serving
// (the data under a running PostgreSQL must not vanish) until Unmount.
//
// Without device-mapper the data goes through this process (FUSE, loop,
// ext4); with it, cryptsetup hands the key to dm-crypt and this process
// only holds the lock.
func Serve(ctx context.Context, cfg Config) error {
	defer clear(cfg.Key)
	if !filepath.IsAbs(cfg.Container) || !filepath.IsAbs(cfg.Mountpoint) {
		return fmt.Errorf("serve volume: container %q and mountpoint %q must be absolute paths", cfg.Container, cfg.Mountpoint)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// No core dumps or ptrace of the process that holds the key.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("serve volume: %w", err)
	}
	switch cfg.Engine {
	case "":
		if HasDeviceMapper() {
			return serveDM(ctx, cfg, log)
		}
		return serveFUSE(ctx, cfg, log)
	case EngineDMCrypt:
		return serveDM(ctx, cfg, log)
	case EngineUserspace:
		return serveFUSE(ctx, cfg, log)
	}
	return fmt.Errorf("serve volume: unknown engine %q", cfg.Engine)
}

func serveFUSE(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	c, err := OpenContainer(cfg.Container, cfg.Key)
	if err != nil {
		return err
	}
	defer c.Close()
	clear(cfg.Key)
	if err := checkNotMounted(cfg.Mountpoint); err != nil {
		return err
	}

	dir := fuseDir(cfg.Container)
	for _, d := range []string{filepath.Dir(dir), filepath.Dir(cfg.Mountpoint)} {
		if err := Share(d); err != nil {
			return fmt.Errorf("serve volume: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("serve volume: %w", err)
	}
	// A server killed earlier leaves a dead FUSE mount; clear it.
	if err := unmountIfMounted(dir); err != nil {
		return fmt.Errorf("serve volume: %w", err)
	}
	srv, err := mountFUSE(dir, c)
	if err != nil {
		return err
	}
	// All-or-nothing start: undo what was done if a later step fails.
	var loopDev string
	defer func() {
		if err == nil {
			return
		}
		unmountIfMounted(cfg.Mountpoint)
		if loopDev != "" {
			detachLoop(loopDev, detachTimeout)
		}
		srv.Unmount()
		srv.Wait()
	}()
	if loopDev, err = attachLoop(filepath.Join(dir, dataName), SectorSize); err != nil {
		return err
	}
	if err := mountExt4(loopDev, cfg); err != nil {
		return err
	}
	log.Info("volume served", "container", cfg.Container, "mountpoint", cfg.Mountpoint, "loop", loopDev, "engine", EngineUserspace)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done: // unmounted by Unmount or Destroy
		log.Info("volume unmounted", "container", cfg.Container)
		return nil
	case <-ctx.Done():
	}
	for {
		err := teardown(cfg.Container, cfg.Mountpoint)
		if err == nil {
			<-done
			log.Info("volume stopped", "container", cfg.Container)
			return nil
		}
		log.Error("volume stop", "container", cfg.Container, "err", err)
		select {
		case <-done:
			return nil
		case <-time.After(time.Second):
		}
	}
}

// checkNotMounted refuses a mountpoint that already has a mount (a
// killed server's file system: Unmount clears it).
func checkNotMounted(dir string) error {
	mounted, err := isMountpoint(dir)
	if err != nil {
		return fmt.Errorf("serve volume: %w", err)
	}
	if mounted {
		return fmt.Errorf("serve volume: %s is already a mount point (Unmount clears what a stopped server left)", dir)
	}
	return nil
}

// mountExt4 makes the file system if asked and mounts dev at the
// mountpoint.
func mountExt4(dev string, cfg Config) error {
	if cfg.MakeFS {
		out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "1",
			"-E", "nodiscard", "-L", "moat-volume", dev).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mkfs.ext4 %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.MkdirAll(cfg.Mountpoint, 0o700); err != nil {
		return fmt.Errorf("mount volume: %w", err)
	}
	if err := unix.Mount(dev, cfg.Mountpoint, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s at %s: %w", dev, cfg.Mountpoint, err)
	}
	return nil
}

// Share makes dir a shared mount (binding it onto itself, with what is
// mounted below it, if it is not a mount point yet). Serve shares the
// directories holding the container and the mountpoint; the agent shares
// its volume roots at start, before it creates any node namespace.
//
// Why: a mount namespace made later (ip netns exec, which makes / a
// recursive slave) gets a copy of every mount. Unmounts propagate through
// the parent mount: when the parent is shared, the namespace's copy of it
// is a slave, and unmounting a volume here unmounts the namespace's copy
// too. Under a private parent the copy would stay, keep the file system,
// the loop device and the FUSE connection alive, and pin the volume.
func Share(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("share %s: %w", dir, err)
	}
	mounted, err := isMountpoint(dir)
	if err != nil {
		return fmt.Errorf("share %s: %w", dir, err)
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("share %s: bind: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("share %s: %w", dir, err)
	}
	return nil
}

// Unmount stops serving the container: it unmounts the file system,
// detaches the loop device (waiting for the kernel), unmounts the FUSE
// file (the server then exits, dropping the key) and waits until the
// server has let go of the container. On a dm-crypt host it closes the
// mapping instead. Parts already gone are skipped, so Unmount also
// cleans up after a killed server.
func Unmount(container, mountpoint string) error {
	if err := teardown(container, mountpoint); err != nil {
		return err
	}
	return waitUnlocked(container, detachTimeout)
}

// teardown is Unmount without waiting for the server.
func teardown(container, mountpoint string) error {
	if err := unmountIfMounted(mountpoint); err != nil {
		return fmt.Errorf("unmount volume: %w", err)
	}
	if err := closeDM(container); err != nil {
		return err
	}
	dir := fuseDir(container)
	for _, dev := range loopsBacking(filepath.Join(resolveParent(dir), dataName)) {
		if err := detachLoop(dev, detachTimeout); err != nil {
			return fmt.Errorf("unmount volume: %w", err)
		}
	}
	if err := unmountIfMounted(dir); err != nil {
		// Nothing but the loop device (detached above) uses the FUSE
		// file; what still holds it (the loop's last release, which the
		// kernel finishes asynchronously) must not leave a mount behind
		// that a later walk of the directory (moat down, a test's
		// cleanup) would enter and wait on once its server is gone: it
		// is detached from the tree now, and the kernel ends it when the
		// last user lets go.
		if derr := unix.Unmount(dir, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount volume: %w", errors.Join(err, derr))
		}
	}
	return nil
}

// waitUnlocked waits until no process holds the container's lock.
func waitUnlocked(container string, timeout time.Duration) error {
	f, err := os.Open(container)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wait for volume server: %w", err)
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("wait for volume server: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for volume server of %s: %w after %v", container, ErrLocked, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// destroyGrace is how long Destroy lets the volume's server answer before
// it kills it.
const destroyGrace = 10 * time.Second

// Destroy wipes a volume: Unmount, then the LUKS header area (both
// headers and the keyslot area) is overwritten and synced, and the file
// and its FUSE directory are removed. A server that does not answer
// (stopped, or hung) does not hold the wipe up: after destroyGrace it is
// killed, the kernel aborts its FUSE connection, and the I/O waiting on
// it (the file system's flush at unmount) fails; the data is being
// destroyed anyway.
func Destroy(container, mountpoint string) error {
	return destroy(container, mountpoint, destroyGrace)
}

func destroy(container, mountpoint string, grace time.Duration) error {
	done := make(chan struct{})
	watchdog := make(chan error, 1)
	go func() {
		select {
		case <-done:
			watchdog <- nil
		case <-time.After(grace):
			watchdog <- killServer(container)
		}
	}()
	err := Unmount(container, mountpoint)
	close(done)
	if kerr := <-watchdog; kerr != nil {
		err = errors.Join(err, kerr)
	}
	if err != nil {
		return fmt.Errorf("destroy volume: %w", err)
	}
	f, err := os.OpenFile(container, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(fuseDir(container))
	}
	if err != nil {
		return fmt.Errorf("destroy volume: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("destroy volume %s: %w", container, ErrLocked)
	}
	if _, err := f.WriteAt(make([]byte, headerArea), 0); err != nil {
		return fmt.Errorf("destroy volume: overwrite header: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("destroy volume: overwrite header: %w", err)
	}
	if err := os.Remove(container); err != nil {
		return fmt.Errorf("destroy volume: %w", err)
	}
	if err := os.RemoveAll(fuseDir(container)); err != nil {
		return fmt.Errorf("destroy volume: %w", err)
	}
	return nil
}

// resolveParent returns path with the symbolic links of its parent
// resolved, as the kernel shows paths. Path itself is not looked at: it
// may be a FUSE mount whose server is dead (the stat fails) or does not
// answer (the stat would wait for it).
func resolveParent(path string) string {
	parent, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return path
	}
	return filepath.Join(parent, filepath.Base(path))
}

// unmountBusyFor is how long unmountIfMounted retries a mount that is
// busy: a file closed just before (a loop device's backing file, a
// process that just exited) is released asynchronously.
const unmountBusyFor = 3 * time.Second

// unmountIfMounted unmounts the mount at dir, if there is one, retrying
// for unmountBusyFor while it is busy.
func unmountIfMounted(dir string) error {
	deadline := time.Now().Add(unmountBusyFor)
	for {
		mounted, err := isMountpoint(dir)
		if err != nil || !mounted {
			return err
		}
		err = unix.Unmount(dir, 0)
		if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
}

// isMountpoint reports whether something is mounted at dir in this
// process's mount namespace.
func isMountpoint(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	abs = resolveParent(abs) // mountinfo shows resolved paths
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == abs {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
