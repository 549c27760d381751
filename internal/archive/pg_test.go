package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/cli"
	"github.com/moatdb/moat/internal/testenv"
)

// asMoat makes the test binary run as the moat command, so that PostgreSQL's
// archive_command and restore_command can call it.
const asMoat = "MOAT_ARCHIVE_TEST_AS_MOAT"

func TestMain(m *testing.M) {
	if os.Getenv(asMoat) == "1" {
		os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// pgEnv is what the real-PostgreSQL test needs: root, the server binaries
// and the postgres user. It skips without them, and fails when CI=true.
type pgEnv struct {
	bin  string
	cred *syscall.Credential
}

func requirePostgres(t *testing.T) pgEnv {
	t.Helper()
	testenv.MustNotBeShort(t, "needs a real PostgreSQL")
	bin := testenv.MustHavePostgres(t)
	for _, p := range []string{"postgres", "pg_basebackup"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			testenv.Unavailable(t, "needs PostgreSQL: %v", err)
		}
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return pgEnv{bin: bin, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
}

func (e pgEnv) chown(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Lchown(p, int(e.cred.Uid), int(e.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
}

// server is a postgres process of the test's.
type server struct {
	cmd  *exec.Cmd
	port int
	log  string
	done chan struct{}
}

func (e pgEnv) start(t *testing.T, data, sock string, settings ...string) *server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", sock, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "log_min_messages=warning"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	s := &server{port: port, log: data + ".log", done: make(chan struct{})}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(filepath.Join(e.bin, "postgres"), args...)
	s.cmd.Dir = "/"
	s.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *server) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// connect waits for the server to accept connections (and to have ended
// recovery when promoted is set).
func (s *server) connect(t *testing.T, ctx context.Context, promoted bool) *pgx.Conn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgx.Connect(ctx, s.dsn())
		if err == nil {
			var rec bool
			if err = c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err == nil && (!promoted || !rec) {
				t.Cleanup(func() { c.Close(context.Background()) })
				return c
			}
			c.Close(ctx)
			if err == nil {
				err = errors.New("still in recovery")
			}
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(s.log)
			t.Fatalf("postgres exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			t.Fatalf("postgres not ready in 30s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// switchAndWait switches to a new WAL segment and waits until the archiver
// has archived the one it closed.
func switchAndWait(t *testing.T, ctx context.Context, c *pgx.Conn, s *server) string {
	t.Helper()
	var name string
	if err := c.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var last, failed *string
		if err := c.QueryRow(ctx, "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").Scan(&last, &failed); err != nil {
			t.Fatal(err)
		}
		if last != nil && *last >= name {
			return name
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			t.Fatalf("%s not archived in 30s (last archived %v, last failed %v)\n%s", name, deref(last), deref(failed), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

// TestPostgres archives a real server's WAL with moat wal-push, takes a
// streamed base backup, checks that the store holds no plaintext, and
// restores into a fresh data directory with moat wal-fetch.
func TestPostgres(t *testing.T) {
	env := requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// Everything the postgres user reads lives under /tmp, not under a
	// directory of root's.
	dir, err := os.MkdirTemp("/tmp", "moat-archive-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	moat := filepath.Join(dir, "moat")
	copyFile(t, os.Args[0], moat, 0o755)

	priv, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := backup.MarshalPublicKeyPEM(&priv.PublicKey)
	privPEM, _ := backup.MarshalPrivateKeyPEM(priv)
	privFile := filepath.Join(dir, "private.pem")
	writeFile(t, privFile, privPEM, 0o600)
	store := filepath.Join(dir, "store")
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	for _, d := range []string{store, data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env.chown(t, privFile, data, sock) // the store stays root's: nodes never open it
	authKey, err := backup.AuthKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}

	cfg := &archive.Config{Version: archive.ConfigVersion, Store: archive.StoreConfig{Dir: store},
		Region: "eu-west-1", Service: "svc-test", Timeline: 1, PublicKey: string(pubPEM), PGBinDir: env.bin, AuthKey: authKey}
	restoreCfg := *cfg
	restoreCfg.PrivateKey = priv
	// The agent's side: one socket the postgres user reaches, served
	// by this (root) process, which alone writes the store.
	agentSock := filepath.Join(dir, "archive.sock")
	l, err := archive.Listen(agentSock, int(env.cred.Uid), int(env.cred.Gid))
	if err != nil {
		t.Fatal(err)
	}
	srv := &archive.Server{Archive: func() *archive.Config { return cfg }, Restore: func() *archive.Config { return &restoreCfg },
		PeerUID: int(env.cred.Uid), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	initdb := exec.Command(filepath.Join(env.bin, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "-D", data)
	initdb.Dir = "/"
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: env.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	src := env.start(t, data, sock, "archive_mode=on", "wal_level=replica",
		fmt.Sprintf("archive_command=%s=1 %s wal-push --agent %s %%p", asMoat, moat, agentSock))
	c := src.connect(t, ctx, false)

	marker := "moat-marker-" + randHex(8)
	exec1 := func(sql string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec1("CREATE TABLE t (id int PRIMARY KEY, v text)")
	exec1("INSERT INTO t SELECT g, $1 || g FROM generate_series(1, 1000) g", marker)
	first := switchAndWait(t, ctx, c, src)

	b, err := archive.BaseBackup(ctx, cfg, src.dsn())
	if err != nil {
		t.Fatalf("BaseBackup: %v", err)
	}
	t.Logf("base backup %s: start %s (%s) end %s, %d bytes, %d stored", b.Label, b.StartLSN, b.StartWAL, b.EndLSN, b.Size, b.StoredSize)
	exec1("INSERT INTO t SELECT g, $1 || g FROM generate_series(1001, 2000) g", marker)
	switchAndWait(t, ctx, c, src)

	// The store holds encrypted files only (and the plaintext metadata):
	// the marker is in no object.
	var objects int
	filepath.WalkDir(store, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objects++
		if bytes.Contains(raw, []byte(marker)) {
			t.Errorf("object %s holds the marker in plaintext", p)
		}
		if !strings.HasSuffix(p, ".json") && !strings.HasSuffix(p, ".digest") && !bytes.HasPrefix(raw, []byte("moat1")) {
			t.Errorf("object %s is not a moat1 file", p)
		}
		return nil
	})
	if objects < 4 {
		t.Errorf("store holds %d objects, want WAL files, digests, a base backup and its manifest", objects)
	}
	// The postgres user (every node's PostgreSQL) can neither write nor
	// read the store: it archived through the socket.
	for _, script := range []string{"echo planted > " + store + "/planted", "ls " + store, "mkdir -p " + store + "/eu-west-1/svc-other"} {
		sh := exec.Command("/bin/sh", "-c", script)
		sh.SysProcAttr = &syscall.SysProcAttr{Credential: env.cred}
		if out, err := sh.CombinedOutput(); err == nil {
			t.Errorf("as the postgres user, %q succeeded (%s): the store is open to nodes", script, out)
		}
	}
	// ...while the archived WAL does hold it, decrypted.
	got := filepath.Join(t.TempDir(), "wal")
	if err := archive.Fetch(ctx, &restoreCfg, first, got); err != nil {
		t.Fatalf("Fetch(%s): %v", first, err)
	}
	if raw, _ := os.ReadFile(got); !bytes.Contains(raw, []byte(marker)) {
		t.Errorf("fetched WAL %s does not contain the marker: the grep above proves nothing", first)
	}
	list, err := archive.ListBackups(ctx, cfg)
	if err != nil || len(list) != 1 || list[0].Label != b.Label {
		t.Fatalf("ListBackups = %v, %v, want [%s]", list, err, b.Label)
	}
	src.stop()

	// Restore: the base backup into a fresh directory, then WAL by wal-fetch.
	restored := filepath.Join(dir, "restored")
	if err := os.Mkdir(restored, 0o700); err != nil {
		t.Fatal(err)
	}
	env.chown(t, restored)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(archive.FetchBaseBackup(ctx, &restoreCfg, b, pw)) }()
	extract(t, env, pr, restored)
	writeFile(t, filepath.Join(restored, "recovery.signal"), nil, 0o600)
	env.chown(t, filepath.Join(restored, "recovery.signal"))
	dst := env.start(t, restored, sock,
		fmt.Sprintf("restore_command=%s=1 %s wal-fetch --agent %s %%f %%p", asMoat, moat, agentSock))
	rc := dst.connect(t, ctx, true)
	var n int
	var v string
	if err := rc.QueryRow(ctx, "SELECT count(*), max(v) FROM t").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != 2000 || !strings.HasPrefix(v, marker) {
		t.Errorf("restored table: %d rows, max %q; want 2000 rows of %s...", n, v, marker)
	}
}

// extract unpacks a base backup tar into dir, owned by the postgres user.
func extract(t *testing.T, env pgEnv, r io.Reader, dir string) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("extract base backup: %v", err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("extract base backup: %s: unexpected type %c", h.Name, h.Typeflag)
		}
		env.chown(t, p)
	}
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, raw, perm)
}

func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
