package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/up"
)

// require skips (or, under CI=true, fails) a test whose machine lacks
// root, PostgreSQL or psql.
func require(t testing.TB) {
	t.Helper()
	testenv.MustHavePostgres(t) // and root, for the network namespaces
	testenv.MustHaveCommand(t, "psql")
}

// env is a running stack and an admin of one project on it.
type env struct {
	t       testing.TB
	dir     string
	prefix  string
	stack   *up.Stack
	stop    func()
	op      *client.Client
	project string
	caFile  string
}

// start runs a stack on dir (a new one when dir is "") with the namespace
// prefix (a new one when "").
func start(t testing.TB, dir, prefix string) *env {
	t.Helper()
	return startWith(t, dir, prefix, nil)
}

// startWith is start with the control plane's configuration adjusted by
// configure. Scheduled backups are off unless configure turns them on.
func startWith(t testing.TB, dir, prefix string, configure func(*controlplane.Config)) *env {
	t.Helper()
	return startStack(t, dir, prefix, func(c *up.Config) {
		if configure != nil {
			configure(&c.ControlPlane)
		}
	})
}

// oneRegion is the catalog of a test's stack unless configure sets
// another: us-east-1 alone, so that its fleet is three agents (one per
// AZ) where moat up's is six, the other three idle in most tests. A test
// that needs the second region, or the fleet as moat up runs it, sets
// the catalog (fullFleet).
var oneRegion = domain.Catalog{Regions: domain.DefaultCatalog().Regions[:1]}

// fullFleet gives a stack moat up's catalog (and fleet): both regions.
func fullFleet(c *controlplane.Config) { c.Catalog = domain.DefaultCatalog() }

// startStack is start with the stack's configuration adjusted by
// configure (nil: none). Its catalog is oneRegion unless configure sets
// another.
func startStack(t testing.TB, dir, prefix string, configure func(*up.Config)) *env {
	t.Helper()
	require(t)
	if dir == "" {
		// Not t.TempDir(): its parents are 0700 and the postgres user
		// must traverse to the nodes' data.
		var err error
		if dir, err = os.MkdirTemp("/tmp", "moat-e2e-"); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o711)
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	if prefix == "" {
		prefix = "moat-e" + strings.ToLower(rand.Text()[:6]) + "-"
		t.Cleanup(func() {
			if _, err := up.Down(context.Background(), dir, prefix, 10*time.Second); err != nil {
				t.Errorf("down: %v", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := up.Config{ControlPlane: controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", BackupInterval: -1},
		CloudPrefix: prefix, NoSync: true, DNSListen: "127.0.0.1:0", MoatBinary: moatBinary(t),
		VolumeSize: 10 << 30} // every node on its own encrypted volume, as in moat up
	cfg.ControlPlane.Catalog = oneRegion
	if configure != nil {
		configure(&cfg)
	}
	if os.Getenv("MOAT_E2E_LOG") != "" {
		cfg.ControlPlane.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := up.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	stopped := false
	e := &env{t: t, dir: dir, prefix: prefix, stack: st}
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stack: %v", err)
		}
	}
	t.Cleanup(e.stop)
	if e.op, err = st.Client(controlplane.AdminTokenFile); err != nil {
		t.Fatal(err)
	}
	// Services are placed on hosts whose agents heartbeat.
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if err := st.WaitReady(rctx); err != nil {
		t.Fatalf("%v (agent logs in %s)", err, filepath.Join(dir, up.AgentsDir))
	}
	return e
}

// ctx is a context for the test's calls, a guard against a hang: many
// tests hold one for their whole length, which under the load of
// parallel tests can pass two minutes.
func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// newProject creates a project and writes its CA where psql can read it.
func (e *env) newProject(name string) {
	e.t.Helper()
	p, err := e.op.CreateProject(e.ctx(), apitype.ProjectCreate{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	e.project = p.ID
	ca, err := e.op.GetProjectCA(e.ctx(), p.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.caFile = filepath.Join(e.dir, "project-ca-"+p.ID+".pem")
	if err := os.WriteFile(e.caFile, []byte(ca.PEM), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// createService creates a service and waits until it runs.
func (e *env) createService(name string, nodes int) (apitype.Service, string) {
	e.t.Helper()
	svc, err := e.op.CreateService(e.ctx(), e.project, apitype.ServiceCreate{Name: name, Region: "us-east-1", Nodes: nodes})
	if err != nil {
		e.t.Fatal(err)
	}
	pw := svc.AdminPassword
	got, err := e.op.WaitService(e.ctx(), e.project, svc.ID, 20*time.Millisecond)
	if err != nil {
		e.t.Fatalf("service %s did not run: %v", svc.ID, err)
	}
	return got, pw
}

// result is what a command in a sim host printed.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// psql runs psql in the sim host with conninfo and extra arguments.
func (e *env) psql(host, password, conninfo string, args ...string) result {
	e.t.Helper()
	argv := append([]string{"env", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=2", "psql", "-X", "-At", conninfo}, args...)
	var out, errb bytes.Buffer
	code, err := e.stack.Sim.Exec(e.ctx(), host, argv, nil, &out, &errb)
	if err != nil {
		e.t.Fatalf("exec in %s: %v", host, err)
	}
	return result{code, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String())}
}

// conninfo is a verify-full connection string for the service, to addr
// (the primary's when "").
func (e *env) conninfo(svc apitype.Service, addr string, extra ...string) string {
	if addr == "" {
		addr = svc.Connection.Address
	}
	parts := append([]string{
		"host=" + svc.Connection.Host, "hostaddr=" + addr, fmt.Sprintf("port=%d", svc.Connection.Port),
		"dbname=" + svc.Connection.Database, "user=" + svc.Connection.User,
		"sslmode=verify-full", "sslrootcert=" + e.caFile,
	}, extra...)
	return strings.Join(parts, " ")
}

// setAllowlist replaces the allowlist and waits until every node enforces it.
func (e *env) setAllowlist(svc string, cidrs ...string) time.Duration {
	e.t.Helper()
	var entries []apitype.AllowEntry
	for _, c := range cidrs {
		entries = append(entries, apitype.AllowEntry{CIDR: c})
	}
	start := time.Now()
	al, _, err := e.op.PutAllowlist(e.ctx(), e.project, svc, apitype.AllowlistUpdate{AllowedIPs: entries, ConfirmEmpty: len(entries) == 0}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.op.WaitAllowlist(e.ctx(), e.project, svc, al.Revision, 5*time.Millisecond); err != nil {
		e.t.Fatal(err)
	}
	return time.Since(start)
}
