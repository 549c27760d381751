package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// Failover end to end (docs/design/0014): a writer commits one row per
// transaction from the laptop through the service's multi-host
// connection string; the primary's PostgreSQL dies for good; the control
// plane promotes the replica with the most WAL, the writer resumes on it,
// every row it saw acknowledged is there, and the lost node is replaced.

// fastFailover is the failover policy of these tests: the default
// heartbeat with a short grace, and a lease and host timeout a second
// longer than the defaults (3 s + 0.5 s, 4 s). These tests run three
// stacks at once under -race beside other packages on two cores; there
// an agent or the control plane stalls long enough to spend the default
// 2.5 s lease, and a primary fenced for a moment refuses a connection
// the test counted on (design 0020). They check outcomes, not timings;
// the benchmarks measure the defaults (benchFailover).
var fastFailover = func() domain.FailoverPolicy {
	p := domain.DefaultFailoverPolicy()
	p.Grace = 2 * time.Second
	p.Lease, p.LeaseMargin, p.HostTimeout = 3*time.Second, 500*time.Millisecond, 4*time.Second
	return p
}()

// benchFailover is the benchmarks' policy: the defaults, with the tests'
// short grace (a host failure is detected by its heartbeats, not the
// grace).
var benchFailover = func() domain.FailoverPolicy {
	p := domain.DefaultFailoverPolicy()
	p.Grace = 2 * time.Second
	return p
}()

// failoverFor is the policy of a stack for t: benchFailover for a
// benchmark, else fastFailover.
func failoverFor(t testing.TB) domain.FailoverPolicy {
	if _, ok := t.(*testing.B); ok {
		return benchFailover
	}
	return fastFailover
}

// startFailover runs a stack with fastFailover on dir and prefix.
func startFailover(t *testing.T, dir, prefix string) *env { return startFailoverTB(t, dir, prefix) }

func startFailoverTB(t testing.TB, dir, prefix string) *env {
	t.Helper()
	return startWith(t, dir, prefix, func(c *controlplane.Config) { c.Failover = failoverFor(t) })
}

// hawriter commits one row per transaction (ids 1, 2, ...; one per attempt) until stopped,
// reconnecting after every failure, and records the ids acknowledged,
// when, and the address of the server that acknowledged each.
type hawriter struct {
	mu    sync.Mutex
	acked []int
	at    []time.Time
	by    []string
	// failed counts the failed attempts by the first line of psql's error.
	failed map[string]int
	stop   chan struct{}
	done   chan struct{}
}

// startHAWriter starts a writer into table w from the laptop over
// conninfo (asked again before every commit).
func (e *env) startHAWriter(pw string, conninfo func() string) *hawriter {
	return e.startHAWriterInto(pw, "w", conninfo)
}

// startHAWriterInto is startHAWriter into table.
func (e *env) startHAWriterInto(pw, table string, conninfo func() string) *hawriter {
	w := &hawriter{stop: make(chan struct{}), done: make(chan struct{}), failed: map[string]int{}}
	go func() {
		defer close(w.done)
		// A new id for every attempt: one whose answer was lost may
		// have committed (so retrying its id would fail for good).
		for id := 1; ; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			r := e.psqlQuiet(up.LaptopHost, pw, conninfo(), "-c", fmt.Sprintf("insert into %s values (%d) returning host(inet_server_addr())", table, id))
			if r.code == 0 {
				addr, _, _ := strings.Cut(r.stdout, "\n")
				w.mu.Lock()
				w.acked, w.at, w.by = append(w.acked, id), append(w.at, time.Now()), append(w.by, addr)
				w.mu.Unlock()
			} else {
				msg, _, _ := strings.Cut(r.stderr, "\n")
				w.mu.Lock()
				w.failed[msg]++
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// gapAround returns the writer's unavailability around a fault at t:
// from its last acknowledgement before t to its first after t (zero if
// none yet).
func (w *hawriter) gapAround(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, at := range w.at {
		if at.Before(t) {
			last = at
		} else if !last.IsZero() {
			return at.Sub(last)
		}
	}
	return 0
}

// ackedBy counts the acknowledgements after t by the address of the
// server that gave them.
func (w *hawriter) ackedBy(t time.Time) map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	by := map[string]int{}
	for i, at := range w.at {
		if at.After(t) {
			by[w.by[i]]++
		}
	}
	return by
}

// splitSince reports a commit after t acknowledged by another server
// than old or by old once promoted had acknowledged one, and which: two
// writable primaries.
func (w *hawriter) splitSince(t time.Time, old, promoted string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	moved := false
	for i, at := range w.at {
		if !at.After(t) {
			continue
		}
		switch by := w.by[i]; {
		case by == promoted:
			moved = true
		case by != old || moved:
			return by, true
		}
	}
	return "", false
}

// failures returns the failed attempts so far by error.
func (w *hawriter) failures() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.failed)
}

// count returns how many rows were acknowledged.
func (w *hawriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// halt stops the writer and returns the acknowledged ids, with the
// longest gap between two acknowledgements after since and the median
// gap (the writer's normal commit interval).
func (w *hawriter) halt() (acked []int, gap, normal time.Duration) {
	close(w.stop)
	<-w.done
	var gaps []time.Duration
	for i := 1; i < len(w.at); i++ {
		d := w.at[i].Sub(w.at[i-1])
		gaps = append(gaps, d)
		gap = max(gap, d)
	}
	if len(gaps) > 0 {
		normal = median(gaps)
	}
	return w.acked, gap, normal
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

// psqlQuiet is psql without failing the test when the exec itself fails
// (the writer runs past the test's end of interest).
func (e *env) psqlQuiet(host, password, conninfo string, args ...string) result {
	argv := append([]string{"env", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=2", "psql", "-X", "-At", conninfo}, args...)
	var out, errb syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := e.stack.Sim.Exec(ctx, host, argv, nil, &out, &errb)
	if err != nil {
		return result{-1, "", err.Error()}
	}
	return result{code, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String())}
}

// lostRows counts the acknowledged ids missing from table on svc's
// primary.
func (e *env) lostRows(svc apitype.Service, pw, table string, acked []int) int {
	e.t.Helper()
	r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "select id from "+table)
	if r.code != 0 {
		e.t.Fatalf("read rows: %v", r)
	}
	have := map[int]bool{}
	for _, l := range strings.Fields(r.stdout) {
		id, _ := strconv.Atoi(l)
		have[id] = true
	}
	lost := 0
	for _, id := range acked {
		if !have[id] {
			lost++
		}
	}
	return lost
}

// multiHost is the service's multi-host connection string with the
// project CA.
func (e *env) multiHost(svc apitype.Service) string {
	return svc.Connection.MultiHost + " sslrootcert=" + e.caFile
}

// waitReplicated waits until the service's replicas all stream and the
// mode is mode, and returns the service.
func (e *env) waitReplicated(id, mode string, replicas int) apitype.Service {
	e.t.Helper()
	var svc apitype.Service
	waitFor(e.t, time.Minute, func() bool {
		var err error
		if svc, err = e.op.GetService(e.ctx(), e.project, id); err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for _, nd := range svc.NodeList {
			if nd.Role == apitype.RoleReplica && nd.Streaming && nd.State == domain.StateRunning {
				n++
			}
		}
		return n == replicas && svc.Replication != nil && svc.Replication.Mode == mode && svc.State == domain.StateRunning
	})
	return svc
}

// primaryNode returns the service's primary node.
func primaryNode(t testing.TB, svc apitype.Service) apitype.Node {
	for _, n := range svc.NodeList {
		if n.Role == apitype.RolePrimary {
			return n
		}
	}
	t.Fatalf("service %s has no primary: %+v", svc.ID, svc.NodeList)
	return apitype.Node{}
}

// killPostgres makes node's PostgreSQL die for good: its data directory
// (under its host's agent) is moved away, then its postmaster killed, so
// the agent cannot restart it (a lost disk).
func (e *env) killPostgres(node apitype.Node) {
	e.t.Helper()
	data := filepath.Join(up.AgentDir(e.dir, node.Host), "volumes", node.ID, "pgdata")
	pid, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := strconv.Atoi(strings.SplitN(string(pid), "\n", 2)[0])
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(data, data+".lost"); err != nil {
		e.t.Fatal(err)
	}
	if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
}

// failoverOp waits until the service's failover operation ended and
// returns it.
func (e *env) failoverOp(id string, within time.Duration) apitype.Operation {
	e.t.Helper()
	var op apitype.Operation
	waitFor(e.t, within, func() bool {
		ops, err := e.op.ListOperations(e.ctx(), e.project, id)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, o := range ops {
			if o.Type == domain.OpServiceFailover {
				op = o
				return o.State == domain.StateSucceeded || o.State == domain.StateFailed
			}
		}
		return false
	})
	return op
}

// TestFailoverLosesNoAcknowledgedCommit: 3 nodes, quorum commit; the
// primary's PostgreSQL dies for good while a writer commits. The writer
// resumes on the promoted replica, no acknowledged row is lost, and the
// lost node is replaced by a new one that streams; the service runs
// again and the old node is wiped.
func TestFailoverLosesNoAcknowledgedCommit(t *testing.T) {
	t.Parallel()
	e := startFailover(t, "", "")
	e.newProject("acme")
	created, pw := e.createService("ha", 3)
	svc := e.waitReplicated(created.ID, domain.ReplQuorum, 2)
	old := primaryNode(t, svc)
	if svc.Connection.ReadOnlyHost == "" || !strings.Contains(svc.Connection.MultiHost, "target_session_attrs=read-write") {
		t.Fatalf("connection = %+v, want a read-only host and a multi-host string", svc.Connection)
	}
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table w (id int primary key)"); r.code != 0 {
		t.Fatalf("create table: %v", r)
	}
	mh := e.multiHost(svc)
	w := e.startHAWriter(pw, func() string { return mh })
	waitFor(t, 30*time.Second, func() bool { return w.count() >= 20 })
	before := w.count()
	killed := time.Now()
	e.killPostgres(old)
	waitFor(t, 2*time.Minute, func() bool { return w.count() >= before+20 })
	acked, gap, normal := w.halt()
	t.Logf("failover: %d rows acknowledged, longest gap %v (normal commit interval %v), %v after the kill", len(acked), gap, normal, time.Since(killed))

	op := e.failoverOp(svc.ID, 2*time.Minute)
	if op.State != domain.StateSucceeded {
		t.Fatalf("failover operation = %+v, want succeeded", op)
	}
	after := e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	primary := primaryNode(t, after)
	if primary.ID == old.ID {
		t.Fatalf("primary still %s", old.ID)
	}
	if lost := e.lostRows(after, pw, "w", acked); lost > 0 {
		t.Errorf("%d of %d acknowledged rows lost", lost, len(acked))
	}
	ids := map[string]bool{}
	for _, n := range after.NodeList {
		if !domain.Going(n.State) {
			ids[n.ID] = true
		}
	}
	if ids[old.ID] || len(ids) != 3 {
		t.Errorf("nodes after the failover = %+v, want 3 live ones without %s", after.NodeList, old.ID)
	}
	waitFor(t, time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(up.AgentDir(e.dir, old.Host), "nodes", old.ID))
		return os.IsNotExist(err)
	})
}

// TestReplicaLossAndRestartMidFailover: a lost replica of a 3-node
// service does not stop commits (ANY 1 of the replicas) and is replaced
// by a new node that streams; a requested failover whose control plane
// is killed mid-way finishes after the restart; a 1-node service's
// failover request is refused.
func TestReplicaLossAndRestartMidFailover(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	e := startFailover(t, "", "")
	e.newProject("acme")
	created, pw := e.createService("ha", 3)
	svc := e.waitReplicated(created.ID, domain.ReplQuorum, 2)
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table w (id int primary key)"); r.code != 0 {
		t.Fatalf("create table: %v", r)
	}
	var replica apitype.Node
	for _, n := range svc.NodeList {
		if n.Role == apitype.RoleReplica {
			replica = n
		}
	}
	mh := e.multiHost(svc)
	w := e.startHAWriter(pw, func() string { return mh })
	phase("3 nodes replicated")
	waitFor(t, 30*time.Second, func() bool { return w.count() >= 10 })
	before := w.count()
	e.killPostgres(replica)
	// The replacement is placed and streams; the primary commits
	// throughout.
	waitFor(t, 2*time.Minute, func() bool {
		s, err := e.op.GetService(e.ctx(), e.project, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range s.NodeList {
			if n.ID == replica.ID && !domain.Going(n.State) {
				return false
			}
		}
		return w.count() >= before+10
	})
	phase("replica replaced")
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	phase("replacement streams")
	acked, gap, normal := w.halt()
	t.Logf("replica lost: %d rows acknowledged, longest gap %v (normal %v)", len(acked), gap, normal)
	if gap > 10*normal+2*time.Second {
		t.Errorf("the writer paused %v while a replica was lost (normal %v), want no pause", gap, normal)
	}

	// Two nodes: synchronous; the replica lost, asynchronous (and the
	// service says so) so the primary commits again; synchronous once the
	// replacement caught up.
	pair, pw2 := e.createService("pair", 2)
	pair = e.waitReplicated(pair.ID, domain.ReplSync, 1)
	phase("2 nodes synchronous")
	for _, n := range pair.NodeList {
		if n.Role == apitype.RoleReplica {
			e.killPostgres(n)
		}
	}
	sawAsync := false
	waitFor(t, time.Minute, func() bool {
		s, err := e.op.GetService(e.ctx(), e.project, pair.ID)
		if err != nil {
			t.Fatal(err)
		}
		sawAsync = s.Replication != nil && s.Replication.Mode == domain.ReplAsync && s.Replication.Condition != nil &&
			s.Replication.Condition.Code == domain.CodeReplicaLost && s.State == domain.StateDegraded
		return sawAsync
	})
	if !sawAsync {
		t.Fatal("2-node service with its replica lost: never asynchronous with the reason replica_lost")
	}
	if r := e.psql(up.LaptopHost, pw2, e.conninfo(pair, ""), "-c", "create table alone (v int)", "-c", "insert into alone values (1)"); r.code != 0 {
		t.Errorf("commit with the replica lost: %v", r)
	}
	phase("2 nodes asynchronous, committed")
	e.waitReplicated(pair.ID, domain.ReplSync, 1)
	phase("2 nodes synchronous again")

	// A requested failover, the control plane killed while it runs.
	old := primaryNode(t, svc)
	op, err := e.op.FailoverService(e.ctx(), e.project, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Mid-way: once the old primary is fenced.
	waitFor(t, time.Minute, func() bool {
		s, err := e.op.GetService(e.ctx(), e.project, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range s.NodeList {
			if n.ID == old.ID {
				return n.Role == apitype.RoleFenced
			}
		}
		return false
	})
	e.stop()
	phase("control plane stopped mid-failover")
	e2 := startFailover(t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	done := e2.failoverOp(svc.ID, 3*time.Minute)
	if done.ID != op.ID || done.State != domain.StateSucceeded {
		t.Fatalf("failover after restart = %+v, want %s succeeded", done, op.ID)
	}
	phase("failover done after restart")
	after := e2.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	phase("replicated again")
	if p := primaryNode(t, after); p.ID == old.ID {
		t.Errorf("primary still %s after the failover", old.ID)
	}
	if lost := e2.lostRows(after, pw, "w", acked); lost != 0 {
		t.Errorf("%d of %d acknowledged rows lost", lost, len(acked))
	}

	single, _ := e2.createService("one", 1)
	if _, err := e2.op.FailoverService(e2.ctx(), e2.project, single.ID); err == nil || !strings.Contains(err.Error(), "single node") {
		t.Errorf("failover of a 1-node service: %v, want refused (single node)", err)
	}
}
