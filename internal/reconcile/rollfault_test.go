package reconcile_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/reconcile"
)

// Faults during a roll-forward (docs/design/0014, "Faults during a
// roll-forward"), each pass by a new reconciler (a restarted control
// plane) over the stored progress, with reports written as the agents
// would.

// rollFault is an n-node service being upgraded: old nodes old[0] (the
// primary) and old[1:], new nodes added[0] (the candidate) and
// added[1:], each on a host of its own, the roll stored at a step.
type rollFault struct {
	*fixture
	t     *testing.T
	now   time.Time
	svc   *domain.Service
	old   []*domain.Node
	added []*domain.Node
	op    *domain.Operation
	hosts map[string]*domain.Host // by node ID
}

func newRollFault(t *testing.T, n int, step, phase string) *rollFault {
	t.Helper()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	rf := &rollFault{fixture: newFixture(t, 0), t: t, now: now, hosts: map[string]*domain.Host{}}
	rf.svc = rf.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: n, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	node := func(idx int) *domain.Node {
		az := "us-east-1" + string(rune('a'+idx%3))
		h := rf.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: fmt.Sprintf("h%d", idx), State: domain.StateActive},
			Region: "us-east-1", AZ: az, Capacity: 4, LastHeartbeatAt: now}).(*domain.Host)
		nd := rf.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
			ServiceID: rf.svc.ID, Index: idx, AZ: az, Host: h.Name, Namespace: "ns", Address: fmt.Sprintf("198.18.0.%d", idx+1), ReportedAt: now}).(*domain.Node)
		rf.hosts[nd.ID] = h
		return nd
	}
	for i := range n {
		rf.old = append(rf.old, node(i))
	}
	for i := range n {
		rf.added = append(rf.added, node(n+i))
	}
	plan := &domain.RollPlan{Type: domain.OpServiceUpgrade, Target: n, Switchover: true,
		Steps: []string{domain.StepAddNodes, domain.StepCatchUp, domain.StepSwitchover, domain.StepRelease, domain.StepWipe}}
	for _, nd := range rf.added {
		plan.Add = append(plan.Add, domain.Slot{Host: nd.Host, AZ: nd.AZ})
	}
	for _, nd := range rf.old {
		plan.Retire = append(plan.Retire, nd.ID)
	}
	p, x := rf.old[0], rf.added[0]
	rf.svc.MovePrimary(p.ID, now)
	op, err := domain.StartRoll(rf.svc, domain.Members(rf.svc, append(slices.Clone(rf.old), rf.added...), func(string) bool { return true }), plan, now)
	if err != nil {
		t.Fatal(err)
	}
	rl := op.Roll
	for _, nd := range rf.added {
		rl.Added = append(rl.Added, nd.ID)
	}
	rl.Step, rl.Phase, op.Step = step, phase, step
	if phase != domain.PhaseReady {
		rl.DemotedAt = now.Add(-200 * time.Millisecond)
	}
	switched := step == domain.StepRelease || step == domain.StepWipe
	if switched {
		rf.svc.MovePrimary(x.ID, now)
	}
	for _, nd := range append(slices.Clone(rf.old), rf.added...) {
		var r *domain.ReplicationReport
		switch {
		case nd == p && (switched || phase != domain.PhaseReady):
			r = &domain.ReplicationReport{At: now, Fenced: true, ReceivedLSN: 200, DownSince: now}
		case nd == p:
			r = &domain.ReplicationReport{At: now, Up: true, ReceivedLSN: 100}
		case nd == x && switched:
			r = &domain.ReplicationReport{At: now, Up: true, ReceivedLSN: 300}
			for _, o := range rf.added[1:] {
				r.Standbys = append(r.Standbys, domain.StandbyStatus{Name: o.ID, SyncState: domain.SyncStateQuorum})
			}
			if n == 2 {
				r.Standbys[0].SyncState = domain.SyncStateSync
			}
		case switched && slices.Contains(rf.added, nd):
			r = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: x.ID, Streaming: true, ReceivedLSN: 300}
		case switched || phase == domain.PhasePromote:
			r = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, ReceivedLSN: 250} // following no one
		default:
			r = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 100}
		}
		rf.edit(nd, func() { nd.Replication = r })
	}
	// The standby names the pass that reached this step published.
	ms := domain.Members(rf.svc, rf.nodes(rf.svc.ID), func(string) bool { return true })
	rl.Mark(ms)
	sync := domain.SyncStandbyNames(rf.svc, ms)
	rf.svc.Replication = &sync
	rf.op = rf.put(op).(*domain.Operation)
	rf.put(rf.svc)
	return rf
}

// pass runs one reconciler pass (a new reconciler: a restarted control
// plane) and checks that no two live nodes hold the primary role in the
// desired state that follows.
func (rf *rollFault) pass() map[string]domain.NodeRole {
	rf.t.Helper()
	rec, err := reconcile.New(reconcile.Config{Store: rf.store, Provider: rf.cloud, Keys: rf.keys, InternalCA: rf.ca, Now: func() time.Time { return rf.now }})
	if err != nil {
		rf.t.Fatal(err)
	}
	_ = rec.Once(rf.t.Context()) // the fake cloud places no node: its error is expected
	return rf.roles()
}

// roles are the roles the agents are given now; the test fails if more
// than one node holds the primary role.
func (rf *rollFault) roles() map[string]domain.NodeRole {
	rf.t.Helper()
	s := get[domain.Service](rf.fixture, rf.svc.ID)
	roles := domain.ServiceRoles(s, domain.Members(s, rf.nodes(s.ID), func(string) bool { return true }), rf.live())
	var ps []string
	for id, r := range roles {
		if r.Role == domain.NodeRolePrimary {
			ps = append(ps, id)
		}
	}
	if len(ps) > 1 {
		rf.t.Fatalf("%d nodes hold the primary role: %v", len(ps), ps)
	}
	return roles
}

func (rf *rollFault) live() []*domain.Operation {
	var out []*domain.Operation
	for _, o := range rf.ops(rf.svc.ID) {
		if o.Live() {
			out = append(out, o)
		}
	}
	return out
}

// hostDown marks node n's host down (its heartbeats stopped long ago: its
// agent has fenced its primaries).
func (rf *rollFault) hostDown(n *domain.Node) {
	h := get[domain.Host](rf.fixture, rf.hosts[n.ID].ID)
	rf.edit(h, func() { h.State, h.LastHeartbeatAt = domain.StateDown, rf.now.Add(-time.Minute) })
}

func (rf *rollFault) report(n *domain.Node, fn func(r *domain.ReplicationReport)) {
	cur := get[domain.Node](rf.fixture, n.ID)
	rf.edit(cur, func() { fn(cur.Replication); cur.Replication.At, cur.ReportedAt = rf.now, rf.now })
}

func (rf *rollFault) failover() *domain.Operation {
	for _, o := range rf.ops(rf.svc.ID) {
		if o.Type == domain.OpServiceFailover && o.Live() {
			return o
		}
	}
	return nil
}

// TestRollPrimaryLostAfterSwitchover: the new primary's host goes down at
// the release step. The roll stops waiting for its release, deletes the
// retiring nodes and succeeds; the failover then promotes the new
// replica that followed it — one primary role at every pass.
func TestRollPrimaryLostAfterSwitchover(t *testing.T) {
	t.Parallel()
	rf := newRollFault(t, 2, domain.StepRelease, "")
	p, b, x, y := rf.old[0], rf.old[1], rf.added[0], rf.added[1]
	if roles := rf.roles(); roles[x.ID].Role != domain.NodeRolePrimary || roles[p.ID].Role != domain.NodeRoleDemoted {
		t.Fatalf("roles at the release step: %+v", roles)
	}
	rf.hostDown(x)
	rf.pass()
	o := get[domain.Operation](rf.fixture, rf.op.ID)
	if o.State != domain.StateSucceeded {
		t.Fatalf("roll %s at %s, want succeeded (handed over)", o.State, o.Step)
	}
	for _, n := range []*domain.Node{p, b} {
		if got := get[domain.Node](rf.fixture, n.ID); got.State != domain.StateDeleting {
			t.Errorf("retiring node %s: %s, want deleting", n.ID, got.State)
		}
	}
	if s := get[domain.Service](rf.fixture, rf.svc.ID); s.OperationID != "" || s.PrimaryID != x.ID || s.Health == nil || s.Health.Status != domain.HealthDegraded {
		t.Fatalf("service after the roll: operation %q, primary %s, health %+v; want no operation, %s, degraded", s.OperationID, s.PrimaryID, s.Health, x.ID)
	}
	roles := rf.pass()
	fo := rf.failover()
	if fo == nil || fo.Failover.Lost != x.ID || fo.Failover.Promote != y.ID {
		t.Fatalf("failover = %+v, want %s promoted in place of %s", fo, y.ID, x.ID)
	}
	if roles[x.ID].Role != domain.NodeRoleFenced {
		t.Fatalf("lost primary's role %+v, want fenced", roles[x.ID])
	}
	// The failover runs its course: y stops following x, is promoted,
	// and the primary moves to it.
	rf.report(y, func(r *domain.ReplicationReport) { r.Upstream, r.Streaming = "", false })
	rf.pass()
	rf.report(y, func(r *domain.ReplicationReport) { r.InRecovery = false })
	rf.pass()
	if s := get[domain.Service](rf.fixture, rf.svc.ID); s.PrimaryID != y.ID {
		t.Fatalf("primary = %s after the failover, want %s", s.PrimaryID, y.ID)
	}
	if roles := rf.pass(); roles[y.ID].Role != domain.NodeRolePrimary {
		t.Fatalf("roles after the failover: %+v", roles)
	}
}

// TestRollCandidateLostReopens: a 3-node service's candidate, promoted
// while the service listed its old replicas as synchronous standbys
// (which follow no one during the promote phase), loses its host: it
// could acknowledge nothing, so the old primary is re-opened and a node
// with a new ID takes the candidate's slot.
func TestRollCandidateLostReopens(t *testing.T) {
	t.Parallel()
	rf := newRollFault(t, 3, domain.StepSwitchover, domain.PhasePromote)
	p, x := rf.old[0], rf.added[0]
	roles := rf.pass() // the candidate is being promoted; it publishes the standby names
	if roles[x.ID].Role != domain.NodeRolePrimary || roles[p.ID].Role != domain.NodeRoleDemoted {
		t.Fatalf("roles while promoting: %+v", roles)
	}
	s := get[domain.Service](rf.fixture, rf.svc.ID)
	names := []string{rf.old[1].ID, rf.old[2].ID}
	slices.Sort(names)
	if want := fmt.Sprintf(`ANY 1 ("%s", "%s")`, names[0], names[1]); s.Replication == nil || s.Replication.StandbyNames != want {
		t.Fatalf("standby names while promoting = %+v, want %s (the new nodes are joining)", s.Replication, want)
	}
	rf.hostDown(x)
	roles = rf.pass()
	o := get[domain.Operation](rf.fixture, rf.op.ID)
	if o.State != domain.StateRunning || o.Step != domain.StepCatchUp || o.Roll.Phase != domain.PhaseReady || o.Roll.Solo || o.Roll.Replaced != 1 {
		t.Fatalf("roll after the candidate's loss: %s at %s/%q (solo %v, replaced %d), want back at catch-up", o.State, o.Step, o.Roll.Phase, o.Roll.Solo, o.Roll.Replaced)
	}
	if roles[p.ID].Role != domain.NodeRolePrimary {
		t.Fatalf("old primary's role %+v, want primary (re-opened)", roles[p.ID])
	}
	if got := get[domain.Node](rf.fixture, x.ID); got.State != domain.StateDeleting {
		t.Errorf("lost candidate: %s, want deleting", got.State)
	}
	// Its slot's host is down: the replacement goes to another host of
	// its AZ (the old primary's, leaving: the only other there).
	n := get[domain.Node](rf.fixture, o.Roll.Candidate())
	if n.ID == x.ID || n.State != domain.StateCreating || n.Host != p.Host || n.AZ != x.AZ {
		t.Errorf("the candidate's replacement: %+v, want a new node in %s on %s", n, x.AZ, p.Host)
	}
	if sl, _ := o.Roll.SlotOf(n.ID); sl.Host != p.Host {
		t.Errorf("the candidate's slot %+v, want moved to %s", sl, p.Host)
	}
}

// TestRollSoloCandidateLostWaits: a 1-node service's candidate is
// promoted with no synchronous standby, then its host goes down: it may
// hold commits the old primary lacks, so the old primary stays demoted
// and the service is failed with the reason until the candidate returns.
func TestRollSoloCandidateLostWaits(t *testing.T) {
	t.Parallel()
	rf := newRollFault(t, 1, domain.StepSwitchover, domain.PhasePromote)
	p, x := rf.old[0], rf.added[0]
	rf.pass()
	rf.hostDown(x)
	roles := rf.pass()
	o := get[domain.Operation](rf.fixture, rf.op.ID)
	if o.State != domain.StateRunning || o.Step != domain.StepSwitchover || o.Roll.Phase != domain.PhasePromote || !o.Roll.Solo {
		t.Fatalf("roll %s at %s/%q (solo %v), want still promoting", o.State, o.Step, o.Roll.Phase, o.Roll.Solo)
	}
	if roles[p.ID].Role != domain.NodeRoleDemoted || roles[x.ID].Role != domain.NodeRolePrimary {
		t.Fatalf("roles: %+v, want the old primary still demoted", roles)
	}
	s := get[domain.Service](rf.fixture, rf.svc.ID)
	if s.Health == nil || s.Health.Status != domain.HealthFailed || len(s.Health.Conditions) == 0 || s.Health.Conditions[0].Code != domain.CodePrimaryLost {
		t.Fatalf("health %+v, want failed (primary_lost)", s.Health)
	}
	// The host comes back; the candidate reports itself promoted.
	h := get[domain.Host](rf.fixture, rf.hosts[x.ID].ID)
	rf.edit(h, func() { h.State, h.LastHeartbeatAt = domain.StateActive, rf.now })
	rf.report(x, func(r *domain.ReplicationReport) { r.InRecovery, r.ReceivedLSN = false, 300 })
	rf.pass()
	if s := get[domain.Service](rf.fixture, rf.svc.ID); s.PrimaryID != x.ID {
		t.Fatalf("primary %s once the candidate returned, want %s", s.PrimaryID, x.ID)
	}
}

// TestRollNewReplicaLostAfterSwitchover: a new replica's host goes down
// at the release step; the roll finishes (release, wipe) without it and
// the failover's lost-replica path replaces it.
func TestRollNewReplicaLostAfterSwitchover(t *testing.T) {
	t.Parallel()
	rf := newRollFault(t, 3, domain.StepRelease, "")
	x, y := rf.added[0], rf.added[1]
	rf.report(x, func(r *domain.ReplicationReport) {
		for _, o := range rf.old {
			r.Standbys = append(r.Standbys, domain.StandbyStatus{Name: o.ID, SyncState: domain.SyncStateAsync})
		}
	})
	rf.hostDown(y)
	rf.pass()
	o := get[domain.Operation](rf.fixture, rf.op.ID)
	if o.Step != domain.StepWipe {
		t.Fatalf("roll at %s, want wipe", o.Step)
	}
	s := get[domain.Service](rf.fixture, rf.svc.ID)
	if s.Health == nil || s.Health.Status != domain.HealthDegraded {
		t.Errorf("health while the roll ends: %+v, want degraded (replica lost)", s.Health)
	}
	for _, n := range rf.old {
		cur := get[domain.Node](rf.fixture, n.ID)
		if cur.State != domain.StateDeleting {
			t.Fatalf("old node %s: %s, want deleting", n.ID, cur.State)
		}
		rf.edit(cur, func() {
			if err := cur.MarkDeleted(rf.now); err != nil {
				t.Fatal(err)
			}
		})
	}
	rf.pass()
	if o := get[domain.Operation](rf.fixture, rf.op.ID); o.State != domain.StateSucceeded {
		t.Fatalf("roll %s at %s, want succeeded", o.State, o.Step)
	}
	rf.pass()
	if got := get[domain.Node](rf.fixture, y.ID); got.State != domain.StateDeleting {
		t.Fatalf("lost new replica: %s, want deleting (replaced)", got.State)
	}
	var repl *domain.Node
	for _, n := range rf.nodes(rf.svc.ID) {
		if n.Index == y.Index && n.ID != y.ID {
			repl = n
		}
	}
	if repl == nil || repl.State != domain.StateCreating || repl.AZ != y.AZ {
		t.Fatalf("replacement of %s = %+v, want a new node in %s", y.ID, repl, y.AZ)
	}
}

// TestRollCandidateLostAfterMove: the candidate is promoted and the
// primary moves to it; its host goes down before the release step (no
// node follows it yet). In one pass the primary moves back to the old
// one (re-opened) and a new node takes the candidate's slot.
func TestRollCandidateLostAfterMove(t *testing.T) {
	t.Parallel()
	rf := newRollFault(t, 3, domain.StepSwitchover, domain.PhasePromote)
	p, x := rf.old[0], rf.added[0]
	rf.report(x, func(r *domain.ReplicationReport) { r.InRecovery, r.ReceivedLSN = false, 300 })
	rf.pass()
	if s := get[domain.Service](rf.fixture, rf.svc.ID); s.PrimaryID != x.ID {
		t.Fatalf("primary %s after the promotion, want %s", s.PrimaryID, x.ID)
	}
	rf.hostDown(x)
	roles := rf.pass()
	s := get[domain.Service](rf.fixture, rf.svc.ID)
	o := get[domain.Operation](rf.fixture, rf.op.ID)
	if s.PrimaryID != p.ID || roles[p.ID].Role != domain.NodeRolePrimary {
		t.Fatalf("primary %s (roles %+v), want moved back to %s", s.PrimaryID, roles, p.ID)
	}
	if o.State != domain.StateRunning || o.Step != domain.StepCatchUp || o.Roll.Replaced != 1 || o.Roll.Candidate() == x.ID {
		t.Fatalf("roll %s at %s, replaced %d, candidate %s; want back at catch-up with %s replaced", o.State, o.Step, o.Roll.Replaced, o.Roll.Candidate(), x.ID)
	}
	if got := get[domain.Node](rf.fixture, x.ID); got.State != domain.StateDeleting {
		t.Errorf("lost candidate: %s, want deleting", got.State)
	}
}
