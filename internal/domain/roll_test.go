package domain

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// rollFixture is a service under a roll: its members by ID, which the
// test edits as the agents' reports would change.
type rollFixture struct {
	t   *testing.T
	svc *Service
	ms  map[string]*Member
	ids []string
}

func (f *rollFixture) add(m Member) {
	f.ms[m.Node.ID], f.ids = &m, append(f.ids, m.Node.ID)
}

func (f *rollFixture) members() []Member {
	var out []Member
	for _, id := range f.ids {
		m := *f.ms[id]
		m.Primary = f.svc.IsPrimary(m.Node)
		if !Gone(m.Node.State) {
			out = append(out, m)
		}
	}
	return out
}

// advance runs Advance and checks the step it ends at.
func (f *rollFixture) advance(r *Roll, lost bool, now time.Time, wantStep string) RollAction {
	f.t.Helper()
	act := r.Advance(f.members(), f.svc.Replication, lost, DefaultFailoverPolicy(), now)
	if r.Step != wantStep {
		f.t.Fatalf("step = %s (phase %q), want %s; action %+v", r.Step, r.Phase, wantStep, act)
	}
	return act
}

func TestRollUpgradeWithSwitchover(t *testing.T) {
	now := t1
	svc := svcN(2)
	f := &rollFixture{t: t, svc: svc, ms: map[string]*Member{}}
	f.add(member("node-p", true, true, primaryReport(100<<20)))
	f.add(member("node-b", false, true, replicaReport("node-p", true, 100<<20)))
	f.ms["node-b"].Node.Index = 1
	plan := &RollPlan{Type: OpServiceUpgrade, Target: 2, Add: []Slot{{"a2", "us-east-1a"}, {"c1", "us-east-1c"}}, Switchover: true,
		Retire: []string{"node-p", "node-b"}}
	plan.steps()
	op, err := StartRoll(svc, f.members(), plan, now)
	if err != nil {
		t.Fatal(err)
	}
	r := op.Roll
	if svc.OperationID != op.ID || svc.PrimaryID != "node-p" || r.From != "node-p" || op.Step != StepAddNodes {
		t.Fatalf("started: service op %q primary %q, roll %+v", svc.OperationID, svc.PrimaryID, r)
	}
	if _, err := StartRoll(svc, f.members(), plan, now); AsError(err) == nil || AsError(err).Code != CodeOperationInProgress {
		t.Errorf("a second roll: %v, want 409 operation_in_progress", err)
	}

	if act := f.advance(r, false, now, StepAddNodes); !act.AddNodes {
		t.Fatalf("add-nodes: %+v, want AddNodes", act)
	}
	r.Added = []string{"node-x", "node-y"} // what the reconciler created
	for i, id := range r.Added {
		m := member(id, false, true, nil)
		m.Node.State, m.Node.Index = StateCreating, 2+i
		f.add(m)
	}
	if act := f.advance(r, false, now, StepCatchUp); !act.Wait || !act.Changed {
		t.Fatalf("catch-up with creating nodes: %+v, want a wait (changed)", act)
	}
	for _, id := range r.Added {
		f.ms[id].Node.State, f.ms[id].Report = StateRunning, replicaReport("node-p", true, 100<<20)
	}
	// Caught up: on to the switchover, which demotes the old primary.
	act := f.advance(r, false, now, StepSwitchover)
	if r.Phase != PhaseDemote || !act.Changed || !r.DemotedAt.Equal(now) {
		t.Fatalf("switchover: phase %q at %v, action %+v", r.Phase, r.DemotedAt, act)
	}
	roles := r.Roles(svc, f.members())
	if diff := cmp.Diff(map[string]NodeRole{"node-p": {Role: NodeRoleDemoted}, "node-b": {NodeRoleReplica, "node-p"},
		"node-x": {NodeRoleReplica, "node-p"}, "node-y": {NodeRoleReplica, "node-p"}}, roles); diff != "" {
		t.Errorf("roles while demoting (-want +got):\n%s", diff)
	}
	if !r.OutOfService("node-p") {
		t.Errorf("the demoted primary counts for the failover")
	}

	// The pause would exceed MaxSwitchoverPause: re-open and retry.
	late := now.Add(MaxSwitchoverPause + time.Millisecond)
	act = f.advance(r, false, late, StepSwitchover)
	if r.Phase != PhaseReady || r.Attempts != 1 || !act.Changed || !r.RetryAt.Equal(late.Add(SwitchoverRetry)) {
		t.Fatalf("re-open: phase %q attempts %d retry %v, action %+v", r.Phase, r.Attempts, r.RetryAt, act)
	}
	if got := r.Roles(svc, f.members())["node-p"]; got.Role != NodeRolePrimary {
		t.Errorf("re-opened old primary's role = %+v, want primary", got)
	}
	if act := f.advance(r, false, late.Add(time.Second), StepSwitchover); !act.Wait || r.Phase != PhaseReady {
		t.Fatalf("before RetryAt: %+v, phase %q", act, r.Phase)
	}
	now = r.RetryAt
	f.advance(r, false, now, StepSwitchover)
	if r.Phase != PhaseDemote {
		t.Fatalf("retry: phase %q, want demote", r.Phase)
	}
	// Past MaxSwitchoverAttempts the bound is SlowSwitchoverPause.
	r.Attempts = MaxSwitchoverAttempts
	if act := f.advance(r, false, now.Add(2*MaxSwitchoverPause), StepSwitchover); r.Phase != PhaseDemote || !act.Wait {
		t.Fatalf("attempt %d after 2 s: phase %q, %+v; want still demoting", r.Attempts+1, r.Phase, act)
	}
	// A report from before this demotion does not count.
	f.ms["node-p"].Report = &ReplicationReport{At: now.Add(-time.Second), Fenced: true, ReceivedLSN: 200 << 20, DownSince: now}
	f.ms["node-x"].Report = replicaReport("node-p", false, 200<<20+100)
	if f.advance(r, false, now.Add(100*time.Millisecond), StepSwitchover); r.Phase != PhaseDemote {
		t.Fatalf("stale demoted report: phase %q, want still demote", r.Phase)
	}
	// The old primary stops cleanly at 200; node-x has received past it.
	f.ms["node-p"].Report = &ReplicationReport{At: now.Add(200 * time.Millisecond), Fenced: true, ReceivedLSN: 200 << 20, DownSince: now}
	f.ms["node-x"].Report = replicaReport("node-p", false, 200<<20+100)
	f.advance(r, false, now.Add(300*time.Millisecond), StepSwitchover)
	if r.Phase != PhasePromote {
		t.Fatalf("ready: phase %q, want promote", r.Phase)
	}
	roles = r.Roles(svc, f.members())
	if diff := cmp.Diff(map[string]NodeRole{"node-p": {Role: NodeRoleDemoted}, "node-b": {Role: NodeRoleReplica},
		"node-x": {Role: NodeRolePrimary}, "node-y": {Role: NodeRoleReplica}}, roles); diff != "" {
		t.Errorf("roles while promoting (-want +got):\n%s", diff)
	}
	// Promoted: the primary moves, then the release step.
	f.ms["node-x"].Report = primaryReport(200<<20 + 200)
	if act := f.advance(r, false, now.Add(time.Second), StepSwitchover); act.MovePrimary != "node-x" {
		t.Fatalf("promoted: %+v, want MovePrimary node-x", act)
	}
	svc.MovePrimary("node-x", now)
	f.ms["node-x"].Report.Standbys = []StandbyStatus{{Name: "node-b", SyncState: SyncStateSync}, {Name: "node-y", SyncState: SyncStatePotential}}
	if act := f.advance(r, false, now.Add(time.Second), StepRelease); !act.Wait {
		t.Fatalf("release with node-b still synchronous: %+v", act)
	}
	ms := f.members()
	r.Mark(ms)
	for _, m := range ms {
		if m.Retiring != (m.Node.ID == "node-p" || m.Node.ID == "node-b") {
			t.Errorf("%s retiring = %v", m.Node.ID, m.Retiring)
		}
	}
	if got := SyncStandbyNames(svc, ms).StandbyNames; got != "" { // node-y is not streaming yet
		t.Errorf("standby names while releasing = %q, want none (node-y catching up)", got)
	}
	roles = r.Roles(svc, f.members())
	if diff := cmp.Diff(map[string]NodeRole{"node-p": {Role: NodeRoleDemoted}, "node-b": {Role: NodeRoleReplica},
		"node-x": {Role: NodeRolePrimary}, "node-y": {NodeRoleReplica, "node-x"}}, roles); diff != "" {
		t.Errorf("roles while releasing (-want +got):\n%s", diff)
	}
	f.ms["node-x"].Report.Standbys = []StandbyStatus{{Name: "node-b", SyncState: SyncStateAsync}, {Name: "node-y", SyncState: SyncStateSync}}
	act = f.advance(r, false, now.Add(time.Second), StepWipe)
	if diff := cmp.Diff([]string{"node-p", "node-b"}, act.Delete); diff != "" {
		t.Fatalf("wipe deletes (-want +got):\n%s", diff)
	}
	for _, id := range act.Delete {
		f.ms[id].Node.State = StateDeleting
	}
	if act := f.advance(r, false, now.Add(time.Second), StepWipe); !act.Wait {
		t.Fatalf("wipe before the agents wiped: %+v", act)
	}
	for _, id := range []string{"node-p", "node-b"} {
		f.ms[id].Node.State = StateDeleted
	}
	if act := f.advance(r, false, now.Add(time.Second), StepWipe); !act.Done {
		t.Fatalf("wiped: %+v, want done", act)
	}
}

func TestRollResizeDownAndAbort(t *testing.T) {
	now := t1
	svc := svcN(3)
	f := &rollFixture{t: t, svc: svc, ms: map[string]*Member{}}
	f.add(member("node-p", true, true, primaryReport(100)))
	for i, id := range []string{"node-b", "node-c"} {
		f.add(member(id, false, true, replicaReport("node-p", true, 100)))
		f.ms[id].Node.Index = i + 1
	}
	plan, err := PlanResize(svc, f.members(), 1, useast, Fleet{})
	if err != nil {
		t.Fatal(err)
	}
	op, err := StartRoll(svc, f.members(), plan, now)
	if err != nil {
		t.Fatal(err)
	}
	r := op.Roll
	if svc.NodeCount != 1 || r.Before != 3 || r.Step != StepRelease {
		t.Fatalf("3 → 1 started: node count %d, roll %+v", svc.NodeCount, r)
	}
	if got := SyncStandbyNames(svc, f.members()); got.StandbyNames != "" {
		t.Errorf("a 1-node target's standby names = %q", got.StandbyNames)
	}
	f.ms["node-p"].Report.Standbys = []StandbyStatus{{Name: "node-b", SyncState: SyncStateAsync}, {Name: "node-c", SyncState: SyncStateAsync}}
	act := f.advance(r, false, now, StepWipe)
	if diff := cmp.Diff([]string{"node-c", "node-b"}, act.Delete); diff != "" {
		t.Fatalf("wipe (-want +got):\n%s", diff)
	}

	// 1 → 2, aborted: the new node failed while catching up; and a
	// primary lost before the switchover aborts too.
	svc2 := svcN(1)
	g := &rollFixture{t: t, svc: svc2, ms: map[string]*Member{}}
	g.add(member("node-p", true, true, primaryReport(100)))
	plan2 := &RollPlan{Type: OpServiceResize, Target: 2, Add: []Slot{{"b1", "us-east-1b"}}}
	plan2.steps()
	op2, err := StartRoll(svc2, g.members(), plan2, now)
	if err != nil {
		t.Fatal(err)
	}
	r2 := op2.Roll
	r2.Added = []string{"node-n"}
	g.add(member("node-n", false, true, nil))
	g.ms["node-n"].Node.State = StateFailed
	if act := g.advance(r2, false, now, StepCatchUp); act.ReplaceAdded != "node-n" {
		t.Fatalf("new node failed: %+v, want it replaced", act)
	}
	if sl, ok := r2.SlotOf("node-n"); !ok || sl != plan2.Add[0] {
		t.Fatalf("SlotOf(node-n) = %v, %v", sl, ok)
	}
	r2.ReplaceAdded("node-n", "node-n2", plan2.Add[0])
	if r2.Added[0] != "node-n2" || r2.Replaced != 1 {
		t.Fatalf("after ReplaceAdded: %v replaced %d", r2.Added, r2.Replaced)
	}
	g.add(member("node-n2", false, true, nil))
	g.ms["node-n2"].Node.State = StateFailed
	r2.Replaced = MaxNewNodeReplacements
	act = g.advance(r2, false, now, StepCatchUp)
	if !act.Abort || act.Fail == nil || act.Fail.Code != CodeRollAborted {
		t.Fatalf("failed new node: %+v, want abort", act)
	}
	if err := AbortRoll(svc2, op2, *act.Fail, now); err != nil {
		t.Fatal(err)
	}
	if svc2.NodeCount != 1 || svc2.OperationID != "" || op2.State != StateFailed {
		t.Errorf("aborted: node count %d, operation %q, op %s", svc2.NodeCount, svc2.OperationID, op2.State)
	}
	r3 := &Roll{Plan: *plan2, Step: StepCatchUp, From: "node-p", Added: []string{"node-n"}}
	g.ms["node-n"].Node.State = StateRunning
	g.ms["node-n"].Report = replicaReport("node-p", true, 100)
	if act := g.advance(r3, true, now, StepCatchUp); !act.Abort {
		t.Errorf("primary lost while catching up: %+v, want abort", act)
	}
}

func TestNextNodeIndex(t *testing.T) {
	nodes := []*Node{{Index: 0}, {Index: 4, Meta: Meta{State: StateDeleted}}, {Index: 2}}
	if got := NextNodeIndex(nodes); got != 5 {
		t.Errorf("NextNodeIndex = %d, want 5", got)
	}
}
