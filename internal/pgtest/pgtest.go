// Package pgtest runs a throwaway PostgreSQL server for tests, in the way
// net/http/httptest runs an HTTP server: initdb into a temporary directory,
// postgres listening on 127.0.0.1 on a free port with trust authentication
// and fsync off, and a fresh database per test.
//
// A test package shares one server: its TestMain calls Main, and each test
// calls Shared(t).NewDatabase(t). Start gives a test a server of its own.
// The server is stopped and its directory removed when the test binary
// exits, however it exits (even by a panic or SIGKILL): a watchdog shell
// owns the server and ends it as soon as the pipe from this process closes.
//
// When the PostgreSQL binaries or the postgres system user are missing, the
// tests that ask for a server skip with the reason, or fail when the
// environment has CI=true. The binaries are found with `pg_config --bindir`
// (Debian keeps them off PATH), or in $MOAT_PG_BINDIR. As root, initdb and
// postgres run as the postgres user, as they refuse to run as root. The
// data directory is in /dev/shm when there is room, else /tmp, or in
// $MOAT_PGTEST_DIR.
//
// Only tests import pgtest.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/testenv"
)

// errUnavailable marks a machine without PostgreSQL: tests skip (or fail
// under CI=true) rather than fail.
var errUnavailable = errors.New("postgresql unavailable")

// Server is a running PostgreSQL server.
type Server struct {
	dir     string // temporary directory: data/, sock/, log
	host    string
	port    int
	cmd     *exec.Cmd      // the watchdog shell
	stdin   io.WriteCloser // closing it stops the server
	out     bytes.Buffer   // the watchdog's output; read after done
	done    chan struct{}  // closed when the watchdog has exited
	waitErr error

	stopOnce sync.Once
	stopErr  error
	dbs      atomic.Int64
}

var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs a test package's tests with one shared PostgreSQL server,
// started on the first call to Shared, and stops it afterwards. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	os.Exit(code)
}

// Shared returns the package's shared server, starting it on first use.
// Without PostgreSQL it skips tb (fails it under CI=true).
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() { shared.srv, shared.err = start() })
	if shared.err != nil {
		fail(tb, shared.err)
	}
	return shared.srv
}

// Start starts a server for tb alone and stops it when tb ends. Without
// PostgreSQL it skips tb (fails it under CI=true).
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start()
	if err != nil {
		fail(tb, err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stop postgresql: %v", err)
		}
	})
	return s
}

func fail(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, errUnavailable) {
		testenv.Unavailable(tb, "pgtest: %v", err)
	}
	tb.Fatalf("pgtest: %v", err)
}

// DSN returns a connection string for database db on the server, as the
// superuser "postgres".
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", s.host, s.port, db)
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// NewDatabase creates an empty database for tb and returns its DSN. The
// database lives as long as the server.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	return s.DSN(name)
}

// Stop shuts the server down at once (an immediate shutdown: no checkpoint)
// and removes its directory. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stdin.Close()
		select {
		case <-s.done:
			// A non-zero status is the immediate shutdown's.
		case <-time.After(30 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			s.stopErr = fmt.Errorf("postgresql did not stop within 30s; killed it: %s", s.out.String())
		}
		os.RemoveAll(s.dir) // normally already gone
	})
	return s.stopErr
}

// bindir finds the PostgreSQL server binaries.
func bindir() (string, error) {
	dir, err := testenv.PGBinDir()
	if err != nil {
		return "", fmt.Errorf("%w: %w", errUnavailable, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return "", fmt.Errorf("%w: %w (install the postgresql server, or set MOAT_PG_BINDIR)", errUnavailable, err)
	}
	return dir, nil
}

// credential is who the server runs as: the postgres user when we are root,
// else ourselves (nil).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root and %v", errUnavailable, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func start() (*Server, error) {
	bin, err := bindir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // another process may take the free port first
		s, err := startOnce(bin, cred)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startOnce(bin string, cred *syscall.Credential) (*Server, error) {
	dir, err := os.MkdirTemp(baseDir(), "moat-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("make directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sock"), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("make directory: %w", err)
	}
	if cred != nil {
		for _, d := range []string{dir, filepath.Join(dir, "sock")} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				os.RemoveAll(dir)
				return nil, fmt.Errorf("chown %s: %w", d, err)
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "-D", filepath.Join(dir, "data"))
	initdb.Env = childEnv()
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	s, err := launch(bin, dir, cred)
	if err != nil {
		os.RemoveAll(dir)
	}
	return s, err
}

// watchdog runs postgres and, beside it, waits for its own stdin to close:
// when Stop closes it, or when this process dies however it dies. Then it
// shuts postgres down immediately (SIGQUIT; SIGKILL 10s later). When
// postgres has exited, for whatever reason, it removes the directory.
// (An asynchronous list's stdin is /dev/null in sh: hence fd 3.)
const watchdog = `
exec 3<&0 0</dev/null
"$PGBIN/postgres" -D "$PGDIR/data" -p "$PGPORT" -k "$PGDIR/sock" \
	-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
	-c full_page_writes=off -c max_connections=400 -c shared_buffers=32MB \
	-c log_min_messages=warning -c logging_collector=off 2>"$PGDIR/log" 3<&- &
pg=$!
(cat <&3 >/dev/null; kill -QUIT $pg; sleep 10; kill -KILL $pg) >/dev/null 2>&1 &
exec 3<&-
wait $pg
status=$?
trap '' TERM
kill -TERM 0 2>/dev/null # the stopper and its sleep, if still there
tail -c 4000 "$PGDIR/log" >&2
rm -rf "$PGDIR"
exit $status
`

func launch(bin, dir string, cred *syscall.Credential) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", watchdog)
	cmd.Env = append(childEnv(), "PGBIN="+bin, "PGDIR="+dir, "PGPORT="+strconv.Itoa(port))
	cmd.Dir = "/"
	// Its own process group, so a terminal's ^C reaches the test binary
	// alone, which then closes the pipe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, host: "127.0.0.1", port: port, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	cmd.Stdout = &s.out
	cmd.Stderr = &s.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			return s, nil
		}
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			return nil, fmt.Errorf("start postgres: not ready within 30s: %v\n%s", err, s.out.String())
		case <-s.done:
			return nil, fmt.Errorf("start postgres: exited: %v\n%s", s.waitErr, s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// baseDir is where servers live: $MOAT_PGTEST_DIR, else /dev/shm (memory:
// creating a database is several times faster there), else /tmp. Never
// $TMPDIR, which may be a directory of root's that the postgres user cannot
// traverse.
func baseDir() string {
	if d := os.Getenv("MOAT_PGTEST_DIR"); d != "" {
		return d
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err == nil && st.Bavail*uint64(st.Bsize) > 2<<30 {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.Mode()&os.ModeSticky != 0 {
			return "/dev/shm"
		}
	}
	return "/tmp"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func childEnv() []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC"}
}
