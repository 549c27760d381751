package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/testenv"
)

// The real-PostgreSQL tests need root (PostgreSQL runs as the postgres
// user) and the server binaries. They skip without them, and fail when
// CI=true.
func requirePostgres(tb testing.TB) {
	tb.Helper()
	testenv.MustNotBeShort(tb, "needs a real PostgreSQL")
	testenv.MustHavePostgres(tb)
	if _, err := lookupCredential("postgres"); err != nil {
		testenv.Unavailable(tb, "%v", err)
	}
}

// pkiFixture: a project CA for server certificates (what clients trust)
// and an internal CA for replicas' client certificates.
type pkiFixture struct {
	project, internal, other *pki.CA
	serverCert, serverKey    []byte
	replCert, replKey        []byte
}

var (
	fixtureOnce sync.Once
	fixture     pkiFixture
	fixtureErr  error
)

func certs(tb testing.TB) *pkiFixture {
	tb.Helper()
	fixtureOnce.Do(func() {
		now := time.Now()
		f := &fixture
		for _, c := range []struct {
			ca   **pki.CA
			name string
		}{{&f.project, "project"}, {&f.internal, "internal"}, {&f.other, "other"}} {
			if *c.ca, fixtureErr = pki.NewCA("moat test "+c.name+" CA", 24*time.Hour, now); fixtureErr != nil {
				return
			}
		}
		f.serverCert, f.serverKey, fixtureErr = f.project.IssueServer([]string{"localhost", "127.0.0.1", "::1"}, time.Hour, now)
		if fixtureErr != nil {
			return
		}
		f.replCert, f.replKey, fixtureErr = f.internal.IssueClient(replicaName, time.Hour, now)
	})
	if fixtureErr != nil {
		tb.Fatal(fixtureErr)
	}
	return &fixture
}

// replicaName is the node name the fixture's replication certificate
// carries, and the name the primaries' policies expect at 127.0.0.1.
const replicaName = "replica-2"

func caPEM(ca *pki.CA) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// testDir makes a directory the postgres user can traverse, in /dev/shm
// when it exists (much faster than a disk), removed after the test.
func testDir(tb testing.TB) string {
	tb.Helper()
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "moat-postgres-test-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var testSettings = map[string]string{
	"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
	"shared_buffers": "16MB", "max_connections": "30",
}

// newInstance makes an Instance in a fresh directory listening on
// 127.0.0.1 and ::1, and stops it when tb ends, however tb ends.
func newInstance(tb testing.TB, name string, edit func(*Config)) *Instance {
	tb.Helper()
	f := certs(tb)
	dir := testDir(tb)
	cfg := Config{
		Name:            name,
		DataDir:         filepath.Join(dir, "data"),
		ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		Port:            freePort(tb),
		ServerCertPEM:   f.serverCert,
		ServerKeyPEM:    f.serverKey,
		CAPEM:           caPEM(f.internal),
		NoSync:          true,
		Settings:        testSettings,
	}
	if edit != nil {
		edit(&cfg)
	}
	in, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := in.Stop(ctx); err != nil {
			tb.Errorf("stop %s: %v", name, err)
		}
		if tb.Failed() {
			b, _ := os.ReadFile(in.Config().LogFile)
			tb.Logf("%s's log:\n%s", name, tail(b, 4000))
		}
	})
	return in
}

// primary initialises, starts and bootstraps a primary open to 127.0.0.1
// and ::1, with AdminUser's password returned.
func primary(tb testing.TB, ctx context.Context, name string, edit func(*Config)) (*Instance, string) {
	tb.Helper()
	in := newInstance(tb, name, edit)
	if err := in.Init(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := in.WriteHBA(Policy{Allow: prefixes("127.0.0.1/32", "::1/128"), Replicas: []Replica{{Name: replicaName, Addr: netip.MustParsePrefix("127.0.0.1/32")}}}); err != nil {
		tb.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := in.Bootstrap(ctx); err != nil {
		tb.Fatal(err)
	}
	const password = "correct horse 'battery' \\ staple"
	if err := in.SetPassword(ctx, AdminUser, password); err != nil {
		tb.Fatal(err)
	}
	return in, password
}

// clientDSN is a tenant's connection string: verify-full against ca.
func clientDSN(tb testing.TB, in *Instance, host, user, password string, ca *pki.CA, sslmode string) string {
	tb.Helper()
	caFile := filepath.Join(testDir(tb), "ca.pem")
	if err := os.WriteFile(caFile, caPEM(ca), 0o644); err != nil {
		tb.Fatal(err)
	}
	return conninfo("host", host, "port", strconv.Itoa(in.Config().Port), "user", user, "password", password,
		"dbname", Database, "sslmode", sslmode, "sslrootcert", caFile, "connect_timeout", "5")
}

func pgErr(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

func TestTLSOnly(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := certs(t)
	in, password := primary(t, ctx, "tls", func(c *Config) {
		c.Settings = map[string]string{"moat.quoting": `it's a \ "test" # not a comment`}
		for k, v := range testSettings {
			c.Settings[k] = v
		}
	})
	good := clientDSN(t, in, "127.0.0.1", AdminUser, password, f.project, "verify-full")

	t.Run("verify-full", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
			conn, err := pgx.Connect(ctx, clientDSN(t, in, host, AdminUser, password, f.project, "verify-full"))
			if err != nil {
				t.Fatalf("connect to %s with verify-full: %v", host, err)
			}
			var ssl bool
			var version string
			err = conn.QueryRow(ctx, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version)
			conn.Close(ctx)
			if err != nil || !ssl || (version != "TLSv1.3" && version != "TLSv1.2") {
				t.Errorf("%s: pg_stat_ssl ssl=%v version=%q err=%v, want TLS 1.2+", host, ssl, version, err)
			}
		}
	})

	t.Run("plaintext", func(t *testing.T) {
		_, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, password, f.project, "disable"))
		pe := pgErr(err)
		want := `pg_hba.conf rejects connection for host "127.0.0.1", user "moatadmin", database "defaultdb", no encryption`
		if pe == nil || pe.Code != "28000" || pe.Message != want {
			t.Fatalf("plaintext connection: %v, want SQLSTATE 28000 %q", err, want)
		}
	})

	t.Run("tls1.1", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(good)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig.MinVersion = tls.VersionTLS10
		cfg.TLSConfig.MaxVersion = tls.VersionTLS11
		cfg.Fallbacks = nil
		_, err = pgx.ConnectConfig(ctx, cfg)
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Error() != "remote error: tls: protocol version not supported" {
			t.Fatalf("TLS 1.1 connection: %v, want the server's protocol_version alert", err)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		_, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, password, f.other, "verify-full"))
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) || !strings.Contains(err.Error(), "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
			t.Fatalf("connection trusting another CA: %v, want x509.UnknownAuthorityError", err)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		_, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, "nope", f.project, "verify-full"))
		if pe := pgErr(err); pe == nil || pe.Code != "28P01" {
			t.Fatalf("wrong password: %v, want SQLSTATE 28P01", err)
		}
	})

	t.Run("superuser over the network", func(t *testing.T) {
		_, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", Superuser, "", f.project, "verify-full"))
		want := `pg_hba.conf rejects connection for host "127.0.0.1", user "postgres", database "defaultdb", SSL encryption`
		if pe := pgErr(err); pe == nil || pe.Code != "28000" || pe.Message != want {
			t.Fatalf("superuser over TLS: %v, want SQLSTATE 28000 %q", err, want)
		}
	})

	t.Run("not superuser", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, good)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var super, createrole bool
		if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").Scan(&super, &createrole); err != nil {
			t.Fatal(err)
		}
		if super || createrole {
			t.Errorf("%s: superuser %v, createrole %v; want neither", AdminUser, super, createrole)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
			t.Errorf("%s cannot write %s: %v", AdminUser, Database, err)
		}
	})

	t.Run("setting quoting", func(t *testing.T) {
		conn, err := in.connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, "SHOW moat.quoting").Scan(&v); err != nil || v != in.Config().Settings["moat.quoting"] {
			t.Errorf("SHOW moat.quoting = %q, %v, want %q", v, err, in.Config().Settings["moat.quoting"])
		}
	})
}

func TestNarrowAllowlist(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := certs(t)
	in, password := primary(t, ctx, "narrow", nil)
	dsn4 := clientDSN(t, in, "127.0.0.1", AdminUser, password, f.project, "verify-full")
	dsn6 := clientDSN(t, in, "::1", AdminUser, password, f.project, "verify-full")
	open4, err := pgx.Connect(ctx, dsn4)
	if err != nil {
		t.Fatal(err)
	}
	defer open4.Close(ctx)
	open6, err := pgx.Connect(ctx, dsn6)
	if err != nil {
		t.Fatal(err)
	}
	defer open6.Close(ctx)

	// Revoke 127.0.0.1.
	allow := prefixes("::1/128")
	if err := in.WriteHBA(Policy{Allow: allow}); err != nil {
		t.Fatal(err)
	}
	if err := in.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = pgx.Connect(ctx, dsn4)
	want := `pg_hba.conf rejects connection for host "127.0.0.1", user "moatadmin", database "defaultdb", SSL encryption`
	if pe := pgErr(err); pe == nil || pe.Code != "28000" || pe.Message != want {
		t.Fatalf("new connection from a revoked source: %v, want SQLSTATE 28000 %q", err, want)
	}
	if c, err := pgx.Connect(ctx, dsn6); err != nil {
		t.Fatalf("new connection from an allowed source: %v", err)
	} else {
		c.Close(ctx)
	}

	n, err := in.TerminateSessions(ctx, Access{Allowed: allow})
	if err != nil || n != 1 {
		t.Fatalf("TerminateSessions = %d, %v, want 1", n, err)
	}
	_, err = open4.Exec(ctx, "SELECT 1")
	if pe := pgErr(err); pe == nil || pe.Code != "57P01" {
		t.Errorf("query on a revoked source's session: %v, want SQLSTATE 57P01", err)
	}
	if _, err := open6.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("query on an allowed source's session: %v", err)
	}
}

func TestReplica(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := certs(t)
	prim, password := primary(t, ctx, "primary", nil)
	pconn, err := pgx.Connect(ctx, clientDSN(t, prim, "127.0.0.1", AdminUser, password, f.project, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close(ctx)
	if _, err := pconn.Exec(ctx, "CREATE TABLE t (x text); INSERT INTO t VALUES ('before')"); err != nil {
		t.Fatal(err)
	}

	repl := newInstance(t, "replica-2", func(c *Config) {
		c.Primary = &Upstream{
			Host:          "127.0.0.1",
			Port:          prim.Config().Port,
			ClientCertPEM: f.replCert,
			ClientKeyPEM:  f.replKey,
			CAPEM:         caPEM(f.project),
		}
	})
	if err := repl.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := repl.Init(ctx); err != nil {
		t.Fatalf("Init again: %v", err)
	}
	// A new replica refuses every network client until the agent writes
	// its policy.
	if err := repl.WriteHBA(Policy{Allow: prefixes("127.0.0.1/32"), Replicas: []Replica{{Name: "primary", Addr: netip.MustParsePrefix("127.0.0.1/32")}}}); err != nil {
		t.Fatal(err)
	}
	if err := repl.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// The primary sees the replica streaming over TLS (the details of
	// pg_stat_replication are for the superuser: ask over the socket).
	mconn, err := prim.connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer mconn.Close(ctx)
	var state, user, version string
	var ssl bool
	for {
		err := mconn.QueryRow(ctx, `SELECT r.state, r.usename, s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
			WHERE r.application_name = 'replica-2'`).Scan(&state, &user, &ssl, &version)
		if err == nil && state == "streaming" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica not streaming: state %q, %v", state, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if user != ReplicationUser || !ssl {
		t.Errorf("walsender: user %q ssl %v (%s), want %s over TLS", user, ssl, version, ReplicationUser)
	}

	// A row written on the primary is read on the replica.
	if _, err := pconn.Exec(ctx, "INSERT INTO t VALUES ('after')"); err != nil {
		t.Fatal(err)
	}
	rconn, err := pgx.Connect(ctx, clientDSN(t, repl, "127.0.0.1", AdminUser, password, f.project, "verify-full"))
	if err != nil {
		t.Fatalf("connect to the replica: %v", err)
	}
	defer rconn.Close(ctx)
	for {
		var n int
		err := rconn.QueryRow(ctx, "SELECT count(*) FROM t WHERE x IN ('before', 'after')").Scan(&n)
		if err == nil && n == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica has %d of 2 rows: %v", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := rconn.Exec(ctx, "INSERT INTO t VALUES ('x')"); pgErr(err) == nil || pgErr(err).Code != "25006" {
		t.Errorf("write on the replica: %v, want SQLSTATE 25006 (read-only)", err)
	}
}

// TestReplicaCertNamesTheNode: the primary accepts a replication
// certificate only from the address of the replica it names; another
// node's certificate (same CA, same role) is refused there.
func TestReplicaCertNamesTheNode(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := certs(t)
	prim, _ := primary(t, ctx, "primary-names", nil)
	otherCert, otherKey, err := f.internal.IssueClient("replica-3", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		cert, key  []byte
		wantRefuse bool
	}{
		{"another node's certificate", otherCert, otherKey, true},
		{"the replica's own", f.replCert, f.replKey, false},
	} {
		repl := newInstance(t, "replica-names", func(cfg *Config) {
			cfg.Primary = &Upstream{Host: "127.0.0.1", Port: prim.Config().Port, ClientCertPEM: c.cert, ClientKeyPEM: c.key, CAPEM: caPEM(f.project)}
		})
		err := repl.Init(ctx)
		if c.wantRefuse {
			if err == nil || !strings.Contains(err.Error(), "certificate authentication failed") {
				t.Errorf("%s: base backup: %v, want certificate authentication failed", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: base backup: %v", c.name, err)
		}
	}
}

// TestLifecycle runs PostgreSQL under a command prefix (as the agent does
// with ip netns exec), restarts it when it dies, finds it again from a new
// Instance, stops and wipes it.
func TestLifecycle(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in := newInstance(t, "lifecycle", func(c *Config) { c.Exec = []string{"/usr/bin/env", "MOAT_WRAPPED=1"} })
	if err := in.Start(ctx); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Start before Init: %v, want ErrNotInitialized", err)
	}
	if err := in.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Init(ctx); err != nil {
		t.Fatalf("Init again: %v", err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid, ok := in.pid()
	if !ok {
		t.Fatal("no postmaster after Start")
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := lookupCredential("postgres")
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 1 && (fields[0] == "Uid:" || fields[0] == "Gid:"):
			want := cred.Uid
			if fields[0] == "Gid:" {
				want = cred.Gid
			}
			for _, id := range fields[1:] {
				if id != strconv.Itoa(int(want)) {
					t.Errorf("postmaster %s, want %d everywhere", line, want)
				}
			}
		case len(fields) > 0 && fields[0] == "Groups:":
			for _, g := range fields[1:] {
				if g == "0" {
					t.Errorf("postmaster kept root's group: %s", line)
				}
			}
		}
	}
	if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); !strings.Contains(string(env), "MOAT_WRAPPED=1") {
		t.Errorf("postmaster did not run under Config.Exec")
	}

	// Killed: EnsureRunning starts it again.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for in.Running() {
		time.Sleep(5 * time.Millisecond)
	}
	if started, err := in.EnsureRunning(ctx); !started || err != nil {
		t.Fatalf("EnsureRunning after SIGKILL = %v, %v, want true, nil", started, err)
	}
	if started, err := in.EnsureRunning(ctx); started || err != nil {
		t.Fatalf("EnsureRunning when running = %v, %v, want false, nil", started, err)
	}
	if err := in.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	// A broken pg_hba.conf is reported, not silently ignored.
	hba := filepath.Join(in.Config().DataDir, "pg_hba.conf")
	if err := in.writeFile(hba, []byte("hostssl all all 10.0.0.0/33 scram-sha-256\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.Reload(ctx); err == nil || !strings.Contains(err.Error(), "pg_hba.conf has errors") {
		t.Fatalf("Reload with a broken pg_hba.conf: %v, want an error", err)
	}
	if err := in.WriteHBA(Policy{}); err != nil {
		t.Fatal(err)
	}

	// A new Instance (the agent restarted) finds it; a setting that needs
	// a restart is reported, not refused, by Reload.
	cfg := in.Config()
	cfg.Settings = map[string]string{"max_connections": "31"}
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Running() {
		t.Fatal("a new Instance does not see the running postmaster")
	}
	if pending, err := again.PendingRestart(ctx); pending || err != nil {
		t.Fatalf("PendingRestart before a change = %v, %v", pending, err)
	}
	if err := again.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := again.Reload(ctx); err != nil {
		t.Fatalf("Reload with a restart-only change: %v", err)
	}
	if pending, err := again.PendingRestart(ctx); !pending || err != nil {
		t.Fatalf("PendingRestart after changing max_connections = %v, %v, want true", pending, err)
	}
	if err := again.Wipe(); err == nil {
		t.Fatal("Wipe while running succeeded")
	}
	if err := again.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if in.Running() || again.Running() {
		t.Fatal("running after Stop")
	}
	if err := again.Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in.Config().DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory after Wipe: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	f := certs(t)
	base := Config{DataDir: "/var/lib/moat/x", BinDir: "/nonexistent", ServerCertPEM: f.serverCert, ServerKeyPEM: f.serverKey}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"relative", func(c *Config) { c.DataDir = "data" }, "not an absolute path"},
		{"long socket", func(c *Config) { c.SocketDir = "/" + strings.Repeat("s", 100) }, "more than the 107"},
		{"no cert", func(c *Config) { c.ServerKeyPEM = nil }, "TLS only"},
		{"bad name", func(c *Config) { c.Name = "a b" }, "name"},
		{"ssl off", func(c *Config) { c.Settings = map[string]string{"ssl": "off"} }, "cannot be overridden"},
		{"bad primary", func(c *Config) { c.Primary = &Upstream{Host: "a b"} }, "neither an IP address nor a DNS name"},
	}
	for _, tt := range tests {
		cfg := base
		tt.edit(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%s) = %v, want an error with %q", tt.name, err, tt.want)
		}
	}
	if os.Geteuid() == 0 && os.Getenv("MOAT_PG_BINDIR") == "" {
		if _, err := findBinDir(); err == nil {
			cfg := base
			cfg.BinDir = ""
			cfg.DataDir = "/root/moat/data"
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "not traversable by the postgres user") {
				t.Errorf("New with a data directory under /root = %v, want a traversal error", err)
			}
		}
	}
}

// TestClose: Close ends the Instance's watch over the postmaster it
// started, with no goroutine left, and leaves the postmaster running;
// another Instance stops it and reaps it (no zombie stays).
func TestClose(t *testing.T) {
	// Not parallel: the goroutine check counts the package's goroutines.
	testenv.CheckGoroutines(t)
	requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in := newInstance(t, "close", nil)
	if err := in.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid, _ := in.pid()
	if err := in.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := in.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if !in.Running() {
		t.Fatal("the postmaster stopped with Close")
	}
	if err := in.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	again, err := New(in.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		t.Errorf("postmaster %d after Stop: %v, want it gone (reaped):\n%s", pid, err, b)
	}
}

// TestMonitorRole: Bootstrap makes MonitorUser; the agent (its OS user,
// by peer identity over the socket) scrapes the statistics as it, which
// cannot write, and it never logs in over the network.
func TestMonitorRole(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in, _ := primary(t, ctx, "monitor", nil)
	cfg := in.Config()
	dsn := MonitorDSN(cfg.SocketDir, cfg.Port)
	snap, err := pgstat.ScrapeDSN(ctx, dsn, 10*time.Second)
	if err != nil || !snap.Up || snap.Role != pgstat.RolePrimary {
		t.Fatalf("ScrapeDSN as %s = up %v role %q, %v; want a primary's snapshot", MonitorUser, snap.Up, snap.Role, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE monitor_writes (x int)"); pgErr(err) == nil || pgErr(err).Code != "25006" {
		t.Errorf("CREATE TABLE as %s: %v, want read-only transaction (25006)", MonitorUser, err)
	}
	f := certs(t)
	_, err = pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", MonitorUser, "", f.project, "verify-full"))
	if pgErr(err) == nil || pgErr(err).Code != "28000" {
		t.Errorf("%s over the network: %v, want rejected by pg_hba (28000)", MonitorUser, err)
	}
}
