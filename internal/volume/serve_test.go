package volume

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the volume server (the agent will exec
// `moat volume serve` the same way): env selects the mode, stdin carries
// the key, "ready" on stdout says the file system is mounted.
const helperEnv = "MOAT_VOLUME_TEST_SERVE"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		os.Exit(serveHelper(v))
	}
	os.Exit(m.Run())
}

func serveHelper(v string) int {
	args := strings.Split(v, "|") // container|mountpoint|mkfs|engine
	container, mnt, mkfs, engine := args[0], args[1], args[2], args[3]
	key, err := ReadKey(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err = Serve(ctx, Config{
		Container: container, Key: key, Mountpoint: mnt, MakeFS: mkfs == "mkfs", Engine: engine,
		Ready: func() { fmt.Println("ready") },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	return 0
}

// server is a volume server process started by a test.
type server struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	exited chan error
}

// startServer runs a volume server for container and waits until its
// file system is mounted at mnt.
func startServer(t *testing.T, container, mnt string, key []byte, mkfs bool, engine string) *server {
	t.Helper()
	// Serve shares the directories of the container and the mountpoint
	// (self-binds): undo that last.
	t.Cleanup(func() {
		for _, d := range []string{filepath.Dir(container), filepath.Dir(mnt)} {
			unix.Unmount(d, unix.MNT_DETACH)
		}
	})
	s, err := runServer(container, mnt, key, mkfs, engine)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Unmount(container, mnt); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		s.cmd.Process.Kill()
		<-s.exited
	})
	return s
}

func runServer(container, mnt string, key []byte, mkfs bool, engine string) (*server, error) {
	mode := "-"
	if mkfs {
		mode = "mkfs"
	}
	s := &server{exited: make(chan error, 1)}
	s.cmd = exec.Command(os.Args[0], "-test.run=^$")
	s.cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{container, mnt, mode, engine}, "|"))
	s.cmd.Stdin = bytes.NewReader(key)
	s.cmd.Stderr = &s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
		s.exited <- s.cmd.Wait()
	}()
	select {
	case ok := <-ready:
		if !ok {
			err := <-s.exited
			return nil, fmt.Errorf("volume server: %v: %s", err, s.stderr.String())
		}
		return s, nil
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		return nil, fmt.Errorf("volume server not ready after 60s: %s", s.stderr.String())
	}
}

func mustHaveVolumeHost(t *testing.T) {
	t.Helper()
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "mkfs.ext4")
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "needs %s: %v", p, err)
		}
	}
}

// TestServe: a volume served either way keeps no plaintext at rest,
// reports itself, refuses a second server, is not pinned by a namespace
// made while it is mounted, and its wipe leaves nothing mounted, attached
// or on disk. The dm-crypt path runs where device-mapper exists.
func TestServe(t *testing.T) {
	mustHaveVolumeHost(t)
	t.Run(EngineUserspace, func(t *testing.T) { testServe(t, EngineUserspace) })
	t.Run(EngineDMCrypt, func(t *testing.T) {
		if !HasDeviceMapper() {
			t.Skip("no device-mapper on this host (/dev/mapper/control does not open): the dm-crypt path runs on real machines")
		}
		testenv.MustHaveCommand(t, "cryptsetup")
		testServe(t, EngineDMCrypt)
	})
}

func testServe(t *testing.T, engine string) {
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, container, mnt, key, true, engine)

	// A marker written through the mounted file system is there, and
	// the container holds no copy of it.
	marker := []byte(fmt.Sprintf("MOAT-PLAINTEXT-MARKER-%d-", time.Now().UnixNano()))
	data := bytes.Repeat(marker, 1000)
	if err := writeSync(filepath.Join(mnt, "marker"), data); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, "marker")); !bytes.Equal(got, data) {
		t.Fatal("the mounted file system lost the marker")
	}
	raw, err := os.ReadFile(container)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, marker) {
		t.Error("the container file holds the plaintext marker")
	}
	if bytes.Count(raw[dataOffset:], make([]byte, 4096)) == len(raw[dataOffset:])/4096 {
		t.Error("nothing reached the container's data area")
	}
	assertNoKey(t, container, key)

	info, err := Stat(container, mnt)
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Format: "LUKS2", Cipher: Cipher, KeyBits: 512, SectorSize: 4096, Engine: engine, Size: 128<<20 - dataOffset, Mounted: true}
	if info.Used < int64(len(data)) || info.Avail <= 0 || info.Full {
		t.Errorf("Stat = %+v: want used >= %d, some space available", info, len(data))
	}
	info.Used, info.Avail = 0, 0
	if info != want {
		t.Errorf("Stat = %+v, want %+v", info, want)
	}

	// The block device under ext4 has 4096-byte logical blocks.
	dev := mountSource(t, mnt)
	lbs, _ := os.ReadFile("/sys/class/block/" + filepath.Base(dev) + "/queue/logical_block_size")
	if strings.TrimSpace(string(lbs)) != "4096" {
		t.Errorf("logical block size of %s = %q, want 4096", dev, lbs)
	}
	var loop string // the userspace path's loop device
	if engine == EngineUserspace {
		devs := loopsBacking(filepath.Join(fuseDir(container), dataName))
		if len(devs) != 1 || devs[0] != dev {
			t.Fatalf("loop devices on the volume = %v, want [%s]", devs, dev)
		}
		loop = dev
		dio, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/dio")
		t.Logf("%s: direct I/O to the FUSE file: %s", dev, strings.TrimSpace(string(dio)))
	}

	// A second server for the same container is refused.
	if _, err := runServer(container, filepath.Join(dir, "mnt2"), key, false, engine); err == nil || !strings.Contains(err.Error(), ErrLocked.Error()) {
		t.Errorf("second server: %v, want %v", err, ErrLocked)
	}

	// A mount namespace made now (as ip netns exec makes them: / a
	// recursive slave) holds copies of the mounts; they must not pin them.
	ns := exec.Command(testenv.MustHaveCommand(t, "unshare"), "--mount", "--propagation", "slave", "sleep", "60")
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Process.Kill(); ns.Wait() }()
	nsMounts := fmt.Sprintf("/proc/%d/mounts", ns.Process.Pid)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for deadline := time.Now().Add(5 * time.Second); ; {
		other, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", ns.Process.Pid))
		m, _ := os.ReadFile(nsMounts)
		if other != self && bytes.Contains(m, []byte(" "+mnt+" ")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no namespace of its own holding the volume's mount:\n%s", m)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Wipe.
	if err := Destroy(container, mnt); err != nil {
		t.Fatal(err)
	}
	if m, _ := os.ReadFile(nsMounts); bytes.Contains(m, []byte(" "+mnt+" ")) || bytes.Contains(m, []byte(fuseDir(container))) {
		t.Errorf("the namespace still holds the volume's mounts:\n%s", m)
	}
	if _, err := os.Stat(container); !os.IsNotExist(err) {
		t.Errorf("container still there after Destroy: %v", err)
	}
	assertNothingLeft(t, container, mnt, loop)
	if engine == EngineDMCrypt {
		if _, err := os.Stat(dev); err == nil {
			t.Errorf("%s still there after Destroy", dev)
		}
	}
}

// mountSource returns the device mounted at dir.
func mountSource(t *testing.T, dir string) string {
	t.Helper()
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == dir {
			if p, err := filepath.EvalSymlinks(f[0]); err == nil {
				return p
			}
			return f[0]
		}
	}
	t.Fatalf("nothing mounted at %s", dir)
	return ""
}

// TestDestroyOverwritesHeader: the header area is overwritten before the
// file goes (checked through a second link to the file).
func TestDestroyOverwritesHeader(t *testing.T) {
	mustHaveVolumeHost(t)
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	if _, err := Create(container, testSize); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "link")
	if err := os.Link(container, keep); err != nil {
		t.Fatal(err)
	}
	if err := Destroy(container, mnt); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(keep)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[:headerArea], make([]byte, headerArea)) {
		t.Error("header area not overwritten")
	}
	if _, err := ReadHeader(bytes.NewReader(raw)); !errors.Is(err, ErrNotLUKS2) {
		t.Errorf("ReadHeader after Destroy = %v, want ErrNotLUKS2", err)
	}
}

// TestServerKilledMidWrite: writers get I/O errors when the server dies,
// nothing hangs, and Unmount cleans up.
func TestServerKilledMidWrite(t *testing.T) {
	mustHaveVolumeHost(t)
	if HasDeviceMapper() {
		t.Skip("device-mapper present: the kernel holds the key, there is no userspace server to kill")
	}
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, container, mnt, key, true, EngineUserspace)
	devs := loopsBacking(filepath.Join(fuseDir(container), dataName))

	writeErr := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		f, err := os.Create(filepath.Join(mnt, "big"))
		if err != nil {
			writeErr <- err
			return
		}
		defer f.Close()
		buf := bytes.Repeat([]byte("x"), 1<<20)
		for i := 0; ; i++ {
			if _, err := f.Write(buf); err != nil {
				writeErr <- err
				return
			}
			if err := f.Sync(); err != nil {
				writeErr <- err
				return
			}
			if i == 2 {
				close(started)
			}
			if i > 90 {
				writeErr <- errors.New("wrote 90 MiB after the server was killed")
				return
			}
		}
	}()
	select {
	case <-started:
	case err := <-writeErr:
		t.Fatalf("writer failed before the kill: %v", err)
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-writeErr:
		if !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("writer error = %v, want an I/O error", err)
		}
		t.Logf("writer: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("writer hung after the server was killed")
	}
	<-s.exited
	s.exited <- nil // for the cleanup
	// A new server refuses the dead server's mountpoint until Unmount.
	if _, err := runServer(container, mnt, key, false, EngineUserspace); err == nil || !strings.Contains(err.Error(), "already a mount point") {
		t.Errorf("server over a dead one's mount: %v, want a refusal", err)
	}
	if err := Unmount(container, mnt); err != nil {
		t.Fatalf("Unmount after a killed server: %v", err)
	}
	assertNothingLeft(t, container, mnt, devs[0])

	// The volume serves again: ext4 replays its journal, what was synced
	// before the kill is there.
	startServer(t, container, mnt, key, false, EngineUserspace)
	if fi, err := os.Stat(filepath.Join(mnt, "big")); err != nil || fi.Size() < 3<<20 {
		t.Errorf("after restart: %v, %v; want the file with the 3 MiB synced before the kill", fi, err)
	}
	if err := writeSync(filepath.Join(mnt, "after"), []byte("after restart")); err != nil {
		t.Errorf("write after restart: %v", err)
	}
}

// TestFullVolume: a full volume fails writes with ENOSPC (no hang) and
// Stat says it is full.
func TestFullVolume(t *testing.T) {
	mustHaveVolumeHost(t)
	// Through a symbolic link: mount points and loop files are matched
	// as the kernel shows them.
	dir := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(t.TempDir(), dir); err != nil {
		t.Fatal(err)
	}
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, 48<<20)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, container, mnt, key, true, EngineUserspace)
	done := make(chan error, 1)
	go func() {
		out, err := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "fill"), "bs=1M", "conv=fsync").CombinedOutput()
		if err == nil {
			err = errors.New("dd filled no volume")
		} else if !strings.Contains(string(out), "No space left on device") {
			err = fmt.Errorf("dd: %v: %s", err, out)
		} else {
			err = nil
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("filling the volume hung")
	}
	info, err := Stat(container, mnt)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Full {
		t.Errorf("Stat of a full volume = %+v, want Full", info)
	}
}

func writeSync(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// assertNothingLeft: nothing of the volume is mounted (/proc/mounts) or
// attached (losetup -a).
func assertNothingLeft(t *testing.T, container, mnt, dev string) {
	t.Helper()
	mounts, _ := os.ReadFile("/proc/mounts")
	for _, p := range []string{mnt, fuseDir(container)} {
		if bytes.Contains(mounts, []byte(" "+p+" ")) {
			t.Errorf("%s still mounted", p)
		}
	}
	out, err := exec.Command("losetup", "-a").CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -a: %v: %s", err, out)
	}
	// By backing file (the container, or its FUSE file), not by device:
	// other volumes (other tests, stacks) run meanwhile and may have been
	// given the number dev had.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, container) {
			t.Errorf("loop device still attached (was %s): %s", dev, l)
		}
	}
}

// TestServerStopsOnSignal: SIGTERM unmounts and detaches, unless the file
// system is busy, where the server keeps serving.
func TestServerStopsOnSignal(t *testing.T) {
	mustHaveVolumeHost(t)
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, testSize)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, container, mnt, key, true, EngineUserspace)
	devs := loopsBacking(filepath.Join(fuseDir(container), dataName))

	busy, err := os.Create(filepath.Join(mnt, "open"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		t.Fatalf("server exited with its file system busy: %v: %s", err, s.stderr.String())
	case <-time.After(time.Second):
	}
	if _, err := busy.WriteString("still served"); err != nil {
		t.Fatal(err)
	}
	if err := busy.Sync(); err != nil {
		t.Fatalf("write while stopping: %v", err)
	}
	busy.Close()
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("server: %v: %s", err, s.stderr.String())
		}
		s.exited <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("server still running after its file system was released")
	}
	assertNothingLeft(t, container, mnt, devs[0])
}

// TestEnginesAgree: a volume written through the userspace engine reads
// back through dm-crypt, byte for byte (where device-mapper exists).
func TestEnginesAgree(t *testing.T) {
	mustHaveVolumeHost(t)
	if !HasDeviceMapper() {
		t.Skip("no device-mapper on this host (/dev/mapper/control does not open): cryptsetup reencrypt --decrypt (TestCryptsetupDecryptsEngine) checks the engine's bytes here")
	}
	testenv.MustHaveCommand(t, "cryptsetup")
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	key, err := Create(container, testSize)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("engines agree "), 100000)
	s, err := runServer(container, mnt, key, true, EngineUserspace)
	if err != nil {
		t.Fatal(err)
	}
	err = writeSync(filepath.Join(mnt, "f"), data)
	if uerr := Unmount(container, mnt); uerr != nil {
		t.Fatal(uerr)
	}
	<-s.exited
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, container, mnt, key, false, EngineDMCrypt)
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("through dm-crypt: %d bytes, %v; want the %d bytes written through the engine", len(got), err, len(data))
	}
}

// TestServeInProcess: Serve in this process stops when its context ends
// and leaves no goroutine behind (the FUSE server's included).
func TestServeInProcess(t *testing.T) {
	mustHaveVolumeHost(t)
	testenv.CheckGoroutines(t)
	dir := t.TempDir()
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) }) // Serve shared it
	key, err := Create(container, testSize)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Container: container, Key: key, Mountpoint: mnt, MakeFS: true,
			Engine: EngineUserspace, Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	if !bytes.Equal(key, make([]byte, KeySize)) {
		t.Error("Serve kept the caller's copy of the key")
	}
	// A child (mkfs.ext4 runs as one) inherits no FUSE connection: one
	// that did would keep a dead server's mount hanging for good.
	if out, err := exec.Command("ls", "-l", "/proc/self/fd").CombinedOutput(); err != nil || bytes.Contains(out, []byte("/dev/fuse")) {
		t.Errorf("a child of the server holds /dev/fuse (%v):\n%s", err, out)
	}
	if err := writeSync(filepath.Join(mnt, "f"), []byte("in process")); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if m, _ := isMountpoint(mnt); m {
		t.Error("still mounted after Serve returned")
	}
}
