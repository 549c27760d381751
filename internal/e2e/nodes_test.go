package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/up"
)

// TestPublicService: from the laptop on the simulated internet a tenant
// connects with verify-full; plaintext, TLS 1.1, a wrong CA and a source
// outside the allowlist are refused with the errors a client sees; a
// narrowed allowlist cuts the open session and a widened one lets it back.
func TestPublicService(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("orders", 1)
	// A host's agent token reads its own host's desired state (the
	// nodes' keys) only.
	host := e.stack.Hosts()[0].Name
	ag, err := e.stack.Client(up.TokenFile(host))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.HostDesired(e.ctx(), "another-host", 0); err == nil || !strings.Contains(err.Error(), "for host "+host) {
		t.Errorf("agent token reading another host's desired state: %v, want refused", err)
	}
	if svc.Connection == nil || svc.Connection.Address == "" || !strings.HasPrefix(svc.Connection.Address, "198.18.") {
		t.Fatalf("service connection = %+v, want a public 198.18.x.x address", svc.Connection)
	}
	laptop := up.LaptopHost
	ok := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
	if ok.code != 0 || !strings.HasPrefix(ok.stdout, "t|TLSv1.") {
		t.Fatalf("verify-full from laptop: %v", ok)
	}

	// The laptop resolves the service's public name through the platform
	// DNS server on the simulated internet: no hostaddr needed.
	byName := strings.Replace(e.conninfo(svc, ""), "hostaddr="+svc.Connection.Address+" ", "", 1)
	if r := e.psql(laptop, pw, byName, "-c", "select inet_server_addr()"); r.code != 0 || r.stdout != svc.Connection.Address {
		t.Errorf("psql by DNS name from laptop: %v, want the server at %s", r, svc.Connection.Address)
	}

	addr := svc.Connection.Address
	laptopIP := e.stack.Laptop.Addr.String()
	for _, tc := range []struct {
		name, conninfo, want string
	}{
		{"plaintext", strings.Replace(e.conninfo(svc, ""), "sslmode=verify-full", "sslmode=disable", 1),
			fmt.Sprintf(`FATAL:  pg_hba.conf rejects connection for host "%s", user "moatadmin", database "defaultdb", no encryption`, laptopIP)},
		{"tls 1.1", e.conninfo(svc, "", "ssl_min_protocol_version=TLSv1", "ssl_max_protocol_version=TLSv1.1"),
			fmt.Sprintf(`connection to server at "%s", port 5432 failed: SSL error: tlsv1 alert protocol version`, addr)},
		{"wrong CA", strings.Replace(e.conninfo(svc, ""), e.caFile, filepath.Join(e.dir, controlplane.APICAFile), 1),
			fmt.Sprintf(`connection to server at "%s", port 5432 failed: SSL error: certificate verify failed`, addr)},
		{"wrong name", strings.Replace(e.conninfo(svc, ""), "host="+svc.Connection.Host, "host=db.example.com", 1),
			`does not match host name "db.example.com"`},
		{"wrong password", e.conninfo(svc, "", "password=not-it"), `password authentication failed for user "moatadmin"`},
	} {
		pass := pw
		if tc.name == "wrong password" {
			pass = "not-it"
		}
		r := e.psql(laptop, pass, tc.conninfo, "-c", "select 1")
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, r, tc.want)
		}
	}

	// An open session from the laptop, then narrow the allowlist to
	// another address: the session is cut and new connections time out at
	// the firewall.
	var sessOut, sessErr syncBuffer
	sess := make(chan int, 1)
	go func() {
		code, _ := e.stack.Sim.Exec(context.Background(), laptop,
			[]string{"env", "PGPASSWORD=" + pw, "psql", "-X", "-At", e.conninfo(svc, ""), "-c", "select 'started'", "-c", "select pg_sleep(20)"},
			nil, &sessOut, &sessErr)
		sess <- code
	}()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(sessOut.String(), "started") })
	took := e.setAllowlist(svc.ID, "203.0.113.9/32")
	t.Logf("narrowing applied on every node %v after the PUT", took)
	select {
	case code := <-sess:
		if code == 0 {
			t.Errorf("the open session survived the narrowing: %s", sessErr.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the open session was not cut within 10s of the narrowing")
	}
	r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "select 1")
	if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf(`connection to server at "%s", port 5432 failed: timeout expired`, addr)) {
		t.Errorf("laptop after narrowing: %v, want a timeout at the firewall", r)
	}
	e.setAllowlist(svc.ID, laptopIP+"/32")
	if r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "select 'back'"); r.code != 0 || r.stdout != "back" {
		t.Errorf("laptop after widening: %v", r)
	}
}

// TestThreeNodeService: three nodes in three AZs; the replicas stream from
// the primary over TLS with verified certificates and serve its rows.
func TestThreeNodeService(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("ha", 3)
	azs := map[string]bool{}
	var replicas []string
	for _, n := range svc.NodeList {
		azs[n.AZ] = true
		if n.Index > 0 {
			replicas = append(replicas, n.Address)
		}
	}
	if len(svc.NodeList) != 3 || len(azs) != 3 {
		t.Fatalf("nodes = %+v, want 3 in distinct AZs", svc.NodeList)
	}
	laptop := up.LaptopHost
	var streaming string
	waitFor(t, 30*time.Second, func() bool {
		r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c",
			"select count(*) from pg_stat_replication r join pg_stat_ssl s using (pid) where s.ssl and r.state = 'streaming'")
		streaming = r.stdout
		return r.code == 0 && r.stdout == "2"
	})
	if streaming != "2" {
		t.Fatalf("TLS streaming replicas = %q, want 2", streaming)
	}
	if r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "create table t (v text)", "-c", "insert into t values ('from-primary')"); r.code != 0 {
		t.Fatalf("write on primary: %v", r)
	}
	for _, addr := range replicas {
		var got result
		waitFor(t, 10*time.Second, func() bool {
			got = e.psql(laptop, pw, e.conninfo(svc, addr), "-c", "select v from t")
			return got.code == 0 && got.stdout == "from-primary"
		})
		if got.stdout != "from-primary" {
			t.Errorf("replica %s: %v", addr, got)
		}
		if r := e.psql(laptop, pw, e.conninfo(svc, addr), "-c", "insert into t values ('x')"); r.code == 0 || !strings.Contains(r.stderr, "read-only transaction") {
			t.Errorf("write on replica %s: %v, want read-only", addr, r)
		}
	}
}

// TestRestartKeepsNodes: stopping the whole stack leaves the firewall and
// PostgreSQL in force; a new stack on the same data directory reattaches
// to the running node without losing data.
func TestRestartKeepsNodes(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("keep", 1)
	laptop := up.LaptopHost
	if r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "create table kept (v int)", "-c", "insert into kept values (42)"); r.code != 0 {
		t.Fatalf("write: %v", r)
	}
	e.setAllowlist(svc.ID, "203.0.113.9/32")
	e.stop()

	// Control plane and agent are gone: the narrowed firewall still
	// refuses the laptop; from the allowed range PostgreSQL still answers.
	if r := e.psql(laptop, pw, e.conninfo(svc, ""), "-c", "select 1"); r.code == 0 || !strings.Contains(r.stderr, "timeout expired") {
		t.Errorf("laptop with the stack stopped: %v, want a firewall timeout", r)
	}
	e2 := start(t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	e2.setAllowlist(svc.ID, "0.0.0.0/0")
	if r := e2.psql(laptop, pw, e2.conninfo(svc, ""), "-c", "select v from kept"); r.code != 0 || r.stdout != "42" {
		t.Errorf("after restart: %v, want 42", r)
	}
}

// nodeDir is the directory of node id under its host's agent.
func (e *env) nodeDir(id string) string {
	e.t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(e.dir, up.AgentsDir, "*", "nodes", id))
	if len(dirs) != 1 {
		e.t.Fatalf("node %s: directories %v, want one under one host's agent", id, dirs)
	}
	return dirs[0]
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("condition not met within %v", d)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDeleteServiceWipesNodes: deleting a service stops its PostgreSQL,
// wipes its data, removes the node's namespace and deletes its backups.
func TestDeleteServiceWipesNodes(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	svc, _ := e.createService("gone", 1)
	node := svc.NodeList[0]
	if _, err := e.op.CreateBackup(e.ctx(), e.project, svc.ID); err != nil {
		t.Fatal(err)
	}
	e.waitBackups(svc.ID, 1)
	backups := filepath.Join(e.dir, controlplane.BackupDirName, svc.Region, svc.ID)
	if _, err := os.Stat(backups); err != nil {
		t.Fatalf("backups before delete: %v", err)
	}
	dataDir := e.nodeDir(node.ID)
	if _, err := os.Stat(dataDir); err != nil {
		t.Fatalf("node data before delete: %v", err)
	}
	if _, err := e.op.DeleteService(e.ctx(), e.project, svc.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		got, err := e.op.GetService(e.ctx(), e.project, svc.ID)
		return err == nil && got.State == "deleted"
	})
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("node data after delete: %v, want it wiped", err)
	}
	hosts, err := e.stack.Cloud.Hosts(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if strings.Contains(h.NS, strings.TrimPrefix(node.ID, "node-")) {
			t.Errorf("node namespace %s survived the delete", h.NS)
		}
	}
	if r := e.psql(up.LaptopHost, "x", e.conninfo(svc, node.Address), "-c", "select 1"); r.code == 0 {
		t.Errorf("deleted service still answers: %v", r)
	}
	var left []string
	filepath.WalkDir(backups, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("backups of the deleted service left in the store: %v", left)
	}
}
