// Command volume measures the encrypted volume (internal/volume) against
// its references, in one run: the XTS engine's throughput on one core
// against AES-256 through crypto/aes on the same buffers (CTR mode: the
// standard library's batched AES-NI, the limit of the primitive) and
// against a one-block-at-a-time x/crypto/xts loop; then sequential
// write/read and the 8 KiB write+fdatasync rate on the mounted volume
// (userspace engine: FUSE, loop, ext4) against ext4 on a plain loop
// device over a file on the same disk; then pgbench TPS (fixed scale and
// clients, PostgreSQL's default durability) on a cluster on each. It
// needs root, /dev/fuse, loop devices, mkfs.ext4, losetup and PostgreSQL
// (pg_config --bindir, the postgres user). It also times a 10 GiB
// volume's format, first serve and destroy.
//
//	go run ./bench/volume [-mb 256] [-fsyncs 2000] [-pgscale 10 -pgclients 8 -pgseconds 20 -pgruns 3]
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/moatdb/moat/internal/volume"
	"golang.org/x/crypto/xts"
	"golang.org/x/sys/unix"
)

func main() {
	mb := flag.Int("mb", 256, "MiB written and read sequentially")
	fsyncs := flag.Int("fsyncs", 2000, "8 KiB write+fdatasync operations")
	runs := flag.Int("runs", 3, "rounds, alternating the cases (the median is printed)")
	dir := flag.String("dir", "/var/tmp", "directory for the volume files")
	var pg pgbenchConfig
	flag.IntVar(&pg.scale, "pgscale", 10, "pgbench scale factor (10: 1 million accounts, about 160 MB)")
	flag.IntVar(&pg.clients, "pgclients", 8, "pgbench clients")
	flag.IntVar(&pg.seconds, "pgseconds", 20, "seconds of each pgbench run")
	flag.IntVar(&pg.runs, "pgruns", 3, "pgbench runs on each volume, alternating (0: no pgbench)")
	flag.Parse()
	if err := run(*mb, *fsyncs, *runs, *dir, pg); err != nil {
		fmt.Fprintln(os.Stderr, "bench/volume: error:", err)
		os.Exit(1)
	}
}

func run(mb, fsyncs, runs int, dir string, pg pgbenchConfig) error {
	fmt.Printf("bench/volume %s, %d cores, GOMAXPROCS %d, %s\n\n", time.Now().Format("2006-01-02"), runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel())
	if err := engine(runs); err != nil {
		return err
	}
	work, err := os.MkdirTemp(dir, "moat-bench-volume-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := lifecycle(work, 10<<30); err != nil {
		return err
	}
	size := max(int64(mb)*2<<20+64<<20, 2<<30) // room for pgbench's cluster too

	plain, err := plainVolume(work, size)
	if err != nil {
		return err
	}
	defer plain.close()
	enc, err := encryptedVolume(work, size)
	if err != nil {
		return err
	}
	defer enc.close()
	var plainRuns, encRuns []result
	for range runs {
		r, err := measure(plain.mnt, mb, fsyncs)
		if err != nil {
			return fmt.Errorf("plain: %w", err)
		}
		plainRuns = append(plainRuns, r)
		if r, err = measure(enc.mnt, mb, fsyncs); err != nil {
			return fmt.Errorf("encrypted: %w", err)
		}
		encRuns = append(encRuns, r)
	}
	plainRes, encRes := medianResult(plainRuns), medianResult(encRuns)
	fmt.Printf("| %d MiB, 1 MiB I/O (O_DIRECT) | plain loop + ext4 | encrypted (userspace) | ratio |\n|---|---:|---:|---:|\n", mb)
	fmt.Printf("| sequential write | %.0f MB/s | %.0f MB/s | %.2f× |\n", plainRes.write, encRes.write, encRes.write/plainRes.write)
	fmt.Printf("| sequential read | %.0f MB/s | %.0f MB/s | %.2f× |\n", plainRes.read, encRes.read, encRes.read/plainRes.read)
	fmt.Printf("| 8 KiB write + fdatasync | %.0f /s | %.0f /s | %.2f× |\n", plainRes.fsync, encRes.fsync, encRes.fsync/plainRes.fsync)
	return pgbench(work, plain, enc, pg)
}

// engine prints the per-core crypto table.
func engine(runs int) error {
	key, err := volume.NewKey()
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	e, err := volume.NewEngine(key)
	if err != nil {
		return err
	}
	block, _ := aes.NewCipher(key[:32])
	iv := make([]byte, 16)
	ref, _ := xts.NewCipher(aes.NewCipher, key)

	cases := []func(i int){
		func(i int) { cipher.NewCTR(block, iv).XORKeyStream(buf, buf) },
		func(i int) { e.Encrypt(buf, buf, uint64(i)*256) },
		func(i int) { e.Decrypt(buf, buf, uint64(i)*256) },
		func(i int) {
			for s := 0; s < len(buf); s += volume.SectorSize {
				ref.Encrypt(buf[s:s+volume.SectorSize], buf[s:s+volume.SectorSize], uint64(i*256+s/volume.SectorSize)*8)
			}
		},
	}
	rates := make([][]float64, len(cases))
	for range runs {
		for c, f := range cases {
			rates[c] = append(rates[c], rate(buf, f))
		}
	}
	for c := range rates {
		slices.Sort(rates[c])
	}
	limit, enc, dec, perBlock := rates[0][runs/2], rates[1][runs/2], rates[2][runs/2], rates[3][runs/2]
	fmt.Printf("| one core, 1 MiB buffers | MB/s | × limit |\n|---|---:|---:|\n")
	fmt.Printf("| AES-256-CTR, crypto/aes (the limit) | %.0f | 1.00× |\n", limit)
	fmt.Printf("| engine encrypt (AES-256-XTS, 4096-byte sectors, %s) | %.0f | %.2f× |\n", volume.EnginePath(), enc, enc/limit)
	fmt.Printf("| engine decrypt | %.0f | %.2f× |\n", dec, dec/limit)
	fmt.Printf("| x/crypto/xts, one block at a time | %.0f | %.2f× |\n\n", perBlock, perBlock/limit)
	return nil
}

// rate runs f on one goroutine for about half a second and returns MB/s.
func rate(buf []byte, f func(i int)) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f(0) // warm up
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second/2 {
		f(n)
		n++
	}
	return float64(n*len(buf)) / time.Since(start).Seconds() / 1e6
}

// lifecycle prints how long a volume of size bytes takes to format, to
// serve (mkfs.ext4 included, the first time), and to destroy.
func lifecycle(work string, size int64) error {
	dir := filepath.Join(work, "life")
	os.Mkdir(dir, 0o700)
	container, mnt := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	start := time.Now()
	key, err := volume.Create(container, size)
	if err != nil {
		return err
	}
	format := time.Since(start)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	start = time.Now()
	go func() {
		done <- volume.Serve(ctx, volume.Config{
			Container: container, Key: key, Mountpoint: mnt, MakeFS: true,
			Engine: volume.EngineUserspace, Ready: func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		return err
	}
	serve := time.Since(start)
	start = time.Now()
	if err := volume.Destroy(container, mnt); err != nil {
		return err
	}
	destroy := time.Since(start)
	if err := <-done; err != nil {
		return err
	}
	unix.Unmount(dir, unix.MNT_DETACH) // Serve shared it (a self-bind)
	fmt.Printf("| %d GiB volume | time |\n|---|---:|\n", size>>30)
	fmt.Printf("| format (LUKS2 header, sparse file) | %v |\n", format.Round(time.Microsecond))
	fmt.Printf("| serve: open, FUSE, loop, mkfs.ext4, mount | %v |\n", serve.Round(time.Millisecond))
	fmt.Printf("| destroy: unmount, detach, stop, wipe header | %v |\n\n", destroy.Round(time.Millisecond))
	return nil
}

type mounted struct {
	mnt   string
	close func()
}

func plainVolume(work string, size int64) (*mounted, error) {
	file := filepath.Join(work, "plain.img")
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	f.Truncate(size - 16<<20)
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", "--sector-size", "4096", file).Output()
	if err != nil {
		return nil, fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(out))
	mnt := filepath.Join(work, "plain")
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "1", "-E", "nodiscard", dev).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		return nil, fmt.Errorf("mkfs.ext4: %w: %s", err, out)
	}
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_NOATIME, ""); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		return nil, fmt.Errorf("mount: %w", err)
	}
	return &mounted{mnt: mnt, close: func() {
		unix.Unmount(mnt, 0)
		exec.Command("losetup", "-d", dev).Run()
	}}, nil
}

func encryptedVolume(work string, size int64) (*mounted, error) {
	vols := filepath.Join(work, "enc")
	container, mnt := filepath.Join(vols, "vol"), filepath.Join(vols, "mnt")
	os.Mkdir(vols, 0o700)
	key, err := volume.Create(container, size)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- volume.Serve(ctx, volume.Config{
			Container: container, Key: key, Mountpoint: mnt, MakeFS: true,
			Engine: volume.EngineUserspace, Ready: func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		unix.Unmount(vols, unix.MNT_DETACH)
		return nil, err
	}
	return &mounted{mnt: mnt, close: func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "bench/volume: stop:", err)
		}
		volume.Destroy(container, mnt)
		unix.Unmount(vols, unix.MNT_DETACH) // Serve shared it (a self-bind)
	}}, nil
}

type result struct{ write, read, fsync float64 }

// medianResult takes the median of each measure separately.
func medianResult(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		write: pick(func(r result) float64 { return r.write }),
		read:  pick(func(r result) float64 { return r.read }),
		fsync: pick(func(r result) float64 { return r.fsync }),
	}
}

// measure writes and reads mb MiB with O_DIRECT (the device, not the page
// cache), then does fsyncs 8 KiB writes each followed by fdatasync.
func measure(mnt string, mb, fsyncs int) (result, error) {
	var r result
	buf := aligned(1 << 20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	path := filepath.Join(mnt, "seq")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		return r, err
	}
	defer f.Close()
	start := time.Now()
	for i := 0; i < mb; i++ {
		if _, err := f.Write(buf); err != nil {
			return r, fmt.Errorf("write: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return r, err
	}
	r.write = float64(mb<<20) / time.Since(start).Seconds() / 1e6
	start = time.Now()
	for i := 0; i < mb; i++ {
		if _, err := f.ReadAt(buf, int64(i)<<20); err != nil {
			return r, fmt.Errorf("read: %w", err)
		}
	}
	r.read = float64(mb<<20) / time.Since(start).Seconds() / 1e6

	w, err := os.OpenFile(filepath.Join(mnt, "wal"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return r, err
	}
	defer w.Close()
	// Preallocate like PostgreSQL's WAL segments, so each fdatasync
	// writes data, not metadata.
	if err := unix.Fallocate(int(w.Fd()), 0, 0, int64(fsyncs)*8192); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return r, err
	}
	w.Sync()
	page := buf[:8192]
	start = time.Now()
	for i := 0; i < fsyncs; i++ {
		if _, err := w.WriteAt(page, int64(i)*8192); err != nil {
			return r, err
		}
		if err := unix.Fdatasync(int(w.Fd())); err != nil {
			return r, err
		}
	}
	r.fsync = float64(fsyncs) / time.Since(start).Seconds()
	return r, nil
}

// aligned returns n bytes aligned for O_DIRECT.
func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off%4096 : off%4096+n]
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}
