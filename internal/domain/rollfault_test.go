package domain

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Faults during a roll-forward (docs/design/0014, "Faults during a
// roll-forward"): a lost primary, candidate or new node at each step.

// upgradeAt is an n-node service being upgraded — old nodes node-p (the
// primary) and node-b, node-c…, new nodes node-x (the candidate),
// node-y, node-z… — with the roll at step and phase and the reports the
// agents would send there.
func upgradeAt(t *testing.T, n int, step, phase string) (*rollFixture, *Roll) {
	t.Helper()
	svc := svcN(n)
	svc.PrimaryID = "node-p"
	f := &rollFixture{t: t, svc: svc, ms: map[string]*Member{}}
	old := []string{"node-p", "node-b", "node-c"}[:n]
	added := []string{"node-x", "node-y", "node-z"}[:n]
	plan := &RollPlan{Type: OpServiceUpgrade, Target: n, Switchover: true, Retire: old}
	for i := range added {
		plan.Add = append(plan.Add, Slot{Host: fmt.Sprintf("h%d", i+10), AZ: "us-east-1" + string(rune('a'+i))})
	}
	plan.steps()
	r := &Roll{Plan: *plan, Step: step, Phase: phase, From: "node-p", Before: n, Added: added}
	if phase != PhaseReady {
		r.DemotedAt = t1
	}
	switched := step == StepRelease || step == StepWipe
	promoting := step == StepSwitchover && phase == PhasePromote
	for i, id := range append(slices.Clone(old), added...) {
		var rep *ReplicationReport
		switch {
		case id == "node-p" && (switched || phase != PhaseReady):
			rep = &ReplicationReport{At: t1, Fenced: true, ReceivedLSN: 200 << 20, DownSince: t1}
		case id == "node-p":
			rep = primaryReport(100 << 20)
		case id == "node-x" && switched:
			rep = primaryReport(300<<20, StandbyStatus{Name: "node-y", SyncState: SyncStateSync})
		case switched && slices.Contains(added, id):
			rep = replicaReport("node-x", true, 300<<20)
		case switched || promoting:
			rep = replicaReport("", false, 200<<20+100) // following no one
		default:
			rep = replicaReport("node-p", true, 100<<20)
		}
		m := member(id, false, true, rep)
		m.Node.Index = i
		if j := slices.Index(added, id); j >= 0 {
			m.Node.Host, m.Node.AZ = plan.Add[j].Host, plan.Add[j].AZ
		} else {
			m.Node.Host, m.Node.AZ = fmt.Sprintf("h%d", i), "us-east-1"+string(rune('a'+i))
		}
		f.add(m)
	}
	if switched {
		svc.MovePrimary("node-x", t1)
	}
	return f, r
}

// decide is the failover's decision over the roll's FailoverView and
// whether it says the roll's primary is lost.
func (f *rollFixture) decide(r *Roll, now time.Time) (FailoverDecision, bool) {
	d := DecideFailover(f.svc, r.FailoverView(f.members()), DefaultFailoverPolicy(), false, now)
	return d, r.PrimaryLost(d)
}

// onePrimary fails the test if roles give the primary role to more than
// one node, and returns the one (or "").
func onePrimary(t *testing.T, at string, roles map[string]NodeRole) string {
	t.Helper()
	var ps []string
	for id, r := range roles {
		if r.Role == NodeRolePrimary {
			ps = append(ps, id)
		}
	}
	if len(ps) > 1 {
		slices.Sort(ps)
		t.Fatalf("%s: %d nodes hold the primary role: %v", at, len(ps), ps)
	}
	if len(ps) == 0 {
		return ""
	}
	return ps[0]
}

// TestRollPrimaryLostAfterSwitchover: the new primary lost at the release
// or wipe step; the roll stops waiting for its release, deletes the
// retiring nodes and succeeds, and the failover promotes the new replica
// that followed it.
func TestRollPrimaryLostAfterSwitchover(t *testing.T) {
	for _, step := range []string{StepRelease, StepWipe} {
		t.Run(step, func(t *testing.T) {
			now := t1.Add(time.Second)
			f, r := upgradeAt(t, 2, step, "")
			if step == StepWipe {
				f.ms["node-b"].Node.State = StateDeleting // the wipe began with it
			}
			if p := onePrimary(t, "before", r.Roles(f.svc, f.members())); p != "node-x" {
				t.Fatalf("primary role on %q, want node-x", p)
			}
			if _, lost := f.decide(r, now); lost {
				t.Fatalf("primary lost with every host healthy")
			}
			f.ms["node-x"].HostHealthy = false
			d, lost := f.decide(r, now)
			if !lost || d.Lost != "node-x" || d.Promote != "node-y" {
				t.Fatalf("decision %+v (lost %v), want node-x lost and node-y promoted", d, lost)
			}
			act := f.advance(r, lost, now, step)
			want := []string{"node-p", "node-b"}
			if step == StepWipe {
				want = []string{"node-p"}
			}
			if !act.Done || !act.Changed || act.Why == nil || act.Why.Code != CodeRollHandedOver || !cmp.Equal(want, act.Delete) {
				t.Fatalf("primary lost at %s: %+v, want done deleting %v (roll_handed_over)", step, act, want)
			}
			// The reconciler deletes them and ends the operation; the
			// failover decides over every member.
			for _, id := range act.Delete {
				f.ms[id].Node.State = StateDeleting
			}
			roles := RolesOf(f.svc, f.members(), nil)
			if p := onePrimary(t, "roll ended", roles); p != "node-x" || roles["node-y"] != (NodeRole{NodeRoleReplica, "node-x"}) {
				t.Fatalf("roles after the roll: %+v", roles)
			}
			d = DecideFailover(f.svc, f.members(), DefaultFailoverPolicy(), false, now)
			if d.Verdict != VerdictPromote || d.Lost != "node-x" || d.Promote != "node-y" {
				t.Fatalf("failover after the roll: %+v, want node-y promoted", d)
			}
			op, fo, err := StartFailover(f.svc, d, f.ms["node-x"].Node, now)
			if err != nil || op == nil {
				t.Fatal(err)
			}
			roles = fo.Roles(f.members())
			if p := onePrimary(t, "failover fence", roles); p != "" || roles["node-x"].Role != NodeRoleFenced {
				t.Fatalf("failover roles: %+v", roles)
			}
		})
	}
}

// TestRollResizePrimaryLost: a resize down whose primary is lost before
// it confirmed the release aborts (the retiring replica followed it and
// may hold a commit only it acknowledged: it stays a candidate); once
// released, the roll hands over.
func TestRollResizePrimaryLost(t *testing.T) {
	now := t1
	svc := svcN(3)
	f := &rollFixture{t: t, svc: svc, ms: map[string]*Member{}}
	f.add(member("node-p", true, true, primaryReport(100, StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum}, StandbyStatus{Name: "node-c", SyncState: SyncStateQuorum})))
	for i, id := range []string{"node-b", "node-c"} {
		f.add(member(id, false, true, replicaReport("node-p", true, 100)))
		f.ms[id].Node.Index = i + 1
	}
	plan, err := PlanResize(svc, f.members(), 2, useast, Fleet{})
	if err != nil {
		t.Fatal(err)
	}
	op, err := StartRoll(svc, f.members(), plan, now)
	if err != nil {
		t.Fatal(err)
	}
	r := op.Roll
	if act := f.advance(r, false, now, StepRelease); !act.Wait {
		t.Fatalf("release not confirmed: %+v", act)
	}
	f.ms["node-p"].HostHealthy = false
	_, lost := f.decide(r, now)
	act := f.advance(r, lost, now, StepRelease)
	if !lost || !act.Abort || act.Fail == nil || act.Fail.Code != CodeRollAborted || len(act.Delete) > 0 {
		t.Fatalf("primary lost before the release (lost %v): %+v, want abort", lost, act)
	}
	if err := AbortRoll(svc, op, *act.Fail, now); err != nil || svc.NodeCount != 3 {
		t.Fatalf("aborted: %v, node count %d, want 3", err, svc.NodeCount)
	}

	// Released, then lost: the retiring node (deleting) is not waited for.
	r2 := &Roll{Plan: *plan, Step: StepWipe, From: "node-p", Before: 3}
	f.ms["node-c"].Node.State = StateDeleting
	_, lost = f.decide(r2, now)
	if act := f.advance(r2, lost, now, StepWipe); !lost || !act.Done || act.Why == nil || act.Why.Code != CodeRollHandedOver || len(act.Delete) != 0 {
		t.Fatalf("primary lost at the wipe (lost %v): %+v, want handed over", lost, act)
	}
}

// TestRollWipeSkipsLostHosts: a retiring node on a lost host is deleting
// until its host comes back; the wipe does not wait for it.
func TestRollWipeSkipsLostHosts(t *testing.T) {
	now := t1.Add(time.Second)
	f, r := upgradeAt(t, 2, StepWipe, "")
	f.ms["node-p"].HostHealthy = false
	act := f.advance(r, false, now, StepWipe)
	if !cmp.Equal([]string{"node-p", "node-b"}, act.Delete) {
		t.Fatalf("wipe: %+v", act)
	}
	f.ms["node-p"].Node.State, f.ms["node-b"].Node.State = StateDeleting, StateDeleting
	if act := f.advance(r, false, now, StepWipe); !act.Wait {
		t.Fatalf("node-b not wiped yet: %+v, want a wait", act)
	}
	f.ms["node-b"].Node.State = StateDeleted
	if act := f.advance(r, false, now, StepWipe); !act.Done || act.Why != nil {
		t.Fatalf("only node-p (lost host) left: %+v, want done", act)
	}
}

// TestRollCandidateLost: a candidate lost before it was promoted, or
// promoted while the service listed a synchronous standby, is replaced
// on its slot with the old primary re-opened; one promoted with no
// synchronous standby may hold commits only it acknowledged, so the old
// primary stays demoted and the service waits for it (failed).
func TestRollCandidateLost(t *testing.T) {
	now := t1.Add(300 * time.Millisecond)
	quorum := &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: ReplQuorum}
	for _, tc := range []struct {
		name      string
		n         int
		phase     string
		published []*SyncSetting // Service.Replication in the passes before the loss
		reopen    bool
		down      bool // lost by its PostgreSQL down for the grace, not its host
	}{
		{"ready", 2, PhaseReady, nil, true, false},
		{"demote", 2, PhaseDemote, nil, true, false},
		{"demote 1 node", 1, PhaseDemote, nil, true, false},
		{"promote, quorum", 3, PhasePromote, []*SyncSetting{quorum, quorum}, true, false},
		{"promote, quorum, PostgreSQL down", 3, PhasePromote, []*SyncSetting{quorum}, true, true},
		{"promote, 1 node", 1, PhasePromote, []*SyncSetting{{Mode: ReplNone}}, false, false},
		{"promote, 2 nodes asynchronous", 2, PhasePromote, []*SyncSetting{{Mode: ReplAsync}}, false, false},
		// Empty once (every old replica failed, say): Solo sticks.
		{"promote, quorum lost once", 3, PhasePromote, []*SyncSetting{quorum, {Mode: ReplAsync}, quorum}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, r := upgradeAt(t, tc.n, StepSwitchover, tc.phase)
			for _, p := range tc.published {
				f.svc.Replication = p
				if act := f.advance(r, false, now, StepSwitchover); !act.Wait {
					t.Fatalf("before the loss: %+v, want a wait", act)
				}
				onePrimary(t, "promoting", r.Roles(f.svc, f.members()))
			}
			if r.Solo == tc.reopen && tc.phase == PhasePromote {
				t.Fatalf("Solo = %v after %d passes", r.Solo, len(tc.published))
			}
			if tc.down {
				f.ms["node-x"].Report = &ReplicationReport{At: now, DownSince: now.Add(-DefaultGrace / 2)}
				if act := f.advance(r, false, now, StepSwitchover); !act.Wait || act.ReplaceAdded != "" {
					t.Fatalf("candidate down within the grace: %+v, want a wait", act)
				}
				f.ms["node-x"].Report.DownSince = now.Add(-DefaultGrace)
			} else {
				f.ms["node-x"].HostHealthy = false
			}
			if _, lost := f.decide(r, now); lost {
				t.Fatalf("the failover's view counts the candidate as the lost primary")
			}
			if !tc.reopen {
				act := f.advance(r, false, now, StepSwitchover)
				if !act.Wait || act.Cannot == nil || act.Cannot.Code != CodePrimaryLost || r.Phase != PhasePromote || act.ReplaceAdded != "" {
					t.Fatalf("solo candidate lost: %+v (phase %q), want a wait with Cannot", act, r.Phase)
				}
				roles := r.Roles(f.svc, f.members())
				if p := onePrimary(t, "solo candidate lost", roles); p != "node-x" || roles["node-p"].Role != NodeRoleDemoted {
					t.Fatalf("roles: %+v, want node-p still demoted", roles)
				}
				// It comes back, promoted: the switchover goes on.
				f.ms["node-x"].HostHealthy, f.ms["node-x"].Report = true, primaryReport(300<<20)
				if act := f.advance(r, false, now, StepSwitchover); act.MovePrimary != "node-x" {
					t.Fatalf("candidate back: %+v, want MovePrimary", act)
				}
				return
			}
			attempts := r.Attempts
			act := f.advance(r, false, now, StepCatchUp)
			if act.ReplaceAdded != "node-x" || !act.Changed || r.Phase != PhaseReady || !r.DemotedAt.IsZero() || r.Attempts != attempts {
				t.Fatalf("candidate lost: %+v, phase %q, demoted %v, attempts %d; want node-x replaced and the old primary re-opened", act, r.Phase, r.DemotedAt, r.Attempts)
			}
			roles := r.Roles(f.svc, f.members())
			if p := onePrimary(t, "re-opened", roles); p != "node-p" {
				t.Fatalf("roles after the loss: %+v, want node-p primary again", roles)
			}
			r.ReplaceAdded("node-x", "node-x2", r.Plan.Add[0])
			if r.Candidate() != "node-x2" {
				t.Fatalf("candidate %s, want the replacement", r.Candidate())
			}
		})
	}
}

// TestRollOldPrimaryLostWhileDemoted: the old primary's host lost during
// the demotion aborts the roll at once (not after the pause bound); lost
// during the promote phase, it does not matter: the candidate has all it
// wrote.
func TestRollOldPrimaryLostWhileDemoted(t *testing.T) {
	now := t1.Add(100 * time.Millisecond)
	f, r := upgradeAt(t, 3, StepSwitchover, PhaseDemote)
	f.ms["node-p"].HostHealthy = false
	if _, lost := f.decide(r, now); lost {
		t.Fatalf("a demoted primary counts for the failover")
	}
	act := f.advance(r, false, now, StepSwitchover)
	if !act.Abort || act.Fail == nil || act.Fail.Code != CodeRollAborted {
		t.Fatalf("old primary lost while demoted: %+v, want abort", act)
	}
	if p := onePrimary(t, "aborted", RolesOf(f.svc, f.members(), nil)); p != "node-p" {
		t.Fatalf("primary role after the abort on %q, want node-p (the failover fences it)", p)
	}

	g, r2 := upgradeAt(t, 3, StepSwitchover, PhasePromote)
	g.svc.Replication = &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: ReplQuorum}
	g.ms["node-p"].HostHealthy = false
	g.ms["node-x"].Report = primaryReport(300 << 20)
	if act := g.advance(r2, false, now, StepSwitchover); act.MovePrimary != "node-x" {
		t.Fatalf("old primary lost while promoting: %+v, want MovePrimary node-x", act)
	}
}

// TestRollNewNodeLostAfterSwitchover: a new replica lost at the release
// step holds nothing up: the roll ends and the failover's lost-replica
// path replaces it.
func TestRollNewNodeLostAfterSwitchover(t *testing.T) {
	now := t1.Add(time.Second)
	f, r := upgradeAt(t, 3, StepRelease, "")
	f.ms["node-x"].Report.Standbys = []StandbyStatus{{Name: "node-b", SyncState: SyncStateAsync}, {Name: "node-c", SyncState: SyncStateAsync}, {Name: "node-z", SyncState: SyncStateQuorum}}
	f.ms["node-y"].HostHealthy = false
	d, lost := f.decide(r, now)
	if lost || d.Verdict != VerdictReplace || d.Lost != "node-y" {
		t.Fatalf("decision %+v, want node-y replaced", d)
	}
	act := f.advance(r, lost, now, StepWipe)
	if !cmp.Equal([]string{"node-p", "node-b", "node-c"}, act.Delete) {
		t.Fatalf("wipe: %+v", act)
	}
	for _, id := range act.Delete {
		f.ms[id].Node.State = StateDeleted
	}
	if act := f.advance(r, false, now, StepWipe); !act.Done {
		t.Fatalf("wiped: %+v, want done", act)
	}
	if d := DecideFailover(f.svc, f.members(), DefaultFailoverPolicy(), false, now); d.Verdict != VerdictReplace || d.Lost != "node-y" {
		t.Fatalf("after the roll: %+v, want node-y replaced", d)
	}
}

// TestRollJoiningNotSynchronous: new nodes acknowledge no commit until the
// primary moves to one of them, so an aborted roll deletes no
// acknowledged commit; after the move they are the standbys.
func TestRollJoiningNotSynchronous(t *testing.T) {
	f, r := upgradeAt(t, 3, StepCatchUp, "")
	ms := f.members()
	r.Mark(ms)
	if got := SyncStandbyNames(f.svc, ms).StandbyNames; got != `ANY 1 ("node-b", "node-c")` {
		t.Errorf("standby names while catching up = %s, want the old replicas only", got)
	}
	f.svc.MovePrimary("node-x", t1)
	ms = f.members()
	r.Step, r.Phase = StepSwitchover, PhasePromote
	r.Mark(ms)
	if got := SyncStandbyNames(f.svc, ms).StandbyNames; got != `ANY 1 ("node-b", "node-c", "node-p", "node-y", "node-z")` {
		t.Errorf("standby names once moved = %s", got)
	}
	// A resize up (no switchover): joining until the roll ends.
	g := &rollFixture{t: t, svc: svcN(3), ms: map[string]*Member{}}
	g.add(member("node-p", true, true, primaryReport(100)))
	g.add(member("node-n", false, true, replicaReport("node-p", true, 100)))
	r2 := &Roll{Plan: RollPlan{Type: OpServiceResize, Target: 3, Add: []Slot{{"b1", "us-east-1b"}, {"c1", "us-east-1c"}}}, Step: StepCatchUp, From: "node-p", Added: []string{"node-n"}}
	ms = g.members()
	r2.Mark(ms)
	if s := SyncStandbyNames(g.svc, ms); s.StandbyNames != "" || s.Mode != ReplAsync {
		t.Errorf("1 → 3 while catching up: %+v, want asynchronous", s)
	}
}

// TestRollResizeReleaseReachesStaying: a resize 3 → 2 wipes its retiring
// replica only once the staying one has received the primary's position
// at the release (a commit only the retiring one acknowledged is before
// it), so a primary lost after the wipe loses no acknowledged commit.
func TestRollResizeReleaseReachesStaying(t *testing.T) {
	now := t1
	svc := svcN(3)
	f := &rollFixture{t: t, svc: svc, ms: map[string]*Member{}}
	f.add(member("node-p", true, true, primaryReport(500, StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum}, StandbyStatus{Name: "node-c", SyncState: SyncStateQuorum})))
	f.add(member("node-b", false, true, replicaReport("node-p", true, 400))) // behind: c acknowledged 400..500
	f.add(member("node-c", false, true, replicaReport("node-p", true, 500)))
	f.ms["node-b"].Node.Index, f.ms["node-c"].Node.Index = 1, 2
	plan, err := PlanResize(svc, f.members(), 2, useast, Fleet{})
	if err != nil || !cmp.Equal([]string{"node-c"}, plan.Retire) {
		t.Fatalf("plan %+v, %v; want node-c retired", plan, err)
	}
	op, err := StartRoll(svc, f.members(), plan, now)
	if err != nil {
		t.Fatal(err)
	}
	r := op.Roll
	f.ms["node-p"].Report = primaryReport(520, StandbyStatus{Name: "node-b", SyncState: SyncStateSync}) // c released
	f.ms["node-c"].Report = replicaReport("", false, 500)
	act := f.advance(r, false, now, StepRelease)
	if !act.Wait || !act.Changed || r.ReleaseLSN != 520 {
		t.Fatalf("released with node-b at 400: %+v, release LSN %v; want a wait for node-b to reach 520", act, r.ReleaseLSN)
	}
	f.ms["node-p"].Report.ReceivedLSN = 600
	f.ms["node-b"].Report = replicaReport("node-p", true, 520)
	if act := f.advance(r, false, now, StepWipe); !cmp.Equal([]string{"node-c"}, act.Delete) || r.ReleaseLSN != 520 {
		t.Fatalf("node-b at the release position: %+v (release LSN %v), want node-c wiped", act, r.ReleaseLSN)
	}
}

// TestRollCandidateLostAfterMove: the candidate, promoted with a
// synchronous standby listed, lost in the pass between the primary's move
// and the release step (no node followed it yet): the primary moves back
// to the old one, re-opened, and the candidate is replaced.
func TestRollCandidateLostAfterMove(t *testing.T) {
	now := t1.Add(time.Second)
	f, r := upgradeAt(t, 3, StepSwitchover, PhasePromote)
	f.svc.Replication = &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: ReplQuorum}
	f.ms["node-x"].Report = primaryReport(300 << 20)
	if act := f.advance(r, false, now, StepSwitchover); act.MovePrimary != "node-x" {
		t.Fatalf("promoted: %+v, want MovePrimary node-x", act)
	}
	f.svc.MovePrimary("node-x", now)
	f.svc.Replication = &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c", "node-p", "node-y", "node-z")`, Mode: ReplQuorum}
	onePrimary(t, "moved", r.Roles(f.svc, f.members()))
	f.ms["node-x"].HostHealthy = false
	d, lost := f.decide(r, now)
	if d.Lost != "node-x" {
		t.Fatalf("decision %+v, want node-x (primary now) lost", d)
	}
	act := f.advance(r, lost, now, StepCatchUp)
	if act.MovePrimary != "node-p" || act.ReplaceAdded != "node-x" || r.Phase != PhaseReady || act.Abort || act.Done {
		t.Fatalf("moved candidate lost: %+v (phase %q), want the primary moved back to node-p and node-x replaced", act, r.Phase)
	}
	f.svc.MovePrimary("node-p", now)
	if p := onePrimary(t, "moved back", r.Roles(f.svc, f.members())); p != "node-p" {
		t.Fatalf("primary role on %q, want node-p (re-opened)", p)
	}
	// The last replacement allowed is spent: the roll aborts, the
	// primary moved back all the same.
	g, r2 := upgradeAt(t, 3, StepSwitchover, PhasePromote)
	g.svc.Replication = f.svc.Replication
	g.svc.MovePrimary("node-x", now)
	g.ms["node-x"].Report, g.ms["node-x"].HostHealthy = primaryReport(300<<20), false
	r2.Replaced = MaxNewNodeReplacements
	if act := g.advance(r2, true, now, StepCatchUp); !act.Abort || act.MovePrimary != "node-p" {
		t.Fatalf("moved candidate lost after %d replacements: %+v, want abort and the primary moved back", r2.Replaced, act)
	}
}

// TestRollReopenedGrace: an old primary re-opened long after its
// demotion (its candidate lost past the grace) is not counted lost for
// having been down since the demotion: the grace counts from the
// re-opening.
func TestRollReopenedGrace(t *testing.T) {
	f, r := upgradeAt(t, 3, StepSwitchover, PhasePromote)
	f.svc.Replication = &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: ReplQuorum}
	f.ms["node-p"].Report.DownSince = t1
	late := t1.Add(3 * DefaultGrace)
	f.ms["node-x"].HostHealthy = false
	if act := f.advance(r, false, late, StepCatchUp); act.ReplaceAdded != "node-x" || !r.ReopenedAt.Equal(late) {
		t.Fatalf("candidate lost: %+v (re-opened at %v)", act, r.ReopenedAt)
	}
	if d, lost := f.decide(r, late.Add(time.Second)); lost || d.Verdict != VerdictWait || !d.Until.Equal(late.Add(DefaultGrace)) {
		t.Fatalf("re-opened old primary not up yet: %+v (lost %v), want a wait for the grace from the re-opening", d, lost)
	}
	if _, lost := f.decide(r, late.Add(DefaultGrace)); !lost {
		t.Fatalf("re-opened old primary down for the grace: not lost")
	}
	if f.ms["node-p"].Report.DownSince != t1 {
		t.Errorf("FailoverView changed the member's report")
	}
}

// TestRollPromotionStuck: a candidate still in recovery the failover's
// grace after the demotion counts as lost: replaced with the old primary
// re-opened, or (Solo) waited for with the service failed.
func TestRollPromotionStuck(t *testing.T) {
	for _, solo := range []bool{false, true} {
		t.Run(fmt.Sprintf("solo=%v", solo), func(t *testing.T) {
			f, r := upgradeAt(t, 3, StepSwitchover, PhasePromote)
			f.svc.Replication = &SyncSetting{StandbyNames: `ANY 1 ("node-b", "node-c")`, Mode: ReplQuorum}
			if solo {
				f.svc.Replication = &SyncSetting{Mode: ReplAsync}
			}
			act := f.advance(r, false, r.DemotedAt.Add(DefaultGrace-time.Millisecond), StepSwitchover)
			if !act.Wait || !act.Until.Equal(r.DemotedAt.Add(DefaultGrace)) || act.Cannot != nil {
				t.Fatalf("promoting within the grace: %+v, want a wait until the grace ends", act)
			}
			end := r.DemotedAt.Add(DefaultGrace)
			if solo {
				if act := f.advance(r, false, end, StepSwitchover); act.Cannot == nil || r.Phase != PhasePromote {
					t.Fatalf("solo promotion stuck: %+v, want a wait with Cannot", act)
				}
				return
			}
			if act := f.advance(r, false, end, StepCatchUp); act.ReplaceAdded != "node-x" || r.Phase != PhaseReady {
				t.Fatalf("promotion stuck: %+v, want node-x replaced and node-p re-opened", act)
			}
		})
	}
}

// TestRollReplacementSlot: a lost new node's replacement keeps its slot
// unless the slot's host is a known host that cannot take it; then Place
// chooses, away from the nodes that stay.
func TestRollReplacementSlot(t *testing.T) {
	f, r := upgradeAt(t, 2, StepCatchUp, "")
	// node-x's slot is h10 in us-east-1a, node-y's h11 in us-east-1b.
	hosts := []*Host{host("h10", "us-east-1a", 4), host("h11", "us-east-1b", 4), host("h12", "us-east-1a", 4), host("h13", "us-east-1c", 4)}
	fleet := Fleet{Hosts: hosts, Now: t0, HeartbeatTimeout: DefaultHostTimeout}
	if sl := r.ReplacementSlot("node-x", f.members(), useast, fleet); sl != r.Plan.Add[0] {
		t.Errorf("slot on a healthy host = %+v, want %+v", sl, r.Plan.Add[0])
	}
	if sl := r.ReplacementSlot("node-x", f.members(), useast, Fleet{Now: t0}); sl != r.Plan.Add[0] {
		t.Errorf("slot on an unregistered host = %+v, want kept", sl)
	}
	hosts[0].State = StateDown
	if sl := r.ReplacementSlot("node-x", f.members(), useast, fleet); sl != (Slot{Host: "h12", AZ: "us-east-1a"}) {
		t.Errorf("slot on a down host = %+v, want h12 in us-east-1a", sl)
	}
	hosts[2].State = StateDraining
	if sl := r.ReplacementSlot("node-x", f.members(), useast, fleet); sl != (Slot{Host: "h13", AZ: "us-east-1c"}) {
		t.Errorf("slot with its AZ full = %+v, want h13 in us-east-1c", sl)
	}
	r.ReplaceAdded("node-x", "node-x2", Slot{Host: "h13", AZ: "us-east-1c"})
	if sl, _ := r.SlotOf("node-x2"); sl.Host != "h13" || r.Candidate() != "node-x2" {
		t.Errorf("after ReplaceAdded: slot %+v, candidate %s", sl, r.Candidate())
	}
}
