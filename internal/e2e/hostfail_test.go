package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/up"
)

// Host failures on the fleet (issue 11, docs/design/0014): one stack of
// us-east-1 with two hosts per AZ, a 3-node service under a writer that
// commits one row per transaction through the multi-host string, and the
// simulator's faults in turn — the primary's host failed, the primary's
// whole AZ failed (the control plane stopped and restarted mid-failover),
// the primary's host partitioned (its PostgreSQL still running and
// reachable from inside), a replica's host failed, the primary's host
// drained (moat host drain), and last the primary's and a replica's hosts
// failed together. Each single fault: the writer goes on, no
// acknowledged row is lost, no server but the new primary acknowledges a
// commit once it did, the lost node is replaced on another host and
// wiped on its own once that host is back; after the first, the names
// resolve to the new nodes, the replicas show their sync state and lag,
// and the failover is audited; while a replica's replacement catches up,
// moat explain and moat service get say so. The double failure promotes
// nothing and the service comes back whole once the hosts recover.
// The writer's unavailability is logged, not asserted (it depends on the
// machine's load): with the default timings (heartbeat 0.5 s, host
// timeout 3 s, lease 2.5 s + 0.4 s; design 0014 "Detection") a failed
// host, AZ or partition cost 3.5-5.5 s without -race on a 2-core machine
// shared with other work, a drain 1.2-1.5 s, a failed replica's host
// 0.2-1.1 s (the writer's normal commit interval 0.07-0.2 s: it re-reads
// the connection info, so it does not wait on a dead host's connect
// timeout).

// startHostFleet runs a stack of us-east-1 alone with two hosts per AZ
// (a lost host's node has another host in its AZ to go to) and
// failoverFor(t).
func startHostFleet(t testing.TB) *env {
	t.Helper()
	return startHostFleetOn(t, "", "")
}

// restartHostFleet starts e's stopped stack again on its data directory
// and namespaces (a restarted moat up), for e's project.
func (e *env) restartHostFleet() *env {
	e.t.Helper()
	e2 := startHostFleetOn(e.t, e.dir, e.prefix)
	e2.project, e2.caFile = e.project, e.caFile
	return e2
}

// startHostFleetOn is startHostFleet on dir and prefix (new ones when "").
func startHostFleetOn(t testing.TB, dir, prefix string) *env {
	t.Helper()
	return startStack(t, dir, prefix, func(c *up.Config) {
		c.ControlPlane.Failover = failoverFor(t)
		c.ControlPlane.Catalog = domain.Catalog{Regions: []domain.Region{{Code: "us-east-1", AZs: []string{"us-east-1a", "us-east-1b", "us-east-1c"}}}}
		c.HostsPerAZ = 2
	})
}

// TestHostFailures runs the scenarios in order on one stack (each leaves
// the service running on three streaming nodes for the next).
func TestHostFailures(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	e := startHostFleet(t)
	e.newProject("acme")
	created, pw := e.createService("ha", 3)
	svc := e.waitReplicated(created.ID, domain.ReplQuorum, 2)
	phase("3 nodes streaming")

	// The primary's host fails: its agent and PostgreSQL are killed and
	// its links cut. The writer resumes on the promoted replica.
	old := primaryNode(t, svc)
	svc = e.underWriter(svc, pw, "host_failed", old, func() { e.mustMoat("sim", "fail", "host", old.Host) }).svc
	e.checkReplaced(svc, old, true)
	phase("primary's host failed: failed over, replaced")
	e.checkFailedOver(svc, old)
	phase("names resolve to the new primary and the replicas; replicas quorum; failover audited")
	// Back: the lost node is wiped by its own agent, never rejoined.
	e.mustMoat("sim", "recover")
	e.waitWiped(old)
	phase("recovered host wiped the old primary")

	// The primary's whole AZ fails (both its hosts). The service has
	// then 2 healthy AZs: the writer resumes on a replica, and the
	// replacement waits for a third AZ (no double placement in one).
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	old = primaryNode(t, svc)
	var azHosts []string
	azRun := e.underWriter(svc, pw, "az_failed", old, func() {
		out := e.mustMoat("sim", "fail", "az", old.AZ, "-o", "value=hosts")
		azHosts = strings.Split(strings.Trim(out, "[]"), " ")
	})
	svc = azRun.svc
	if p := primaryNode(t, svc); p.AZ == old.AZ {
		t.Errorf("primary %s in the failed AZ %s", p.ID, old.AZ)
	}
	phase("primary's AZ failed: failed over")
	// The failover cannot finish without a third AZ: the control plane
	// is stopped mid-way (step replace or catch-up, its replacement
	// unplaced), the AZ recovers while it is down, and the restarted
	// control plane finishes the same failover.
	op := e.failoverMidway(svc.ID)
	e.stop()
	if _, err := up.Recover(context.Background(), e.dir); err != nil {
		t.Fatal(err)
	}
	e = e.restartHostFleet()
	phase(fmt.Sprintf("control plane restarted mid-failover (%s at step %s), AZ recovered meanwhile", op.ID, op.Step))
	if done := e.waitOperation(op.ID, 3*time.Minute); done.State != domain.StateSucceeded {
		t.Errorf("failover %s after the restart = %+v, want succeeded", op.ID, done)
	}
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	if lost := e.lostRows(svc, pw, "az_failed", azRun.acked); lost > 0 {
		t.Errorf("az_failed after the restart: %d of %d acknowledged rows lost", lost, len(azRun.acked))
	}
	e.checkReplaced(svc, old, false) // placed once the AZ is back
	e.waitWiped(old)
	phase(fmt.Sprintf("AZ %s (%v) recovered: replaced, old primary wiped", old.AZ, azHosts))

	// The primary's host is partitioned: its agent and PostgreSQL run on,
	// cut off. A client that still reaches the old primary (over its
	// Unix socket, inside its host) gets no commit acknowledged: quorum
	// commit waits for a replica it cannot reach, and its agent closes
	// its firewall once past its lease. After recovery it is wiped.
	old = primaryNode(t, svc)
	isolated := make(chan isolatedResult, 1)
	svc = e.underWriter(svc, pw, "partitioned", old, func() {
		e.mustMoat("sim", "partition", "host", old.Host)
		go func() { isolated <- e.commitsOnIsolated(old, 20*time.Second) }()
	}).svc
	if r := <-isolated; len(r.acked) > 0 || r.reads == 0 {
		t.Errorf("the partitioned old primary %s: acknowledged commits %v, answered %d reads; want none, and reads (it is reachable)", old.ID, r.acked, r.reads)
	}
	e.checkReplaced(svc, old, true)
	phase("primary's host partitioned: failed over, the isolated primary acknowledged nothing")
	e.mustMoat("sim", "recover")
	e.waitWiped(old)
	phase("partition healed: old primary wiped")

	// A replica's host fails: the primary keeps committing (ANY 1 of the
	// replicas), the replica is replaced on another host and the service
	// runs again.
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	primary := primaryNode(t, svc)
	var replica apitype.Node
	for _, n := range svc.NodeList {
		if n.Role == apitype.RoleReplica {
			replica = n
		}
	}
	rw := e.underWriter(svc, pw, "replica_host_failed", replica, func() {
		e.mustMoat("sim", "fail", "host", replica.Host)
		e.seesReplacement(svc.ID, replica)
	})
	svc, pause, normal := rw.svc, rw.unavailable, rw.normal
	if p := primaryNode(t, svc); p.ID != primary.ID {
		t.Errorf("primary moved from %s to %s when a replica's host failed", primary.ID, p.ID)
	}
	if pause > 10*normal+2*time.Second {
		t.Errorf("the writer paused %v while a replica's host was lost (normal %v), want no pause", pause, normal)
	}
	e.checkReplaced(svc, replica, true)
	phase("replica's host failed: replaced, the primary committed throughout")
	e.mustMoat("sim", "recover")
	e.waitWiped(replica)
	phase("replica's host recovered: old replica wiped")

	// The primary's host is drained: its node moves off by a new node
	// on another host and a switchover; the host ends empty.
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	old = primaryNode(t, svc)
	svc = e.underWriter(svc, pw, "drained", old, func() {
		if code, out, errb := e.moatAPI("host", "drain", old.Host); code != 0 {
			t.Fatalf("moat host drain %s: exit %d: %s%s", old.Host, code, out, errb)
		}
	}).svc
	e.checkReplaced(svc, old, true)
	e.waitWiped(old)
	waitFor(t, time.Minute, func() bool {
		h, err := e.op.GetHost(e.ctx(), old.Host)
		return err == nil && h.State == domain.StateDraining && h.Load == 0
	})
	phase("primary's host drained: moved, wiped, the host empty")

	// A double failure: the primary's host and a replica's fail together
	// (while the control plane is down, so that it finds both lost in
	// one pass: failed one after the other under a running control plane
	// the replica's loss may be handled first, by replacing it). The
	// surviving replica may lack commits only the lost replica
	// acknowledged: nothing is promoted, the service is failed with the
	// reason, no node takes a write; once the hosts recover, the service
	// runs again with every acknowledged row.
	svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	e = e.doubleFailure(svc, pw)
	phase("primary's and a replica's hosts failed together: nothing promoted, no node took a write; recovered with every row")
}

// doubleFailure runs the double-failure phase of TestHostFailures on svc
// (three streaming nodes) and returns the restarted stack's env.
func (e *env) doubleFailure(svc apitype.Service, pw string) *env {
	t := e.t
	t.Helper()
	primary := primaryNode(t, svc)
	var replicas []apitype.Node
	for _, n := range svc.NodeList {
		if n.Role == apitype.RoleReplica && !domain.Going(n.State) {
			replicas = append(replicas, n)
		}
	}
	lostReplica, survivor := replicas[0], replicas[1]
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table double (id int primary key)"); r.code != 0 {
		t.Fatalf("create table double: %v", r)
	}
	mh := e.multiHost(svc)
	w := e.startHAWriterInto(pw, "double", func() string { return mh })
	waitFor(t, 30*time.Second, func() bool { return w.count() >= 20 })
	acked, _, _ := w.halt()
	failovers := func(e *env) int {
		ops, err := e.op.ListOperations(e.ctx(), e.project, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, o := range ops {
			if o.Type == domain.OpServiceFailover {
				n++
			}
		}
		return n
	}
	before := failovers(e)

	e.stop()
	for _, h := range []string{primary.Host, lostReplica.Host} {
		if _, err := up.FailHost(context.Background(), e.dir, h); err != nil {
			t.Fatal(err)
		}
	}
	e = e.restartHostFleet()
	after := e.waitService(svc.ID, time.Minute, func(s apitype.Service) bool {
		return s.Health != nil && s.Health.Status == domain.HealthFailed && slices.ContainsFunc(s.Health.Conditions, func(c apitype.StateInfo) bool { return c.Code == domain.CodeDoubleFailure })
	})
	t.Logf("double failure: service %s, %+v, health %+v", after.State, after.StateInfo, after.Health)
	if after.State != domain.StateDegraded || after.StateInfo == nil || after.StateInfo.Code != domain.CodeDoubleFailure {
		t.Errorf("service after a double failure: %s %+v, want degraded with reason %s", after.State, after.StateInfo, domain.CodeDoubleFailure)
	}
	// No node takes a write: two are cut off and dead, the survivor is
	// a replica still.
	for _, n := range []apitype.Node{primary, lostReplica, survivor} {
		r := e.psql(up.LaptopHost, pw, e.conninfo(svc, n.Address), "-c", "insert into double values (-1)")
		if r.code == 0 {
			t.Errorf("a write to %s (%s) after the double failure was acknowledged: %v", n.ID, n.Address, r)
		}
		if n.ID == survivor.ID && !strings.Contains(r.stderr, "read-only") {
			t.Errorf("a write to the surviving replica %s: %v, want refused as read-only", n.ID, r)
		}
	}
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, survivor.Address), "-c", "select pg_is_in_recovery()"); r.code != 0 || r.stdout != "t" {
		t.Errorf("the surviving replica %s: pg_is_in_recovery() = %v, want t (not promoted)", survivor.ID, r)
	}
	now, err := e.op.GetService(e.ctx(), e.project, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := failovers(e); n != before || primaryOf(now) == survivor.ID || now.Connection.Address != primary.Address {
		t.Errorf("after the double failure: %d failovers (%d before), primary at %s; want none started and the primary still %s (%s)", n, before, now.Connection.Address, primary.ID, primary.Address)
	}

	// Both hosts back: the service runs again on its nodes, every
	// acknowledged row there, and takes writes.
	e.mustMoat("sim", "recover")
	back := e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
	t.Logf("after recovery: primary %s, nodes %v", primaryNode(t, back).ID, nodeIDs(back))
	// Nothing was failed over: the same three nodes, the same primary.
	if p := primaryNode(t, back); p.ID != primary.ID || !slices.Equal(nodeIDs(back), nodeIDs(svc)) {
		t.Errorf("after recovery: primary %s, nodes %v; want %s and the nodes before %v", p.ID, nodeIDs(back), primary.ID, nodeIDs(svc))
	}
	if lost := e.lostRows(back, pw, "double", acked); lost > 0 {
		t.Errorf("double failure: %d of %d acknowledged rows lost after recovery", lost, len(acked))
	}
	if r := e.psql(up.LaptopHost, pw, e.multiHost(back), "-c", "insert into double values (-2)"); r.code != 0 {
		t.Errorf("a write after the recovery: %v", r)
	}
	return e
}

// nodeIDs lists the service's live nodes as id/role.
func nodeIDs(s apitype.Service) []string {
	var out []string
	for _, n := range s.NodeList {
		if !domain.Going(n.State) {
			out = append(out, n.ID+"/"+n.Role)
		}
	}
	return out
}

// underWriter runs fault under a writer committing to a new table named
// table through svc's multi-host string, then waits until the writer
// committed 20 more rows, the node gone (the one the fault takes) left
// the service and the service runs again on three streaming nodes; it
// fails the test if an acknowledged row is missing or a server other
// than the new primary acknowledged a commit after it did, and logs the writer's
// unavailability (written).
func (e *env) underWriter(svc apitype.Service, pw, table string, gone apitype.Node, fault func()) written {
	e.t.Helper()
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table "+table+" (id int primary key)"); r.code != 0 {
		e.t.Fatalf("create table %s: %v", table, r)
	}
	// The writer re-reads the connection info (a drain's switchover
	// moves the primary to a new node).
	conninfo, follow := e.followConninfo(svc.ID)
	defer follow()
	e.t.Logf("%s: writer over %s", table, conninfo())
	w := e.startHAWriterInto(pw, table, conninfo)
	waitFor(e.t, 30*time.Second, func() bool { return w.count() >= 10 })
	before := w.count()
	at := time.Now()
	fault()
	waitFor(e.t, 2*time.Minute, func() bool { return w.count() >= before+20 })
	// The writer goes on until the service is whole again.
	after := e.waitService(svc.ID, 3*time.Minute, func(s apitype.Service) bool {
		return left(s, gone) && s.State == domain.StateRunning && s.Replication != nil && s.Replication.Mode == domain.ReplQuorum && streaming(s) == 2
	}, func(s apitype.Service) bool {
		// A failed AZ leaves two healthy AZs: the replacement waits.
		return left(s, gone) && s.State == domain.StateDegraded && streaming(s) >= 1 && primaryOf(s) != ""
	})
	acked, gap, normal := w.halt()
	unavailable := w.longestGapSince(at)
	// Never two writable primaries: once the new primary acknowledged a
	// commit, no other server did (the old one before it may).
	if addr, split := w.splitSince(at, primaryNode(e.t, svc).Address, primaryNode(e.t, after).Address); split {
		e.t.Errorf("%s: a commit acknowledged by %s after the new primary %s acknowledged one (old primary %s)", table, addr, primaryNode(e.t, after).Address, primaryNode(e.t, svc).Address)
	}
	e.t.Logf("%s: %d rows acknowledged, unavailable %v (longest gap %v, normal commit interval %v)", table, len(acked), unavailable, gap, normal)
	if lost := e.lostRows(after, pw, table, acked); lost > 0 {
		e.t.Errorf("%s: %d of %d acknowledged rows lost", table, lost, len(acked))
	}
	return written{svc: after, unavailable: unavailable, normal: normal, acked: acked}
}

// written is what underWriter saw: the service after the fault, the
// writer's unavailability around it, its normal commit interval, and
// the ids it saw acknowledged.
type written struct {
	svc                 apitype.Service
	unavailable, normal time.Duration
	acked               []int
}

// seesReplacement waits, while the service id is degraded by the loss of
// the replica lost (its host failed), until moat explain and moat service
// get have both said that lost, on its host, was lost and named its
// replacement (the condition lasts until the replacement streams); it
// fails the test if the service is whole again before both did.
func (e *env) seesReplacement(id string, lost apitype.Node) {
	e.t.Helper()
	said := "node " + lost.ID + " on host " + lost.Host + " was lost (its host stopped sending heartbeats); its replacement node-"
	var explained, got string
	whole := false
	waitFor(e.t, 2*time.Minute, func() bool {
		if explained == "" {
			if _, _, errb := e.moat("explain", id, "--from", up.LaptopHost); strings.Contains(errb, "service "+id+" is degraded: ") && strings.Contains(errb, said) {
				explained = errb
			}
		}
		if got == "" {
			if _, out, _ := e.moatAPI("service", "get", id); strings.Contains(out, "degraded: "+said) {
				got = out
			}
		}
		if explained != "" && got != "" {
			return true
		}
		s, err := e.op.GetService(e.ctx(), e.project, id)
		whole = err == nil && left(s, lost) && s.State == domain.StateRunning && streaming(s) == 2
		return whole
	})
	if explained == "" || got == "" {
		e.t.Errorf("while replica %s was replaced (service whole again: %v): moat explain said %q, moat service get %q; want both to say %q…", lost.ID, whole, explained, got, said)
		return
	}
	for _, l := range strings.Split(explained, "\n") {
		if strings.Contains(l, said) {
			e.t.Logf("moat explain while degraded: %s", l)
		}
	}
}

// checkFailedOver checks, after the failover of svc from old (its host
// failed), what a client and an operator see: the service's name
// resolves through the platform DNS to the new primary and ro.<name> to
// the replicas; moat service get shows each replica streaming with sync
// state quorum and its lag; the audit log holds the failover's entries in
// order (service.failover naming the lost and the promoted node,
// service.failover.promote, node.replace naming the replacement,
// service.failover.done).
func (e *env) checkFailedOver(svc apitype.Service, old apitype.Node) {
	e.t.Helper()
	primary := primaryNode(e.t, svc)
	var replicas []string
	var repl apitype.Node
	for _, n := range svc.NodeList {
		if n.Role == apitype.RoleReplica && !domain.Going(n.State) {
			replicas = append(replicas, n.Address)
		}
		if n.Index == old.Index && n.ID != old.ID && !domain.Going(n.State) {
			repl = n
		}
	}
	slices.Sort(replicas)
	name, ro := svc.Connection.Host, svc.Connection.ReadOnlyHost
	var gotName, gotRO []string
	waitFor(e.t, 30*time.Second, func() bool {
		gotName, _ = lookupA(e.stack.DNSAddr, name)
		gotRO, _ = lookupA(e.stack.DNSAddr, ro)
		slices.Sort(gotRO)
		return slices.Equal(gotName, []string{primary.Address}) && slices.Equal(gotRO, replicas)
	})
	if !slices.Equal(gotName, []string{primary.Address}) || !slices.Equal(gotRO, replicas) {
		e.t.Errorf("after the failover to %s: %s resolves to %v, %s to %v; want %s and the replicas %v", primary.ID, name, gotName, ro, gotRO, primary.Address, replicas)
	}

	// The replicas as moat service get shows them.
	var shown apitype.Service
	waitFor(e.t, 30*time.Second, func() bool {
		code, out, errb := e.moatAPI("service", "get", svc.ID, "-o", "json")
		if code != 0 {
			e.t.Fatalf("moat service get: exit %d: %s", code, errb)
		}
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			e.t.Fatalf("moat service get -o json: %v", err)
		}
		n := 0
		for _, nd := range shown.NodeList {
			if nd.Role == apitype.RoleReplica && nd.Streaming && nd.SyncState == domain.SyncStateQuorum && nd.LagBytes <= domain.CatchUpLag {
				n++
			}
		}
		return n == 2
	})
	_, table, _ := e.moatAPI("service", "get", svc.ID)
	for _, nd := range shown.NodeList {
		if nd.Role != apitype.RoleReplica {
			continue
		}
		if !nd.Streaming || nd.SyncState != domain.SyncStateQuorum {
			e.t.Errorf("replica %s after the failover: streaming %v, sync state %q, lag %d B; want streaming, quorum", nd.ID, nd.Streaming, nd.SyncState, nd.LagBytes)
		}
		row := regexp.MustCompile(`(?m)^` + nd.ID + `\s.*\strue\s+quorum\s+\d+ B$`)
		if !row.MatchString(table) {
			e.t.Errorf("moat service get: no row for replica %s streaming, quorum, with its lag:\n%s", nd.ID, table)
		}
		e.t.Logf("replica %s on %s: sync state %s, lag %d B", nd.ID, nd.Host, nd.SyncState, nd.LagBytes)
	}

	// The failover's audit entries, the control plane's own.
	code, out, errb := e.moatAPI("audit", "list", "-o", "json")
	if code != 0 {
		e.t.Fatalf("moat audit list: exit %d: %s", code, errb)
	}
	var audited struct{ Items []apitype.AuditEntry }
	if err := json.Unmarshal([]byte(out), &audited); err != nil {
		e.t.Fatalf("moat audit list -o json: %v", err)
	}
	var got []string
	for _, en := range audited.Items {
		if en.Target == svc.ID && en.Actor == "system" && (strings.HasPrefix(en.Action, domain.OpServiceFailover) || en.Action == "node.replace") {
			got = append(got, en.Action+": "+en.Detail)
		}
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^service\.failover: the primary ` + old.ID + ` is lost \(.*\); promoting node-\S+$`),
		regexp.MustCompile(`^service\.failover\.promote: primary ` + old.ID + ` → ` + primary.ID + `$`),
		regexp.MustCompile(`^node\.replace: node ` + old.ID + ` replaced by ` + repl.ID + ` in ` + old.AZ + `$`),
		regexp.MustCompile(`^service\.failover\.done: primary ` + primary.ID + `, replacement ` + repl.ID + ` streaming$`),
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = want[i].MatchString(got[i])
	}
	if !ok {
		e.t.Errorf("failover audit entries of %s:\n%s\nwant, in order: %v", svc.ID, strings.Join(got, "\n"), want)
	}
}

// failoverMidway waits until service id's live operation is a failover
// at its replace or catch-up step, and returns it.
func (e *env) failoverMidway(id string) apitype.Operation {
	e.t.Helper()
	var op apitype.Operation
	waitFor(e.t, time.Minute, func() bool {
		s, err := e.op.GetService(e.ctx(), e.project, id)
		if err != nil || s.OperationID == "" {
			return false
		}
		if op, err = e.op.GetOperation(e.ctx(), e.project, s.OperationID); err != nil {
			e.t.Fatal(err)
		}
		return op.Type == domain.OpServiceFailover && op.State == domain.StateRunning && (op.Step == domain.StepReplace || op.Step == domain.StepCatchUp)
	})
	if op.Type != domain.OpServiceFailover || (op.Step != domain.StepReplace && op.Step != domain.StepCatchUp) {
		e.t.Fatalf("service %s: no failover at its replace or catch-up step (operation %+v)", id, op)
	}
	return op
}

// waitOperation waits until operation id ended and returns it.
func (e *env) waitOperation(id string, within time.Duration) apitype.Operation {
	e.t.Helper()
	var op apitype.Operation
	waitFor(e.t, within, func() bool {
		var err error
		if op, err = e.op.GetOperation(e.ctx(), e.project, id); err != nil {
			e.t.Fatal(err)
		}
		return op.State == domain.StateSucceeded || op.State == domain.StateFailed
	})
	return op
}

// waitService waits until the service satisfies one of the conditions,
// and returns it.
func (e *env) waitService(id string, within time.Duration, conds ...func(apitype.Service) bool) apitype.Service {
	e.t.Helper()
	var svc apitype.Service
	waitFor(e.t, within, func() bool {
		var err error
		if svc, err = e.op.GetService(e.ctx(), e.project, id); err != nil {
			e.t.Fatal(err)
		}
		for _, c := range conds {
			if c(svc) {
				return true
			}
		}
		return false
	})
	return svc
}

// longestGapSince returns the writer's longest wait from t on: the
// longest interval between two consecutive acknowledgements the later of
// which came after t (from the last one before t).
func (w *hawriter) longestGapSince(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.at); i++ {
		if w.at[i].After(t) {
			gap = max(gap, w.at[i].Sub(w.at[i-1]))
		}
	}
	return gap
}

// left reports whether node is no longer among the service's live nodes.
func left(s apitype.Service, node apitype.Node) bool {
	for _, n := range s.NodeList {
		if n.ID == node.ID && !domain.Going(n.State) {
			return false
		}
	}
	return true
}

// streaming counts the service's running replicas that stream.
func streaming(s apitype.Service) int {
	n := 0
	for _, nd := range s.NodeList {
		if nd.Role == apitype.RoleReplica && nd.Streaming && nd.State == domain.StateRunning {
			n++
		}
	}
	return n
}

// primaryOf is the ID of the service's running primary, or "".
func primaryOf(s apitype.Service) string {
	for _, n := range s.NodeList {
		if n.Role == apitype.RolePrimary && n.State == domain.StateRunning {
			return n.ID
		}
	}
	return ""
}

// checkReplaced checks that gone is no longer among svc's live nodes, that
// the live nodes run on distinct hosts, and, with avoided, that none runs
// on gone's host (failed and not recovered yet, or drained).
func (e *env) checkReplaced(svc apitype.Service, gone apitype.Node, avoided bool) {
	e.t.Helper()
	hosts := map[string]string{}
	for _, n := range svc.NodeList {
		if domain.Going(n.State) {
			continue
		}
		if n.ID == gone.ID {
			e.t.Errorf("lost node %s still live: %+v", gone.ID, n)
		}
		if avoided && n.Host == gone.Host {
			e.t.Errorf("node %s on %s, the lost node's failed or drained host", n.ID, n.Host)
		}
		if o, dup := hosts[n.Host]; dup {
			e.t.Errorf("nodes %s and %s on one host %s", o, n.ID, n.Host)
		}
		hosts[n.Host] = n.ID
	}
}

// waitWiped waits until node's host (back from a fault) wiped it: its
// directory under the host's agent is gone, and the API lists it no more
// as live.
func (e *env) waitWiped(node apitype.Node) {
	e.t.Helper()
	dir := filepath.Join(up.AgentDir(e.dir, node.Host), "nodes", node.ID)
	waitFor(e.t, 2*time.Minute, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	})
}

// isolatedResult is what a client inside a cut-off primary's host saw:
// the ids whose commit was acknowledged, and how many reads answered.
type isolatedResult struct {
	acked []string
	reads int
}

// commitsOnIsolated tries for d to commit one row after another on the
// cut-off node through its Unix socket, from inside its host (as the
// agent's user, through the "moat" peer map), each attempt given 3 s,
// with a read between them (the server is reachable).
func (e *env) commitsOnIsolated(node apitype.Node, d time.Duration) isolatedResult {
	var res isolatedResult
	psql, err := exec.LookPath("psql")
	if err != nil {
		e.t.Errorf("psql: %v", err)
		return res
	}
	sock := filepath.Join(up.AgentDir(e.dir, node.Host), "nodes", node.ID, "run")
	for i, end := 1, time.Now().Add(d); time.Now().Before(end); i++ {
		if r := e.isolatedPSQL(psql, sock, "select 1"); r.code == 0 {
			res.reads++
		}
		// The table is made on the isolated primary alone (a commit
		// that waits too), so each insert is its own transaction.
		r := e.isolatedPSQL(psql, sock, fmt.Sprintf("create table if not exists isolated (id int); insert into isolated values (%d)", i))
		if r.code == 0 && strings.Contains(r.stdout, "INSERT") {
			res.acked = append(res.acked, strconv.Itoa(i))
		}
	}
	return res
}

// isolatedPSQL runs one statement on the server whose socket is in sock,
// killed after 3 s (a commit waiting for a synchronous standby).
func (e *env) isolatedPSQL(psql, sock, stmt string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-h", sock, "-p", strconv.Itoa(domain.PostgresPort),
		"-U", postgres.Superuser, "-d", domain.Database, "-c", stmt)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=2")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := 0
	if err := cmd.Run(); err != nil {
		code = -1
		if x, ok := err.(*exec.ExitError); ok && x.ExitCode() > 0 {
			code = x.ExitCode()
		}
	}
	return result{code, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String())}
}

// BenchmarkHostFailover measures what a writer sees when the primary's
// host of a 3-node service fails (moat sim fail host: agent and
// PostgreSQL killed, links cut; detected by its heartbeats stopping):
// unavailability per round from the writer's last commit before the
// fault to its first after, the writer's median commit interval as the
// reference, and rows lost at the end (must be 0). Between rounds the
// host recovers (its agent wipes the old node) and the service runs on
// three streaming nodes again. us-east-1 with two hosts per AZ;
// fastFailover (the default detection timings). A round ends at the
// writer's first commit on the new primary (a commit the old primary
// acknowledged while the fault was being injected does not end it), and
// fails on a commit by any other server, or by the old primary after the
// new one acknowledged one. Run: ./bench/failover/run.sh (results in
// bench/failover/README.md).
func BenchmarkHostFailover(b *testing.B) {
	rounds := benchRounds()
	e := startHostFleet(b)
	svc, pw := e.haBenchService(b)
	var conninfo atomic.Value
	conninfo.Store(e.multiHost(svc))
	w := e.startHAWriter(pw, func() string { return conninfo.Load().(string) })
	waitFor(b, 30*time.Second, func() bool { return w.count() >= 20 })
	var gaps []time.Duration
	for i := range rounds {
		// The primary now (not as the last round left it).
		before := primaryNode(b, svc)
		svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
		conninfo.Store(e.multiHost(svc))
		old := primaryNode(b, svc)
		if old.ID != before.ID {
			b.Logf("round %d: the primary moved from %s to %s between rounds", i+1, before.ID, old.ID)
		}
		t0 := time.Now()
		e.mustMoat("sim", "fail", "host", old.Host)
		if pid := pidOf(filepath.Join(up.AgentDir(e.dir, old.Host), "volumes", old.ID, "pgdata", "postmaster.pid")); pid > 0 {
			b.Errorf("round %d: the failed host's primary %s still runs (postmaster %d)", i+1, old.ID, pid)
		}
		svc = e.waitService(svc.ID, 3*time.Minute, func(s apitype.Service) bool {
			return left(s, old) && s.State == domain.StateRunning && streaming(s) == 2
		})
		now := primaryNode(b, svc)
		// The writer may commit once more on the old primary while the
		// fault is being injected: wait for its first commit on the new
		// primary (not just any commit after t0, which measured nothing
		// in about half the rounds: the gap still open was not counted).
		waitFor(b, 2*time.Minute, func() bool { return w.ackedBy(t0)[now.Address] > 0 })
		// The round's unavailability is the writer's longest gap since.
		gaps = append(gaps, w.longestGapSince(t0))
		if addr, split := w.splitSince(t0, old.Address, now.Address); split {
			b.Errorf("round %d: a commit acknowledged by %s (the failed primary %s, the new one %s) after the new primary acknowledged one", i+1, addr, old.Address, now.Address)
		}
		b.Logf("round %d: acknowledged since the fault by server: %v (old primary %s, new %s)", i+1, w.ackedBy(t0), old.Address, now.Address)
		e.mustMoat("sim", "recover")
		e.waitWiped(old)
		conninfo.Store(e.multiHost(svc))
		b.Logf("round %d: unavailable %v (primary %s on %s failed; now %s on %s)", i+1, gaps[i], old.ID, old.Host, primaryNode(b, svc).ID, primaryNode(b, svc).Host)
	}
	b.Logf("failed attempts: %v", w.failures())
	acked, _, normal := w.halt()
	lost := e.lostRows(svc, pw, "w", acked)
	fmt.Printf("| primary's host failed, n=%d | %v | %v | %v | %.1f× |\n", len(gaps), median(gaps).Round(time.Millisecond), slices.Max(gaps).Round(time.Millisecond), normal.Round(time.Millisecond), float64(median(gaps))/float64(normal))
	fmt.Printf("rows acknowledged %d, lost %d\n", len(acked), lost)
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	fmt.Printf("rounds (sorted): %v\n", sorted)
	if lost > 0 {
		b.Errorf("%d acknowledged rows lost", lost)
	}
}
