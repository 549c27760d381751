package agent

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/testenv"
)

// ---- a fake control plane ----

// fakeSource is an in-memory control plane the test drives.
type fakeSource struct {
	mu      sync.Mutex
	d       apitype.HostDesired
	changed chan struct{} // closed when d changes
	down    bool
	reports map[string]apitype.NodeReport
	// history has every report of each node, in order.
	history map[string][]apitype.NodeReport
	rchange chan struct{} // closed when a report arrives
	// published records when each revision was published.
	published map[int64]time.Time
}

var errDown = errors.New("control plane down")

func newFakeSource(host string) *fakeSource {
	return &fakeSource{
		d:         apitype.HostDesired{Host: host},
		changed:   make(chan struct{}),
		reports:   map[string]apitype.NodeReport{},
		history:   map[string][]apitype.NodeReport{},
		rchange:   make(chan struct{}),
		published: map[int64]time.Time{},
	}
}

func (s *fakeSource) Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	timeout := time.After(500 * time.Millisecond) // the server's wait, shortened
	for {
		s.mu.Lock()
		if s.down {
			s.mu.Unlock()
			return apitype.HostDesired{}, errDown
		}
		d, ch := s.d, s.changed
		s.mu.Unlock()
		if d.Revision > after {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return apitype.HostDesired{}, ctx.Err()
		case <-timeout:
			return d, nil
		case <-ch:
		}
	}
}

func (s *fakeSource) Report(ctx context.Context, host string, r apitype.HostReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errDown
	}
	for _, n := range r.Nodes {
		s.reports[n.NodeID] = n
		s.history[n.NodeID] = append(s.history[n.NodeID], n)
	}
	close(s.rchange)
	s.rchange = make(chan struct{})
	return nil
}

// update edits the desired state and publishes it at the next revision.
func (s *fakeSource) update(edit func(d *apitype.HostDesired)) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A copy to edit: the agent holds the nodes of the last revision.
	s.d.Nodes = slices.Clone(s.d.Nodes)
	edit(&s.d)
	s.d.Revision++
	s.published[s.d.Revision] = time.Now()
	close(s.changed)
	s.changed = make(chan struct{})
	return s.d.Revision
}

func (s *fakeSource) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// waitReport waits until node's report satisfies ok.
func (s *fakeSource) waitReport(t *testing.T, node string, timeout time.Duration, ok func(apitype.NodeReport) bool) apitype.NodeReport {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		r, have := s.reports[node]
		ch := s.rchange
		s.mu.Unlock()
		if have && ok(r) {
			return r
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("node %s: no matching report within %v; last: %+v", node, timeout, r)
		}
	}
}

func running(allowRev int64) func(apitype.NodeReport) bool {
	return func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportRunning && r.AllowlistRevision == allowRev
	}
}

// ---- environment ----

// requirePostgres ends t unless it can run real nodes: PostgreSQL (and
// root), and iproute2's ip, which runs the servers in their namespaces.
func requirePostgres(t *testing.T) {
	t.Helper()
	testenv.MustHavePostgres(t)
	testenv.MustHaveCommand(t, "ip")
}

// dataDir returns a data directory traversable by the postgres user; its
// postmasters are stopped and it is removed when t ends.
func dataDir(t *testing.T) string {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "moat-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, err := os.ReadDir(filepath.Join(dir, "nodes"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("list node directories: %v", err)
		}
		var wg sync.WaitGroup
		for _, e := range entries {
			wg.Go(func() {
				nd := filepath.Join(dir, "nodes", e.Name())
				in, err := postgres.New(postgres.Config{
					DataDir: filepath.Join(nd, "pgdata"), TLSDir: filepath.Join(nd, "tls"),
					SocketDir: filepath.Join(nd, "run"), LogFile: filepath.Join(nd, "postgres.log"),
					ServerCertPEM: []byte("unused"), ServerKeyPEM: []byte("unused"), User: nodeUserOrPostgres(e.Name()),
				})
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err = in.Stop(ctx)
					cancel()
				}
				if err != nil {
					t.Errorf("stop postgres of %s: %v", e.Name(), err)
				}
			})
		}
		wg.Wait()
		removeNodeUsers(t, entries)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the data directory: %v", err)
		}
	})
	return dir
}

// nodeUserOrPostgres is the user of node id, or postgres if it has none.
func nodeUserOrPostgres(id string) string {
	u := domain.NodeUser(id)
	if _, err := user.Lookup(u); err != nil {
		return "postgres"
	}
	return u
}

// removeNodeUsers removes the users of the nodes whose directories are
// entries (nodes a test left running).
func removeNodeUsers(t *testing.T, entries []os.DirEntry) {
	t.Helper()
	users := hostUsersFor()
	for _, e := range entries {
		if err := users.Remove(domain.NodeUser(e.Name())); err != nil {
			t.Errorf("remove the user of node %s: %v", e.Name(), err)
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startAgent runs an agent until the returned stop function is called (or
// t ends).
func startAgent(t *testing.T, cfg Config, onFirewall func(string, int64, time.Duration)) (stop func()) {
	t.Helper()
	return startAgentWith(t, cfg, func(a *Agent) { a.onFirewall = onFirewall })
}

// startAgentWith is startAgent with the Agent adjusted by edit before it
// runs.
func startAgentWith(t *testing.T, cfg Config, edit func(*Agent)) (stop func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	edit(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return 30s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// ---- certificates and passwords ----

type certs struct {
	project, internal *pki.CA
}

func newCerts(t *testing.T) certs {
	t.Helper()
	now := time.Now()
	p, err := pki.NewCA("test project CA", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	i, err := pki.NewCA("test internal CA", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return certs{p, i}
}

// node issues node id's server certificate for names and its
// replication client certificate (named id).
func (c certs) node(t *testing.T, id string, names ...string) apitype.NodeTLS {
	t.Helper()
	cert, key, err := c.project.IssueServer(names, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc, rk, err := c.internal.IssueClient(id, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return apitype.NodeTLS{
		CertPEM: string(cert), KeyPEM: string(key),
		ProjectCAPEM: string(c.project.CertPEM), InternalCAPEM: string(c.internal.CertPEM),
		ReplCertPEM: string(rc), ReplKeyPEM: string(rk),
	}
}

const (
	replUser = "replicator"
	password = "correct-horse-battery"
)

// scramVerifier computes PostgreSQL's SCRAM-SHA-256 verifier of pw, as the
// control plane does.
func scramVerifier(t *testing.T, pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	salted, err := pbkdf2.Key(sha256.New, pw, salt, 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(k []byte, m string) []byte {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(m))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$4096:%s$%s:%s", b64(salt), b64(stored[:]), b64(mac(salted, "Server Key")))
}

// ---- clients ----

// dialPG connects from src inside ns to the node at dst, naming it host.
func dialPG(ctx context.Context, t *testing.T, ns *netnstest.NS, src netip.Addr, dst netip.AddrPort, host, sslmode, rootCert string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=moatadmin dbname=defaultdb sslmode=%s sslrootcert=%s connect_timeout=3",
		host, dst.Port(), sslmode, rootCert))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{dst.Addr().String()}, nil }
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return ns.Dial(src, dst, 2*time.Second) }
	return pgx.ConnectConfig(ctx, cfg)
}

// mgmt connects to a node's PostgreSQL over its Unix socket as the
// superuser.
func mgmt(ctx context.Context, t *testing.T, dir, node, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = filepath.Join(dir, "nodes", node, "run"), 5432, "postgres", db
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("management connection to %s: %v", node, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func postmasterPID(t *testing.T, dir, node string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "nodes", node, "pgdata", "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		return 0 // being written
	}
	return pid
}

// allStacks returns the stacks of all goroutines.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// ---- tests ----

// TestNode runs one node through creation, allowlist changes, an agent
// kill, a control-plane outage, a postmaster crash and deletion.
func TestNode(t *testing.T) {
	// Not parallel: the goroutine check counts the package's goroutines.
	testenv.CheckGoroutines(t)
	requirePostgres(t)
	pair := netnstest.NewPair(t, 1)
	dir := dataDir(t)
	cs := newCerts(t)
	const host, nodeID, name = "host-1", "nod-test1", "n1.svc.test"
	nodeAddr := netip.AddrPortFrom(pair.ServerV4, 5432)
	allowed, other := pair.ClientV4, pair.ExtraV4[0]
	rootCert := writeFile(t, t.TempDir(), "ca.pem", string(cs.project.CertPEM))

	src := newFakeSource(host)
	var allowRev int64 = 1
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{{
			NodeID: nodeID, ServiceID: "svc-1", ProjectID: "prj-1", Role: apitype.RolePrimary, State: stateCreating,
			Namespace: pair.Server.Name, Address: pair.ServerV4.String(), Port: 5432,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS:     cs.node(t, nodeID, name, pair.ServerV4.String()),
			AllowV4: []string{allowed.String() + "/32"}, AllowlistRevision: allowRev,
		}}
	})
	setAllow := func(v4 ...string) int64 {
		allowRev++
		return src.update(func(d *apitype.HostDesired) {
			d.Nodes[0].State, d.Nodes[0].AllowV4, d.Nodes[0].AllowlistRevision = stateRunning, v4, allowRev
		})
	}

	var fwMu sync.Mutex
	fwAt := map[int64]time.Time{}
	fwTook := map[int64]time.Duration{}
	firstFirewallBeforePG := true
	var fwCalls int
	onFirewall := func(node string, rev int64, took time.Duration) {
		fwMu.Lock()
		defer fwMu.Unlock()
		fwAt[rev], fwTook[rev] = time.Now(), took
		if fwCalls == 0 && postmasterPID(t, dir, nodeID) != 0 {
			firstFirewallBeforePG = false
		}
		fwCalls++
	}
	cfg := Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true}
	stop := startAgent(t, cfg, onFirewall)

	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	src.waitReport(t, nodeID, 30*time.Second, running(allowRev))
	fwMu.Lock()
	if !firstFirewallBeforePG {
		t.Errorf("PostgreSQL was running before the firewall was first applied")
	}
	fwMu.Unlock()

	// (1) verify-full from the allowed source works, over TLS.
	conn, err := dialPG(ctx, t, pair.Client, allowed, nodeAddr, name, "verify-full", rootCert)
	if err != nil {
		t.Fatalf("connect from %v with verify-full: %v", allowed, err)
	}
	var ssl bool
	var user string
	if err := conn.QueryRow(ctx, "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &user); err != nil || !ssl || user != postgres.AdminUser {
		t.Fatalf("session: ssl=%v user=%q err=%v, want ssl as %s", ssl, user, err, postgres.AdminUser)
	}
	// Plaintext is refused by pg_hba with SQLSTATE 28000.
	_, err = dialPG(ctx, t, pair.Client, allowed, nodeAddr, name, "disable", rootCert)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
		t.Fatalf("plaintext connection: err = %v, want SQLSTATE 28000", err)
	}
	// The other source is dropped by the firewall.
	if err := pair.Client.Probe(other, nodeAddr, 300*time.Millisecond); !errors.Is(err, netnstest.ErrTimeout) {
		t.Fatalf("probe from %v (not allowed) = %v, want a timeout", other, err)
	}

	// (2) Narrow to the other source: the allowed one is dropped and its
	// session cut.
	setAllow(other.String() + "/32")
	src.waitReport(t, nodeID, 10*time.Second, running(allowRev))
	if err := pair.Client.Probe(allowed, nodeAddr, 300*time.Millisecond); !errors.Is(err, netnstest.ErrTimeout) {
		t.Fatalf("probe from revoked %v = %v, want a timeout", allowed, err)
	}
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = conn.Exec(qctx, "SELECT 1")
	qcancel()
	if err == nil {
		t.Fatalf("the revoked source's open session still answers")
	}
	conn.Close(context.Background())
	var left int
	if err := mgmt(ctx, t, dir, nodeID, "postgres").QueryRow(ctx,
		"SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet", allowed.String()).Scan(&left); err != nil || left != 0 {
		t.Fatalf("sessions from the revoked source still in pg_stat_activity: %d (err %v), want 0", left, err)
	}
	c2, err := dialPG(ctx, t, pair.Client, other, nodeAddr, name, "verify-full", rootCert)
	if err != nil {
		t.Fatalf("connect from newly allowed %v: %v", other, err)
	}
	c2.Close(ctx)
	// Widen again: works.
	setAllow("198.18.0.0/24")
	src.waitReport(t, nodeID, 10*time.Second, running(allowRev))
	c3, err := dialPG(ctx, t, pair.Client, allowed, nodeAddr, name, "verify-full", rootCert)
	if err != nil {
		t.Fatalf("connect from %v after widening: %v", allowed, err)
	}
	c3.Close(ctx)

	// Latency: published desired state -> firewall applied.
	var lat, own []time.Duration
	for i := range 30 {
		v4 := []string{"198.18.0.0/24"}
		if i%2 == 0 {
			v4 = []string{allowed.String() + "/32", other.String() + "/32", "203.0.113.0/24"}
		}
		rev := setAllow(v4...)
		src.waitReport(t, nodeID, 10*time.Second, running(allowRev))
		src.mu.Lock()
		pub := src.published[rev]
		src.mu.Unlock()
		fwMu.Lock()
		at, ok := fwAt[rev]
		took := fwTook[rev]
		fwMu.Unlock()
		if !ok {
			t.Fatalf("revision %d: no firewall apply recorded", rev)
		}
		lat = append(lat, at.Sub(pub))
		own = append(own, at.Sub(pub)-took)
	}
	t.Logf("allowlist change -> firewall applied: p50 %v, p99 %v, max %v over %d changes; without the kernel transaction: p50 %v, p99 %v",
		percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1), len(lat), percentile(own, 0.5), percentile(own, 0.99))

	// (3) Kill the agent with the narrow policy in force: the firewall
	// and PostgreSQL stay.
	setAllow(other.String() + "/32")
	src.waitReport(t, nodeID, 10*time.Second, running(allowRev))
	pid := postmasterPID(t, dir, nodeID)
	stop()
	// Stopped, the agent watches the postmaster no more (TestNode is not
	// parallel: no other test's instance runs).
	// Close ends the watch at its next poll (100 ms): wait for that.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stacks := allStacks()
		if !strings.Contains(stacks, "postgres.(*Instance).reap") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("agent stopped: a postmaster is still watched 3 s later:\n%s", stacks)
			break
		}
	}
	if err := pair.Client.Probe(allowed, nodeAddr, 300*time.Millisecond); !errors.Is(err, netnstest.ErrTimeout) {
		t.Fatalf("agent killed: probe from revoked %v = %v, want a timeout", allowed, err)
	}
	if err := pair.Client.Probe(other, nodeAddr, 2*time.Second); err != nil {
		t.Fatalf("agent killed: probe from allowed %v: %v", other, err)
	}
	if c, err := dialPG(ctx, t, pair.Client, other, nodeAddr, name, "verify-full", rootCert); err != nil {
		t.Fatalf("agent killed: PostgreSQL does not answer: %v", err)
	} else {
		c.Close(ctx)
	}
	if got := postmasterPID(t, dir, nodeID); got != pid {
		t.Fatalf("agent killed: postmaster pid %d, want %d", got, pid)
	}

	// A new agent with the control plane down supervises from its state
	// file: a killed postmaster is restarted.
	src.setDown(true)
	startAgent(t, cfg, nil)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill postmaster: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p := postmasterPID(t, dir, nodeID); p != 0 && p != pid {
			c, err := dialPG(ctx, t, pair.Client, other, nodeAddr, name, "verify-full", rootCert)
			if err == nil {
				c.Close(ctx)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("postmaster not restarted within 20s of being killed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pair.Client.Probe(allowed, nodeAddr, 300*time.Millisecond); !errors.Is(err, netnstest.ErrTimeout) {
		t.Fatalf("control plane down: probe from revoked %v = %v, want a timeout", allowed, err)
	}

	// The control plane returns and deletes the node: stopped, wiped.
	src.setDown(false)
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateDeleting })
	src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	if _, err := os.Stat(filepath.Join(dir, "nodes", nodeID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node directory after wipe: %v, want it gone", err)
	}
	if err := pair.Client.Probe(other, nodeAddr, 300*time.Millisecond); err == nil {
		t.Errorf("PostgreSQL still accepts connections after the node was wiped")
	}
	st, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, mode %v, want 0600", err, st.Mode().Perm())
	}
}

// TestReplica runs a primary and a replica streaming over verified TLS.
func TestReplica(t *testing.T) {
	// Not parallel: the goroutine check counts the package's goroutines.
	testenv.CheckGoroutines(t)
	requirePostgres(t)
	// The pair's two ends are the two nodes: primary 198.18.0.1, replica
	// 198.18.0.2.
	pair := netnstest.NewPair(t, 0)
	dir := dataDir(t)
	cs := newCerts(t)
	const host = "host-2"
	pAddr, rAddr := pair.ServerV4.String(), pair.ClientV4.String()
	base := apitype.NodeDesired{
		ServiceID: "svc-2", ProjectID: "prj-2", State: stateCreating, Port: 5432,
		Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
		AllowlistRevision: 1,
	}
	primary, replica := base, base
	primary.NodeID, primary.Role, primary.Namespace, primary.Address = "nod-p", apitype.RolePrimary, pair.Server.Name, pAddr
	primary.TLS, primary.Peers = cs.node(t, "nod-p", "p.svc.test", pAddr), []string{rAddr + "/32"}
	primary.PeerNodes = []apitype.PeerNode{{NodeID: "nod-r", Address: rAddr}}
	replica.NodeID, replica.Index, replica.Role, replica.Namespace, replica.Address = "nod-r", 1, apitype.RoleReplica, pair.Client.Name, rAddr
	replica.TLS, replica.Peers = cs.node(t, "nod-r", "r.svc.test", rAddr), []string{pAddr + "/32"}
	replica.PeerNodes = []apitype.PeerNode{{NodeID: "nod-p", Address: pAddr}}
	replica.PrimaryAddress, replica.PrimaryName = pAddr, "p.svc.test"

	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) { d.Nodes = []apitype.NodeDesired{replica, primary} })
	startAgent(t, Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true}, nil)
	src.waitReport(t, "nod-p", 30*time.Second, running(1))
	src.waitReport(t, "nod-r", 60*time.Second, running(1))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc := mgmt(ctx, t, dir, "nod-p", postgres.Database)
	var app, state, client string
	var ssl bool
	// The replica runs once it is consistent; its WAL receiver connects
	// right after.
	var err error
	for {
		err = pc.QueryRow(ctx, `SELECT r.application_name, r.state, host(r.client_addr), s.ssl
			FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)`).Scan(&app, &state, &client, &ssl)
		if !errors.Is(err, pgx.ErrNoRows) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pg_stat_replication on the primary: %v", err)
	}
	if app != "nod-r" || client != rAddr || !ssl {
		t.Fatalf("walsender: application_name %q client %s ssl %v, want nod-r from %s over TLS", app, client, ssl, rAddr)
	}
	if _, err := pc.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('replicated')"); err != nil {
		t.Fatal(err)
	}
	rc := mgmt(ctx, t, dir, "nod-r", postgres.Database)
	for {
		var v string
		err := rc.QueryRow(ctx, "SELECT v FROM t").Scan(&v)
		if err == nil && v == "replicated" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("row not replicated: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc.Close(ctx)

	// A node that leaves the desired state, named deleted, is stopped and
	// wiped.
	src.update(func(d *apitype.HostDesired) {
		d.Nodes, d.Deleted = []apitype.NodeDesired{primary}, []string{"nod-r"}
	})
	for {
		_, err := os.Stat(filepath.Join(dir, "nodes", "nod-r"))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica's directory not wiped after it left the desired state: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDataDirNotTraversable checks that New refuses a data directory the
// postgres user cannot reach.
func TestDataDirNotTraversable(t *testing.T) {
	t.Parallel()
	testenv.MustHaveRoot(t)
	if _, err := user.Lookup("postgres"); err != nil {
		testenv.Unavailable(t, "needs the postgres system user: %v", err)
	}
	parent := t.TempDir()
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Host: "h", Source: newFakeSource("h"), DataDir: filepath.Join(parent, "moat")})
	if err == nil || !strings.Contains(err.Error(), "not traversable") {
		t.Fatalf("New with a data directory under a 0700 directory: err = %v, want a traversal error", err)
	}
}

// TestState checks the state file's round trip and that it belongs to one
// host. It needs no root.
func TestState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := &Agent{cfg: Config{Host: "h1", DataDir: dir, NoSync: true}}
	if d, err := a.loadState(); d != nil || err != nil {
		t.Fatalf("loadState() on an empty directory = %v, %v, want nil, nil", d, err)
	}
	want := apitype.HostDesired{Host: "h1", Revision: 7, Nodes: []apitype.NodeDesired{{NodeID: "n1", AllowV4: []string{"192.0.2.0/24"}}}}
	if err := a.saveState(want); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (err %v), want 0600", st.Mode().Perm(), err)
	}
	got, err := a.loadState()
	if err != nil || got.Revision != 7 || len(got.Nodes) != 1 || got.Nodes[0].AllowV4[0] != "192.0.2.0/24" {
		t.Fatalf("loadState() = %+v, %v, want %+v", got, err, want)
	}
	b := &Agent{cfg: Config{Host: "h2", DataDir: dir}}
	if _, err := b.loadState(); err == nil {
		t.Fatalf("loadState() of another host's state: no error")
	}

	// A restore's private key is never written down.
	key := "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
	withKey := apitype.HostDesired{Host: "h1", Revision: 8, Nodes: []apitype.NodeDesired{{NodeID: "n2",
		Restore: &apitype.NodeRestore{SourceServiceID: "svc-a", PrivateKeyPEM: key, BackupLabel: "L"}}}}
	if err := a.saveState(withKey); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "secret") || strings.Contains(string(raw), "PRIVATE KEY") {
		t.Fatalf("the state file holds the restore's private key:\n%s", raw)
	}
	if withKey.Nodes[0].Restore.PrivateKeyPEM != key {
		t.Fatalf("saveState changed its argument")
	}
	got, err = a.loadState()
	if err != nil || got.Nodes[0].Restore == nil || got.Nodes[0].Restore.BackupLabel != "L" {
		t.Fatalf("loadState() = %+v, %v", got, err)
	}
}

// TestStateSealsNodeKeys: the nodes' private keys are not in the state
// file, only sealed under the host's state key (0600, beside it); the
// state loads back whole, and not without that key.
func TestStateSealsNodeKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := &Agent{cfg: Config{Host: "h1", DataDir: dir, NoSync: true}}
	cs := newCerts(t)
	tls1, tls2 := cs.node(t, "n1", "n1.test"), cs.node(t, "n2", "n2.test")
	authKey := []byte("backup-auth-key-0123456789abcdef")
	support := &apitype.NodeSupport{GrantID: "sgr-1", Role: "moat_support_1", Password: "support-password-0123456789"}
	want := apitype.HostDesired{Host: "h1", Revision: 9, Nodes: []apitype.NodeDesired{
		{NodeID: "n1", TLS: tls1, BackupAuthKey: authKey, Ops: &apitype.NodeOps{UserCA: "ca", Support: support}},
		{NodeID: "n2", TLS: tls2}}}
	if err := a.saveState(want); err != nil {
		t.Fatal(err)
	}
	if want.Nodes[0].Ops.Support.Password == "" || want.Nodes[0].BackupAuthKey == nil || want.Nodes[0].TLS.KeyPEM == "" {
		t.Fatalf("saveState changed the desired state it was given")
	}
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{tls1.KeyPEM, tls1.ReplKeyPEM, tls2.KeyPEM, tls2.ReplKeyPEM} {
		body := strings.Split(k, "\n")[1] // the key's first base64 line
		if strings.Contains(string(raw), body) || strings.Contains(string(raw), "PRIVATE KEY") {
			t.Fatalf("the state file holds a node's private key:\n%s", raw)
		}
	}
	for name, s := range map[string]string{"support role's password": support.Password, "backup authentication key": string(authKey),
		"backup authentication key (base64)": base64.StdEncoding.EncodeToString(authKey)} {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the state file holds the %s:\n%s", name, raw)
		}
	}
	if !strings.Contains(string(raw), tls1.CertPEM[30:60]) {
		t.Errorf("the state file lacks the node's certificate:\n%s", raw)
	}
	st, err := os.Stat(filepath.Join(dir, stateKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state key file: %v, %v, want mode 0600", st, err)
	}
	got, err := a.loadState()
	if err != nil {
		t.Fatal(err)
	}
	if got.Nodes[0].TLS != tls1 || got.Nodes[1].TLS != tls2 {
		t.Errorf("loadState() TLS = %v, %v; want the saved ones", got.Nodes[0].TLS.Redacted(), got.Nodes[1].TLS.Redacted())
	}
	if string(got.Nodes[0].BackupAuthKey) != string(authKey) || got.Nodes[0].Ops == nil || got.Nodes[0].Ops.Support == nil ||
		got.Nodes[0].Ops.Support.Password != support.Password {
		t.Errorf("loadState() did not give back the backup authentication key and the support role's password")
	}

	// Without the key the state does not load (the agent then waits for
	// the control plane); keys swapped between nodes do not open.
	var s state
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	s.Sealed["n1"], s.Sealed["n2"] = s.Sealed["n2"], s.Sealed["n1"]
	swapped, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, stateFile), swapped, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.loadState(); err == nil {
		t.Errorf("loadState() with keys swapped between nodes: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, stateKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.loadState(); err == nil {
		t.Errorf("loadState() without the state key: no error")
	}
}

func TestParseAccess(t *testing.T) {
	t.Parallel()
	acc, err := parseAccess(apitype.NodeDesired{
		AllowV4: []string{"192.0.2.7/24", "198.51.100.1"},
		AllowV6: []string{"2001:db8::/32"},
		Peers:   []string{"203.0.113.5/32", "2001:db8::5"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(acc.v4, acc.v6, acc.peers)
	want := "[192.0.2.0/24 198.51.100.1/32] [2001:db8::/32] [203.0.113.5/32 2001:db8::5/128]"
	if got != want {
		t.Errorf("parseAccess = %s, want %s", got, want)
	}
	for _, bad := range []apitype.NodeDesired{
		{AllowV4: []string{"2001:db8::/32"}},
		{AllowV6: []string{"192.0.2.0/24"}},
		{AllowV4: []string{"192.0.2.0/33"}},
		{Peers: []string{"fe80::1%eth0"}},
		{AllowV4: []string{"192.0.2.0/24\nhost all all 0.0.0.0/0 trust"}},
	} {
		if _, err := parseAccess(bad); err == nil {
			t.Errorf("parseAccess(%+v): no error", bad)
		}
	}
}

func TestVerifierRE(t *testing.T) {
	t.Parallel()
	if v := scramVerifier(t, password); !verifierRE.MatchString(v) {
		t.Errorf("verifier %q rejected", v)
	}
	for _, bad := range []string{"", "md5abc", "SCRAM-SHA-256$4096:c2FsdA==$x:y", "SCRAM-SHA-256$4096:a$" + strings.Repeat("A", 43) + "=:" + strings.Repeat("A", 43) + "='; DROP ROLE x; --"} {
		if verifierRE.MatchString(bad) {
			t.Errorf("verifier %q accepted", bad)
		}
	}
}
