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
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/volume"
)

// A node's encrypted volume (Config.VolumeSize > 0): a LUKS2 container
// file under DataDir/volumes, its key made for it alone and held only by
// its server, a `moat volume serve` process in its own session, so that
// the agent can stop or be upgraded while every node keeps its data.
// docs/design/0011-encrypted-volumes.md has the why.

// volumes makes, serves and destroys the nodes' volumes. hostVolumes is
// the real one; the unit tests fake it (fake_test.go).
type volumes interface {
	// Served reports whether the container exists and whether a server
	// holds it with its file system mounted at mountpoint.
	Served(container, mountpoint string) (exists, served bool, err error)
	// Create makes a new volume of size bytes and starts its server; it
	// returns once the file system is mounted.
	Create(ctx context.Context, container, mountpoint string, size int64) error
	// Stat describes a volume and its file system's use.
	Stat(container, mountpoint string) (volume.Info, error)
	// Destroy unmounts the volume, stops its server (the key is gone),
	// overwrites the header and removes the file.
	Destroy(container, mountpoint string) error
	// Check returns an error wrapping volume.ErrUnresponsive if the
	// volume's server does not answer a read within timeout.
	Check(container string, timeout time.Duration) error
	// Kill kills the volume's server: its key, and the volume, are lost.
	Kill(container string) error
	// KillUsers kills the processes on a lost volume's file system (its
	// PostgreSQL) and returns their pids.
	KillUsers(mountpoint string) ([]int, error)
}

// errVolumeLost: the node's volume exists but no server holds its key
// (the server died, or the host rebooted): the data is unreadable for
// good. Reported at once, even for a node being created.
var errVolumeLost = errors.New("volume key lost: the node's volume server is gone, its data cannot be read again; the node must be replaced")

// volumeReadyTimeout bounds a new volume's start (mkfs included).
const volumeReadyTimeout = 2 * time.Minute

// volumeCheckTimeout is how long a volume's server may take to answer the
// supervision's read of one sector before it counts as hung: far beyond
// what a loaded host takes (microseconds to milliseconds), short enough
// that a node whose I/O is frozen is failed and replaced.
const volumeCheckTimeout = 30 * time.Second

// hostVolumes runs `<DataDir>/bin/moat volume serve` per volume.
type hostVolumes struct {
	a *Agent

	mu      sync.Mutex
	servers map[string]*exec.Cmd // started by this agent, by container
}

func (h *hostVolumes) Served(container, mountpoint string) (bool, bool, error) {
	f, err := os.Open(container)
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("volume: %w", err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		// Nobody holds it: no server.
		return true, false, unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return true, false, fmt.Errorf("volume: %w", err)
	}
	info, err := volume.Stat(container, mountpoint)
	if err != nil {
		return true, false, err
	}
	return true, info.Mounted, nil
}

func (h *hostVolumes) Create(ctx context.Context, container, mountpoint string, size int64) (err error) {
	bin, err := h.a.moatBinary()
	if err != nil {
		return err
	}
	key, err := volume.Create(container, size)
	if err != nil {
		return err
	}
	defer clear(key)
	if f := h.a.onVolumeKey; f != nil {
		f(container, key)
	}
	logf, err := os.OpenFile(strings.TrimSuffix(container, volumeExt)+".log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("volume server log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "volume", "serve", "--container", container, "--mountpoint", mountpoint, "--mkfs")
	// Its own session: it outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("start volume server: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("start volume server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start volume server: %w", err)
	}
	_, werr := stdin.Write(key)
	clear(key)
	if cerr := stdin.Close(); werr == nil {
		werr = cerr
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected output %q", line)
		}
		if err == io.EOF {
			err = errors.New("exited before its volume was mounted")
		}
		ready <- err
	}()
	if werr != nil {
		cmd.Process.Kill()
		<-ready
		cmd.Wait()
		return fmt.Errorf("start volume server: pass the key: %w", werr)
	}
	timer := time.NewTimer(volumeReadyTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("not ready after %v", volumeReadyTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait() // closes stdout: the reader returns
		return fmt.Errorf("volume server of %s: %w (its log: %s)", container, err, logf.Name())
	}
	h.mu.Lock()
	if h.servers == nil {
		h.servers = map[string]*exec.Cmd{}
	}
	h.servers[container] = cmd
	h.mu.Unlock()
	return nil
}

func (h *hostVolumes) Stat(container, mountpoint string) (volume.Info, error) {
	return volume.Stat(container, mountpoint)
}

func (h *hostVolumes) Check(container string, timeout time.Duration) error {
	return volume.Check(container, timeout)
}

func (h *hostVolumes) Kill(container string) error { return volume.Kill(container) }

func (h *hostVolumes) KillUsers(mountpoint string) ([]int, error) {
	return volume.KillUsers(mountpoint)
}

func (h *hostVolumes) Destroy(container, mountpoint string) error {
	if err := volume.Destroy(container, mountpoint); err != nil {
		return err
	}
	// Reap the server if this agent started it (it has exited: Destroy
	// waited for its lock); one started by an earlier agent is init's.
	h.mu.Lock()
	cmd := h.servers[container]
	delete(h.servers, container)
	h.mu.Unlock()
	if cmd != nil {
		cmd.Wait() // its exit status says nothing more: the volume is gone
	}
	if err := os.Remove(strings.TrimSuffix(container, volumeExt) + ".log"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("destroy volume: %w", err)
	}
	if err := os.RemoveAll(mountpoint); err != nil {
		return fmt.Errorf("destroy volume: %w", err)
	}
	return nil
}

// volumeExt ends a container's file name.
const volumeExt = ".luks"

// Paths of the node's volume, under DataDir/volumes.
func (n *node) volumeFile() string  { return filepath.Join(n.a.volumesDir, n.id+volumeExt) }
func (n *node) volumeMount() string { return filepath.Join(n.a.volumesDir, n.id) }

// hasVolume reports whether the agent gives nodes volumes.
func (a *Agent) hasVolume() bool { return a.cfg.VolumeSize > 0 }

// applyVolume makes the node's volume and starts its server, or adopts
// the one already served (an agent restarted). A volume whose server is
// gone has lost its key: the node is unrecoverable (errVolumeLost).
func (n *node) applyVolume(ctx context.Context, _ *spec) error {
	if !n.a.hasVolume() {
		return nil
	}
	file, mnt := n.volumeFile(), n.volumeMount()
	exists, served, err := n.a.plat.vol.Served(file, mnt)
	if err != nil {
		return err
	}
	switch {
	case served:
		if n.marks.volume.key == "" {
			n.a.log.Info("volume adopted", "node", n.id, "container", file)
		}
	case exists:
		n.marks = marks{firewall: n.marks.firewall} // what was applied on it is gone
		n.setVolumeLost()
		return errVolumeLost
	default:
		if err := mkdir0711(n.a.volumesDir); err != nil {
			return err
		}
		t0 := time.Now()
		if err := n.a.plat.vol.Create(ctx, file, mnt, n.a.cfg.VolumeSize); err != nil {
			return err
		}
		n.a.log.Info("volume created", "node", n.id, "container", file, "size", n.a.cfg.VolumeSize, "duration", time.Since(t0))
		n.marks = marks{firewall: n.marks.firewall} // a new volume: everything on it is to be made
	}
	n.marks.volume.key = file
	return nil
}

// setVolumeLost records for the report that the node's volume lost its
// key (the control plane then shows the node failed with volume_lost).
func (n *node) setVolumeLost() {
	n.mu.Lock()
	defer n.mu.Unlock()
	v := apitype.NodeVolume{Format: volume.FormatName}
	if n.volume != nil {
		v = *n.volume
	}
	v.Lost, v.Full = true, false
	n.volume = &v
}

// killOnLostVolume kills what still runs on the node's lost volume, for
// a fence or a wipe: its PostgreSQL (whose postmaster.pid is unreadable,
// so Stop cannot find it) answers from memory until its next write
// fails, and would keep the volume busy so that the wipe could not
// unmount it. It is never restarted there: the apply stops at the
// volume step.
// Nothing starts on a lost volume again, so once is enough: it reports
// whether it succeeded.
func (n *node) killOnLostVolume() bool {
	killed, err := n.a.plat.vol.KillUsers(n.volumeMount())
	if len(killed) > 0 {
		n.a.log.Warn("volume lost: killed the processes on it", "node", n.id, "pids", killed)
	}
	if err != nil {
		n.a.log.Error("kill the processes on a lost volume", "node", n.id, "err", err)
		return false
	}
	return true
}

// volumeLost returns errVolumeLost if the node's volume, once served, no
// longer is (its server died), or if its server does not answer a read
// in time: then it is killed, so that the node fails at once and for good
// (PostgreSQL's I/O fails instead of hanging, and a primary frozen with it
// cannot resume writing after the fleet has replaced it).
func (n *node) volumeLost() error {
	if n.marks.volume.key == "" {
		return nil
	}
	file := n.volumeFile()
	_, served, err := n.a.plat.vol.Served(file, n.volumeMount())
	if err != nil {
		return nil // an unreadable state is not a lost key; the apply says more
	}
	if !served || n.killHungVolume() {
		return errVolumeLost
	}
	return nil
}

// killHungVolume kills the node's volume server if it does not answer a
// read in time, and reports whether it did.
func (n *node) killHungVolume() bool {
	file := n.volumeFile()
	timeout := volumeCheckTimeout
	if n.a.volumeCheckTimeout > 0 {
		timeout = n.a.volumeCheckTimeout
	}
	if err := n.a.plat.vol.Check(file, timeout); !errors.Is(err, volume.ErrUnresponsive) {
		return false // answered; or gone, which the lock shows
	}
	n.a.log.Error("volume server does not answer; killing it, the node is lost", "node", n.id, "container", file, "timeout", timeout)
	if err := n.a.plat.vol.Kill(file); err != nil {
		n.a.log.Error("kill volume server", "node", n.id, "container", file, "err", err)
	}
	return true
}

// volumeGone reports whether the node's volume exists with no server,
// killing first a server that does not answer: the wipe then knows
// PostgreSQL's files are unreadable, instead of waiting for a
// PostgreSQL whose I/O hangs.
func (n *node) volumeGone() bool {
	if !n.a.hasVolume() {
		return false
	}
	exists, served, err := n.a.plat.vol.Served(n.volumeFile(), n.volumeMount())
	if err != nil || !exists {
		return false
	}
	return !served || n.killHungVolume()
}

// checkVolume reads the node's volume and records it for the report; it
// returns whether it is full.
func (n *node) checkVolume() bool {
	if !n.a.hasVolume() || n.marks.volume.key == "" {
		return false
	}
	info, err := n.a.plat.vol.Stat(n.volumeFile(), n.volumeMount())
	if err != nil {
		n.a.log.Warn("stat volume", "node", n.id, "err", err)
		return false
	}
	v := &apitype.NodeVolume{Format: info.Format, Cipher: info.Cipher, Engine: info.Engine, Size: info.Size, Used: info.Used, Full: info.Full}
	n.mu.Lock()
	n.volume = v
	n.mu.Unlock()
	return info.Full
}

// destroyVolume destroys the node's volume, if it has one.
func (n *node) destroyVolume() error {
	if !n.a.hasVolume() {
		return nil
	}
	file := n.volumeFile()
	exists, _, err := n.a.plat.vol.Served(file, n.volumeMount())
	if err != nil {
		return err
	}
	if !exists {
		return os.RemoveAll(n.volumeMount())
	}
	if err := n.a.plat.vol.Destroy(file, n.volumeMount()); err != nil {
		return err
	}
	n.a.log.Info("volume destroyed", "node", n.id, "container", file)
	n.mu.Lock()
	n.volume = nil
	n.mu.Unlock()
	return nil
}

// DestroyVolumes destroys every node volume under an agent's data
// directory (its servers end, their keys with them) and unmounts the
// shared mount the agent made of the volumes directory. For `moat down`,
// once the nodes' servers are stopped; no agent may run on dataDir.
func DestroyVolumes(dataDir string) error {
	dir := filepath.Join(dataDir, "volumes")
	files, err := filepath.Glob(filepath.Join(dir, "*"+volumeExt))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		mnt := strings.TrimSuffix(f, volumeExt)
		// Whatever still runs on the volume (a server the agent was
		// starting when it was stopped has no postmaster.pid yet; an
		// archiver's child) would keep it busy: the stack is going.
		if _, err := volume.KillUsers(mnt); err != nil {
			errs = append(errs, fmt.Errorf("destroy volume: %w", err))
		}
		if err := volume.Destroy(f, mnt); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range []string{mnt + ".log", mnt} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("destroy volume: %w", err))
			}
		}
	}
	if len(errs) == 0 {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
