// Command basebackup benchmarks a base backup and restore of a real
// PostgreSQL database: Moat's archive.BaseBackup (pg_basebackup -Ft -X none
// --compress=client-zstd streamed through the moat1 encrypting writer into
// an objstore.Dir) and FetchBaseBackup, against pg_basebackup -Ft to local
// disk and tar -x of its output (the reference), and against pgBackRest
// full backups encrypted with aes-256-cbc, all in the same run. See
// README.md.
//
// It must run as root: PostgreSQL and pgBackRest run as the postgres user.
// Everything lives in one directory under /tmp, removed on exit, failure or
// SIGINT/SIGTERM; the server is stopped likewise.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

var (
	scale     = flag.Int("scale", 70, "pgbench scale factor (70 ≈ 1 GiB)")
	reps      = flag.Int("reps", 3, "repetitions of every case (the table gives the median)")
	pgbr      = flag.Bool("pgbackrest", true, "include pgBackRest (installed with apt-get if missing)")
	noInstall = flag.Bool("no-install", false, "do not apt-get install pgbackrest when it is missing")
)

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "basebackup bench:", err)
		os.Exit(1)
	}
}

type env struct {
	bin  string
	cred *syscall.Credential
	dir  string
	data string
	sock string
	port int
}

func (e *env) dsn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", e.port)
}

// sh runs a command, as the postgres user if asPG, and returns its output
// in the error when it fails.
func (e *env) sh(ctx context.Context, asPG bool, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + e.bin + ":/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=" + e.dir}
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asPG {
		cmd.SysProcAttr.Credential = e.cred
	}
	if err := cmd.Run(); err != nil {
		s := out.String()
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, s)
	}
	return out.String(), nil
}

// mkdir makes a directory the postgres user owns.
func (e *env) mkdir(p string) error {
	if err := os.MkdirAll(p, 0o700); err != nil {
		return err
	}
	return os.Chown(p, int(e.cred.Uid), int(e.cred.Gid))
}

func run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (PostgreSQL and pgBackRest run as the postgres user)")
	}
	e := &env{}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		e.bin = strings.TrimSpace(string(out))
	} else {
		return fmt.Errorf("pg_config --bindir: %w", err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	e.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}

	e.dir, err = os.MkdirTemp("/tmp", "moat-bench-basebackup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(e.dir)
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return err
	}
	e.data, e.sock = filepath.Join(e.dir, "data"), filepath.Join(e.dir, "sock")
	for _, d := range []string{e.data, e.sock} {
		if err := e.mkdir(d); err != nil {
			return err
		}
	}

	// pgBackRest: find or install it before the server starts.
	pgbrWhy := ""
	if *pgbr {
		pgbrWhy = ensurePgBackRest(ctx)
	} else {
		pgbrWhy = "disabled (-pgbackrest=false)"
	}

	if _, err := e.sh(ctx, true, nil, filepath.Join(e.bin, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "-D", e.data); err != nil {
		return err
	}
	stopPG, err := e.startPG(ctx)
	if err != nil {
		return err
	}
	defer stopPG()

	fmt.Fprintf(os.Stderr, "loading pgbench -i -s %d ...\n", *scale)
	t0 := time.Now()
	if _, err := e.sh(ctx, false, nil, filepath.Join(e.bin, "pgbench"), "-i", "-q", "-s", strconv.Itoa(*scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(e.port), "-U", "postgres", "postgres"); err != nil {
		return err
	}
	if _, err := e.sh(ctx, false, nil, filepath.Join(e.bin, "psql"), "-X", "-q", "-d", e.dsn(), "-c", "CHECKPOINT"); err != nil {
		return err
	}
	out, err := e.sh(ctx, false, nil, filepath.Join(e.bin, "psql"), "-X", "-At", "-d", e.dsn(),
		"-c", "SELECT pg_database_size('postgres'), version()")
	if err != nil {
		return err
	}
	dbSize, version, _ := strings.Cut(strings.TrimSpace(out), "|")
	fmt.Fprintf(os.Stderr, "loaded in %s: pg_database_size = %s bytes; data dir = %s bytes\n",
		time.Since(t0).Round(time.Second), dbSize, strconv.FormatInt(duBytes(e.data), 10))

	// The service key pair.
	priv, err := backup.GenerateKey()
	if err != nil {
		return err
	}
	pubPEM, _ := backup.MarshalPublicKeyPEM(&priv.PublicKey)
	privPEM, _ := backup.MarshalPrivateKeyPEM(priv)
	privFile := filepath.Join(e.dir, "private.pem")
	if err := os.WriteFile(privFile, privPEM, 0o600); err != nil {
		return err
	}

	cases := []*benchCase{
		{name: "pg_basebackup -Ft -X none to local disk, no encryption (reference)", do: e.pgBaseBackup},
		{name: "Moat archive.BaseBackup → objstore.Dir (moat1, zstd by pg_basebackup, encrypted)", do: e.moat(string(pubPEM), privFile, true)},
		{name: "Moat pipeline uncompressed (same stages, Compress: false)", do: e.moat(string(pubPEM), privFile, false)},
	}
	if pgbrWhy == "" {
		cases = append(cases,
			&benchCase{name: "pgBackRest full, aes-256-cbc, defaults (gz, process-max=1)", do: e.pgBackRest(nil)},
			&benchCase{name: "pgBackRest full, aes-256-cbc, lz4, process-max=2", do: e.pgBackRest([]string{"--compress-type=lz4", "--process-max=2"})},
		)
	}
	// Rounds interleave the cases so that load on the machine hits all alike.
	for r := 0; r < *reps; r++ {
		for _, c := range cases {
			if err := ctx.Err(); err != nil {
				return err
			}
			work := filepath.Join(e.dir, "work")
			if err := e.mkdir(work); err != nil {
				return err
			}
			res, err := c.do(ctx, work)
			os.RemoveAll(work)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-70s backup %6.2fs restore %6.2fs size %d\n", r+1, c.name,
				res.backup.Seconds(), res.restore.Seconds(), res.size)
			c.res = append(c.res, res)
		}
	}

	ncpu := strconv.Itoa(numCPU())
	fmt.Printf("\nBase backup and restore, pgbench scale %d, pg_database_size %s bytes, %s cores, %s\n",
		*scale, dbSize, ncpu, version)
	fmt.Printf("median of %d, interleaved rounds\n\n", *reps)
	fmt.Println("| case | backup s | × pg_basebackup | stored MB | restore s | × untar |")
	fmt.Println("|---|---|---|---|---|---|")
	refB, refR := cases[0].median(func(r result) time.Duration { return r.backup }), cases[0].median(func(r result) time.Duration { return r.restore })
	for _, c := range cases {
		b, rs := c.median(func(r result) time.Duration { return r.backup }), c.median(func(r result) time.Duration { return r.restore })
		fmt.Printf("| %s | %.2f | %.2f | %.0f | %.2f | %.2f |\n", c.name, b.Seconds(), b.Seconds()/refB.Seconds(),
			float64(c.res[0].size)/1e6, rs.Seconds(), rs.Seconds()/refR.Seconds())
	}
	if pgbrWhy != "" {
		fmt.Printf("| pgBackRest full, aes-256-cbc | unavailable: %s | | | | |\n", pgbrWhy)
	}
	fmt.Println("\nRestore: pg_basebackup row = tar -xf base.tar; Moat rows = FetchBaseBackup (decrypt, verify) piped into tar -xf -;")
	fmt.Println("pgBackRest rows = pgbackrest restore into an empty directory. No fsync after restore in any row.")
	return nil
}

type result struct {
	backup, restore time.Duration
	size            int64
}

type benchCase struct {
	name string
	do   func(ctx context.Context, work string) (result, error)
	res  []result
}

func (c *benchCase) median(f func(result) time.Duration) time.Duration {
	d := make([]time.Duration, len(c.res))
	for i, r := range c.res {
		d[i] = f(r)
	}
	slices.Sort(d)
	return d[len(d)/2]
}

func (e *env) startPG(ctx context.Context) (stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	logf, err := os.Create(filepath.Join(e.dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(e.bin, "postgres"), "-D", e.data, "-p", strconv.Itoa(e.port), "-k", e.sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "log_min_messages=warning",
		"-c", "wal_level=replica", "-c", "archive_mode=on", "-c", "archive_command=/bin/true",
		"-c", "max_wal_size=4GB")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.sh(ctx, false, nil, filepath.Join(e.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(e.port)); err == nil {
			return stop, nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(e.dir, "postgres.log"))
			return nil, fmt.Errorf("postgres exited:\n%s", log)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, errors.New("postgres did not become ready")
		}
	}
}

// pgBaseBackup is the reference: pg_basebackup -Ft to local disk, then
// tar -xf of its base.tar.
func (e *env) pgBaseBackup(ctx context.Context, work string) (result, error) {
	out, rdir := filepath.Join(work, "out"), filepath.Join(work, "restore")
	t := time.Now()
	if _, err := e.sh(ctx, false, nil, filepath.Join(e.bin, "pg_basebackup"), "-d", e.dsn(), "-D", out, "-Ft", "-X", "none",
		"--checkpoint=fast", "-l", "bench"); err != nil {
		return result{}, err
	}
	var r result
	r.backup = time.Since(t)
	r.size = duBytes(out)
	if err := os.Mkdir(rdir, 0o700); err != nil {
		return r, err
	}
	t = time.Now()
	if _, err := e.sh(ctx, false, nil, "tar", "-xf", filepath.Join(out, "base.tar"), "-C", rdir); err != nil {
		return r, err
	}
	r.restore = time.Since(t)
	return r, checkRestored(rdir)
}

// moat takes a backup with archive.BaseBackup (compress) or, since
// BaseBackup always compresses, with the same stages built here
// (pg_basebackup stdout → archive.Encrypt → objstore.Dir.Put), and restores
// it through FetchBaseBackup (or Get + Decrypt) piped into tar -xf -.
func (e *env) moat(pubPEM, privFile string, compress bool) func(ctx context.Context, work string) (result, error) {
	return func(ctx context.Context, work string) (result, error) {
		store, rdir := filepath.Join(work, "store"), filepath.Join(work, "restore")
		for _, d := range []string{store, rdir} {
			if err := os.Mkdir(d, 0o700); err != nil {
				return result{}, err
			}
		}
		privPEM, err := os.ReadFile(privFile)
		if err != nil {
			return result{}, err
		}
		authKey, err := backup.AuthKey(privPEM)
		if err != nil {
			return result{}, err
		}
		cfg := &archive.Config{Version: archive.ConfigVersion, Store: archive.StoreConfig{Dir: store},
			Region: "eu-west-1", Service: "svc-bench", Timeline: 1, PublicKey: pubPEM, PGBinDir: e.bin,
			PrivateKeyFile: privFile, AuthKey: authKey}
		var r result
		var fetch func(w io.Writer) error
		t := time.Now()
		if compress {
			b, err := archive.BaseBackup(ctx, cfg, e.dsn())
			if err != nil {
				return r, err
			}
			r.backup = time.Since(t)
			fetch = func(w io.Writer) error { return archive.FetchBaseBackup(ctx, cfg, b, w) }
		} else {
			st, err := objstore.NewDir(store)
			if err != nil {
				return r, err
			}
			pub, err := backup.ParsePublicKeyPEM([]byte(pubPEM))
			if err != nil {
				return r, err
			}
			const key = "eu-west-1/svc-bench/base.tar"
			cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "pg_basebackup"), "-d", e.dsn(), "-D", "-", "-Ft",
				"-X", "none", "--checkpoint=fast", "-l", "bench")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				return r, err
			}
			if err := cmd.Start(); err != nil {
				return r, err
			}
			growPipe(stdout)
			pr, pw := io.Pipe()
			go func() {
				pw.CloseWithError(archive.Encrypt(pw, stdout, pub, archive.EncryptOptions{Format: backup.FormatMoat1}))
			}()
			perr := st.Put(ctx, key, pr)
			pr.Close()
			werr := cmd.Wait()
			if perr != nil || werr != nil {
				return r, fmt.Errorf("put: %v; pg_basebackup: %v %s", perr, werr, stderr.Bytes())
			}
			r.backup = time.Since(t)
			priv, err := backup.ParsePrivateKeyPEM(must(os.ReadFile(privFile)))
			if err != nil {
				return r, err
			}
			fetch = func(w io.Writer) error {
				rc, err := st.Get(ctx, key)
				if err != nil {
					return err
				}
				defer rc.Close()
				return archive.Decrypt(w, rc, priv)
			}
		}
		r.size = duBytes(store)
		t = time.Now()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(fetch(pw)) }()
		_, err = e.sh(ctx, false, pr, "tar", "-xf", "-", "-C", rdir)
		pr.CloseWithError(errors.New("tar exited"))
		if err != nil {
			return r, err
		}
		r.restore = time.Since(t)
		return r, checkRestored(rdir)
	}
}

// growPipe gives pg_basebackup's stdout the 1 MiB capacity that
// archive.BaseBackup gives it.
func growPipe(r io.Reader) {
	if f, ok := r.(*os.File); ok {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// pgBackRest takes a full backup into a fresh encrypted repository (stanza
// created untimed) and restores it into an empty directory.
func (e *env) pgBackRest(extra []string) func(ctx context.Context, work string) (result, error) {
	return func(ctx context.Context, work string) (result, error) {
		repo, rdir := filepath.Join(work, "repo"), filepath.Join(work, "restore")
		logd, lock := filepath.Join(work, "log"), filepath.Join(work, "lock")
		for _, d := range []string{repo, rdir, logd, lock} {
			if err := e.mkdir(d); err != nil {
				return result{}, err
			}
		}
		conf := filepath.Join(work, "pgbackrest.conf")
		text := fmt.Sprintf(`[global]
repo1-path=%s
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=moat-bench-%d
log-path=%s
lock-path=%s
log-level-console=warn
log-level-stderr=off
log-level-file=off
start-fast=y
archive-check=n

[bench]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
pg1-user=postgres
`, repo, time.Now().UnixNano(), logd, lock, e.data, e.port, e.sock)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return result{}, err
		}
		if err := os.Chown(conf, int(e.cred.Uid), int(e.cred.Gid)); err != nil {
			return result{}, err
		}
		base := []string{"--config=" + conf, "--stanza=bench"}
		if _, err := e.sh(ctx, true, nil, "pgbackrest", append(base, "stanza-create")...); err != nil {
			return result{}, err
		}
		var r result
		t := time.Now()
		if _, err := e.sh(ctx, true, nil, "pgbackrest", append(append(base, extra...), "--type=full", "backup")...); err != nil {
			return r, err
		}
		r.backup = time.Since(t)
		r.size = duBytes(repo)
		t = time.Now()
		if _, err := e.sh(ctx, true, nil, "pgbackrest", append(append(base, restoreOpts(extra)...), "--pg1-path="+rdir, "restore")...); err != nil {
			return r, err
		}
		r.restore = time.Since(t)
		return r, checkRestored(rdir)
	}
}

// restoreOpts keeps the options of extra that restore accepts.
func restoreOpts(extra []string) []string {
	var o []string
	for _, x := range extra {
		if strings.HasPrefix(x, "--process-max=") {
			o = append(o, x)
		}
	}
	return o
}

// checkRestored is a sanity check that a restore produced a data directory.
func checkRestored(dir string) error {
	for _, p := range []string{"PG_VERSION", "global/pg_control"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return fmt.Errorf("restored directory: %w", err)
		}
	}
	return nil
}

// ensurePgBackRest returns "" when pgbackrest is usable, else why not.
func ensurePgBackRest(ctx context.Context) string {
	if _, err := exec.LookPath("pgbackrest"); err == nil {
		return ""
	}
	if *noInstall {
		return "pgbackrest not installed (-no-install)"
	}
	fmt.Fprintln(os.Stderr, "pgbackrest missing: apt-get update && apt-get install -y pgbackrest")
	for _, args := range [][]string{{"update"}, {"install", "-y", "pgbackrest"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			s := strings.TrimSpace(string(out))
			if i := strings.LastIndexByte(s, '\n'); i >= 0 {
				s = s[i+1:]
			}
			return fmt.Sprintf("apt-get %s failed: %v: %s", args[0], err, s)
		}
	}
	if _, err := exec.LookPath("pgbackrest"); err != nil {
		return "pgbackrest not found after apt-get install"
	}
	return ""
}

func duBytes(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
