package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// Roll-forward end to end (issue 11 item 6, docs/design/0014): one stack
// of us-east-1 (one host per AZ), one service under a writer committing
// one row per transaction through the service's multi-host string (read
// again as nodes come and go). The service is resized 1 → 3 → 1 and
// upgraded (a new node, a switchover, the old one wiped): every
// acknowledged row is there at the end, every old node is wiped (its
// directory, volume mount and namespace gone), no node ID comes back.
// Then the control plane is killed during a resize: it finishes after
// the restart.

// startRollStack runs a stack of us-east-1 alone with one host per AZ.
func startRollStack(t testing.TB, dir, prefix string) *env {
	t.Helper()
	return startStack(t, dir, prefix, func(c *up.Config) {
		c.ControlPlane.Failover = fastFailover
		c.ControlPlane.Catalog = domain.Catalog{Regions: []domain.Region{{Code: "us-east-1", AZs: []string{"us-east-1a", "us-east-1b", "us-east-1c"}}}}
		c.HostsPerAZ = 1
	})
}

func TestRollForward(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	e := startRollStack(t, "", "")
	e.newProject("acme")
	svc, pw := e.createService("roll", 1)
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table w (id int primary key)"); r.code != 0 {
		t.Fatalf("create table: %v", r)
	}
	// The writer's connection string follows the nodes (a client that
	// re-reads the connection info; DNS follows the primary likewise).
	conninfo, stopPoll := e.followConninfo(svc.ID)
	w := e.startHAWriter(pw, conninfo)
	waitFor(t, 30*time.Second, func() bool { return w.count() >= 10 })
	phase("1 node, writer running")

	seen := map[string]bool{}
	record := func(s apitype.Service) {
		for _, n := range s.NodeList {
			seen[n.ID] = true
		}
	}
	record(svc)
	// roll runs one roll-forward to its end and checks what it left:
	// the nodes that left are wiped, new nodes have new IDs.
	roll := func(what string, start func() (apitype.Operation, error), nodes int) apitype.Service {
		t.Helper()
		before, err := e.op.GetService(e.ctx(), e.project, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		op, err := start()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		done, err := e.op.WaitOperation(e.ctx(), e.project, op.ID, 50*time.Millisecond)
		if err != nil || done.State != domain.StateSucceeded {
			e.dumpService(svc.ID)
			t.Fatalf("%s: operation %+v, %v; want succeeded", what, done, err)
		}
		mode := map[int]string{1: domain.ReplNone, 2: domain.ReplSync, 3: domain.ReplQuorum}[nodes]
		after := e.waitReplicated(svc.ID, mode, nodes-1)
		live := map[string]bool{}
		for _, n := range after.NodeList {
			if !domain.Going(n.State) {
				live[n.ID] = true
				if !contains(before.NodeList, n.ID) && seen[n.ID] {
					t.Errorf("%s: node ID %s reused", what, n.ID)
				}
			}
		}
		if len(live) != nodes {
			t.Errorf("%s: %d live nodes, want %d", what, len(live), nodes)
		}
		for _, n := range before.NodeList {
			if !domain.Going(n.State) && !live[n.ID] {
				e.checkGone(n)
			}
		}
		record(after)
		t.Logf("%s: writer's longest gap %v (primary %s → %s)", what, w.longestGapSince(at), primaryNode(t, before).ID, primaryNode(t, after).ID)
		phase(what + " done")
		return after
	}
	three, one := 3, 1
	roll("resize 1 → 3", func() (apitype.Operation, error) {
		return e.op.UpdateService(e.ctx(), e.project, svc.ID, apitype.ServiceUpdate{Nodes: &three})
	}, 3)
	svc = roll("resize 3 → 1", func() (apitype.Operation, error) {
		return e.op.UpdateService(e.ctx(), e.project, svc.ID, apitype.ServiceUpdate{Nodes: &one})
	}, 1)

	// Tenant settings (design 0021): a reload-only one is in force on
	// the primary at once, no node changes; one that needs a restart is
	// pending until the upgrade below, whose fresh nodes start with it.
	show := func(s apitype.Service, name string) string {
		t.Helper()
		r := e.psql(up.LaptopHost, pw, e.conninfo(s, ""), "-c", "show "+name)
		if r.code != 0 {
			t.Fatalf("show %s: %v", name, r)
		}
		return r.stdout
	}
	setting := func(name, value string) apitype.Service {
		t.Helper()
		v := apitype.SettingValue(value)
		s, err := e.op.UpdateServiceSettings(e.ctx(), e.project, svc.ID, map[string]*apitype.SettingValue{name: &v})
		if err != nil {
			t.Fatalf("set %s=%s: %v", name, value, err)
		}
		if s.Settings[name] != value {
			t.Errorf("set %s=%s: the answer's settings are %v", name, value, s.Settings)
		}
		if s, err = e.op.WaitSettings(e.ctx(), e.project, svc.ID, 50*time.Millisecond); err != nil {
			t.Fatalf("set %s=%s: wait for the nodes: %v", name, value, err)
		}
		return s
	}
	s := setting("statement_timeout", "1234ms")
	if got := show(s, "statement_timeout"); got != "1234ms" {
		t.Errorf("statement_timeout on the primary = %q, want 1234ms", got)
	}
	if p, q := primaryNode(t, svc), primaryNode(t, s); p.ID != q.ID || len(s.NodeList) != len(svc.NodeList) || s.OperationID != "" || len(s.PendingRestart) != 0 {
		t.Errorf("reload-only setting: primary %s → %s, %d → %d nodes, operation %q, pending %v; want no node change", p.ID, q.ID, len(svc.NodeList), len(s.NodeList), s.OperationID, s.PendingRestart)
	}
	maxConn := show(s, "max_connections")
	s = setting("max_connections", "150")
	if len(s.PendingRestart) != 1 || s.PendingRestart[0] != "max_connections" {
		t.Errorf("max_connections 150: pending %v, want [max_connections]", s.PendingRestart)
	}
	if got := show(s, "max_connections"); got != maxConn {
		t.Errorf("max_connections on the running primary = %q, want %s until the upgrade (no restart)", got, maxConn)
	}
	phase("settings: statement_timeout reloaded, max_connections pending")

	before := primaryNode(t, svc)
	svc = roll("upgrade", func() (apitype.Operation, error) { return e.op.UpgradeService(e.ctx(), e.project, svc.ID) }, 1)
	if p := primaryNode(t, svc); p.ID == before.ID {
		t.Errorf("upgrade: primary still %s", p.ID)
	}
	if got := show(svc, "max_connections"); got != "150" || len(svc.PendingRestart) != 0 {
		t.Errorf("after the upgrade: max_connections %q pending %v, want 150, none pending", got, svc.PendingRestart)
	}
	if got := show(svc, "statement_timeout"); got != "1234ms" {
		t.Errorf("after the upgrade: statement_timeout %q, want 1234ms", got)
	}
	waitFor(t, time.Minute, func() bool { return w.count() >= 20 })
	stopPoll()
	acked, gap, normal := w.halt()
	t.Logf("writer: %d rows acknowledged, longest gap %v, normal commit interval %v", len(acked), gap, normal)
	if lost := e.lostRows(svc, pw, "w", acked); lost != 0 {
		t.Errorf("%d of %d acknowledged rows lost", lost, len(acked))
	}

	// The control plane killed during a resize (its new node added,
	// catching up): the resize finishes after the restart.
	two := 2
	op, err := e.op.UpdateService(e.ctx(), e.project, svc.ID, apitype.ServiceUpdate{Nodes: &two})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		o, err := e.op.GetOperation(e.ctx(), e.project, op.ID)
		return err == nil && o.Step == domain.StepCatchUp
	})
	e.stop()
	phase("control plane stopped mid-resize")
	e2 := startRollStack(t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	done, err := e2.op.WaitOperation(e2.ctx(), e2.project, op.ID, 50*time.Millisecond)
	if err != nil || done.State != domain.StateSucceeded {
		e2.dumpService(svc.ID)
		t.Fatalf("resize after restart: %+v, %v; want succeeded", done, err)
	}
	after := e2.waitReplicated(svc.ID, domain.ReplSync, 1)
	for _, n := range after.NodeList {
		if !domain.Going(n.State) && !contains(svc.NodeList, n.ID) && seen[n.ID] {
			t.Errorf("resize after restart: node ID %s reused", n.ID)
		}
	}
	if lost := e2.lostRows(after, pw, "w", acked); lost != 0 {
		t.Errorf("after the restart: %d of %d acknowledged rows lost", lost, len(acked))
	}
	phase("resize finished after the restart")
}

// followConninfo returns the connection string of service id as the
// API gives it now (read every 100 ms until stop is called): a client
// that re-reads the connection info as nodes come and go.
func (e *env) followConninfo(id string) (conninfo func() string, stop func()) {
	svc, err := e.op.GetService(e.ctx(), e.project, id)
	if err != nil {
		e.t.Fatal(err)
	}
	var v atomic.Value
	v.Store(e.writerConninfo(svc))
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := e.op.GetService(ctx, e.project, id)
			cancel()
			if err == nil && s.Connection != nil {
				v.Store(e.writerConninfo(s))
			}
		}
	}()
	return func() string { return v.Load().(string) }, func() { close(quit); <-done }
}

// writerConninfo is the multi-host string of svc when it has one (more
// than one node), else its connection by name.
func (e *env) writerConninfo(svc apitype.Service) string {
	if svc.Connection != nil && svc.Connection.MultiHost != "" {
		return e.multiHost(svc)
	}
	return e.conninfo(svc, "")
}

// dumpService logs the service's nodes and their states (a failure's
// context).
func (e *env) dumpService(id string) {
	s, err := e.op.GetService(e.ctx(), e.project, id)
	if err != nil {
		e.t.Logf("get service %s: %v", id, err)
		return
	}
	for _, n := range s.NodeList {
		e.t.Logf("node %s %s on %s role %s streaming %v info %+v", n.ID, n.State, n.Host, n.Role, n.Streaming, n.StateInfo)
	}
}

// contains reports whether nodes lists id.
func contains(nodes []apitype.Node, id string) bool {
	for _, n := range nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}

// checkGone waits until node is wiped: its directory under its host's
// agent gone, its volume unmounted, its namespace removed.
func (e *env) checkGone(node apitype.Node) {
	e.t.Helper()
	e.waitWiped(node)
	vol := filepath.Join(up.AgentDir(e.dir, node.Host), "volumes", node.ID)
	body := "n-" + strings.TrimPrefix(node.ID, "node-")
	cloud, err := up.Cloud(e.prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, time.Minute, func() bool {
		mounts, err := os.ReadFile("/proc/self/mounts")
		if err != nil {
			e.t.Fatal(err)
		}
		if strings.Contains(string(mounts), vol) {
			return false
		}
		nss, err := cloud.Namespaces()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, ns := range nss {
			if strings.Contains(ns, body) {
				return false
			}
		}
		return true
	})
}
