package domain

import (
	"maps"
	"slices"
	"time"
)

// The roll-forward executor: a RollPlan stored with its operation
// (Operation.Roll) is driven one step per reconciler pass by Advance,
// level-triggered like the failover: every step's effect is a desired
// state derived from the stored progress (Roles), so a control plane
// killed at any point resumes from the stored step.

// Phases of the switchover step (Roll.Phase).
const (
	// PhaseReady (""): the old primary runs; the switchover waits for
	// the new primary to stream and be caught up closely.
	PhaseReady = ""
	// PhaseDemote: the old primary is demoted (a clean fast shutdown,
	// which streams its last WAL to the connected standbys); the new one
	// must receive it all within MaxSwitchoverPause.
	PhaseDemote = "demote"
	// PhasePromote: the new primary is promoted; the DNS name moves to it
	// once it accepts writes.
	PhasePromote = "promote"
)

// NodeRoleDemoted is a planned switchover's old primary: its agent stops
// PostgreSQL with a fast shutdown (the standbys receive its last WAL) and
// does not start it again while the role holds; it reports its final
// position. Unlike fenced, its firewall stays as it is: a re-opened
// switchover starts it again as the primary.
const NodeRoleDemoted = "demoted"

// SwitchoverLag is how close (bytes of WAL) the new primary must be
// before the old one is demoted: what is left streams within the pause.
const SwitchoverLag = 1 << 20

// MaxSwitchoverAttempts is how many switchovers are re-opened for
// exceeding MaxSwitchoverPause; later attempts may pause writes up to
// SlowSwitchoverPause, so that a host too slow to switch within a second
// still switches (each attempt costs the writes a pause of its own).
const (
	MaxSwitchoverAttempts = 3
	SlowSwitchoverPause   = 10 * time.Second
)

// PauseBound is the longest the current switchover attempt may keep
// writes paused before the old primary is re-opened.
func (r *Roll) PauseBound() time.Duration {
	if r.Attempts >= MaxSwitchoverAttempts {
		return SlowSwitchoverPause
	}
	return MaxSwitchoverPause
}

// SwitchoverRetry is how long a re-opened switchover waits before it
// demotes the old primary again.
const SwitchoverRetry = 5 * time.Second

// MaxNewNodeReplacements is how many failed new nodes a roll replaces
// before it aborts.
const MaxNewNodeReplacements = 3

// CodeRollAborted: a roll-forward stopped before the primary moved (a new
// node failed, or the primary was lost); the new nodes are deleted.
const CodeRollAborted = "roll_aborted"

// CodeRollHandedOver: the primary was lost after it moved (or after it
// released the retiring nodes): the roll ended, its old nodes wiped, and
// the failover takes over with the new ones.
const CodeRollHandedOver = "roll_handed_over"

// Roll is a roll-forward operation's progress, stored with the operation
// (Step also in Operation.Step).
type Roll struct {
	Plan RollPlan `json:"plan"`
	Step string   `json:"step"`
	// From is the primary when the operation started; Before the node
	// count then (restored if the roll aborts).
	From   string `json:"from"`
	Before int    `json:"before"`
	// Added are the new nodes' IDs, in the order of Plan.Add (set with
	// the add-nodes step).
	Added []string `json:"added,omitempty"`
	// Replaced counts the new nodes replaced for failing before they
	// caught up.
	Replaced int `json:"replaced,omitempty"`
	// Phase of the switchover; DemotedAt when the old primary was
	// demoted; Attempts the switchovers re-opened so far, RetryAt when
	// the next may start.
	Phase     string    `json:"phase,omitempty"`
	DemotedAt time.Time `json:"demoted_at,omitzero"`
	Attempts  int       `json:"attempts,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"`
	// ReleaseLSN is, in a roll without switchover, the primary's
	// position when it reported the retiring replicas released: the
	// staying replicas receive up to it before those are wiped.
	ReleaseLSN LSN `json:"release_lsn,omitempty"`
	// ReopenedAt is when the switchover last re-opened the old primary:
	// it was down on purpose until then (FailoverView).
	ReopenedAt time.Time `json:"reopened_at,omitzero"`
	// Solo: during this switchover's promote phase the service's
	// published synchronous_standby_names (the candidate's, as primary)
	// was empty at least once, so the candidate may have acknowledged
	// commits alone that the old primary lacks: the old primary is then
	// never re-opened for this switchover (see Roll.switchover).
	Solo bool `json:"solo,omitempty"`
}

// Candidate is the node the switchover promotes ("" before add-nodes or
// without a switchover).
func (r *Roll) Candidate() string {
	if !r.Plan.Switchover || r.Plan.SwitchTo >= len(r.Added) {
		return ""
	}
	return r.Added[r.Plan.SwitchTo]
}

// StartRoll returns the running operation of plan on svc (members as
// the plan saw them) and records it as svc's operation: the node count
// becomes the plan's target (the primary's standby list follows it) and
// the primary role is pinned to the current primary's ID.
func StartRoll(svc *Service, members []Member, plan *RollPlan, now time.Time) (*Operation, error) {
	var from string
	for _, m := range members {
		if m.Primary && !Going(m.Node.State) {
			from = m.Node.ID
		}
	}
	if from == "" {
		return nil, Conflictf(CodeInvalidState, "", "wait until the service has a primary", "service %s has no primary", svc.ID)
	}
	if svc.OperationID != "" {
		return nil, Conflictf(CodeOperationInProgress, "", "wait for operation "+svc.OperationID+" to finish", "service %s has an operation in progress", svc.ID)
	}
	op := NewOperation(svc.ProjectID, plan.Type, svc.ID, now)
	if err := op.Start(plan.Steps[0], now); err != nil {
		return nil, err
	}
	op.Roll = &Roll{Plan: *plan, Step: plan.Steps[0], From: from, Before: svc.NodeCount}
	svc.OperationID, svc.NodeCount, svc.UpdatedAt = op.ID, plan.Target, now
	svc.MovePrimary(from, now)
	return op, nil
}

// LiveRoll returns the live roll-forward operation of svc among ops, and
// its progress (nil, nil if none).
func LiveRoll(svc *Service, ops []*Operation) (*Operation, *Roll) {
	for _, o := range ops {
		if o.TargetID == svc.ID && o.Live() && o.Roll != nil {
			return o, o.Roll
		}
	}
	return nil, nil
}

// RollAction is what the reconciler does after Roll.Advance, in the
// transaction that stores the progress.
type RollAction struct {
	// Changed: the progress changed (store it, bump the service's hosts).
	Changed bool
	// Wait: nothing to do until the members change or Until (if set);
	// Why says what the roll waits for.
	Wait  bool
	Until time.Time
	Why   *Info
	// AddNodes: create a node on each of Plan.Add's slots (new IDs;
	// certificates are issued when placed) and record their IDs in Added.
	AddNodes bool
	// MovePrimary: the service's primary (and its DNS name) moves to
	// this node (back to the old primary when a candidate that held the
	// role before the release step is lost: then with ReplaceAdded or
	// Abort, which the reconciler carries out after the move).
	MovePrimary string
	// Delete: these nodes begin deleting (their agents wipe them).
	Delete []string
	// ReplaceAdded: this new node failed or lost its host before it
	// caught up; it begins deleting and a node with a new ID takes its
	// slot (ReplaceAdded on the progress records it).
	ReplaceAdded string
	// Abort: the roll stops before the primary moved (Fail says why):
	// the added nodes are deleted and the node count goes back to
	// Before; the operation fails.
	Abort bool
	Fail  *Info
	// Cannot: the roll waits on a lost node it cannot do without (with
	// Wait): the service cannot take writes and nothing recovers it by
	// itself; its health is failed with this reason.
	Cannot *Info
	// Done: the operation succeeds; with Delete, after those nodes
	// begin deleting, and Why (code roll_handed_over) says the primary
	// was lost at the end and the failover takes over.
	Done bool
}

// Advance evaluates the roll's current step against the members at now
// and moves it along Plan.Steps as far as they allow, or returns the
// action the reconciler must take first. published is the synchronous
// replication setting the service's primary role was last given
// (Service.Replication: the candidate's during the switchover's promote
// phase). primaryLost is the failover decision's verdict on the node
// holding the primary role (PrimaryLost); p's grace tells when a new
// node whose PostgreSQL is down is lost. A roll never makes the failover
// wait longer than its own bounded phases (docs/design/0014, "Faults
// during a roll-forward"):
//
//   - lost before the switchover's demotion, or before a resize's
//     release is confirmed: the roll aborts (the old nodes, the
//     retiring ones included, are the failover's candidates);
//   - lost after the primary moved, or once the release is confirmed:
//     the retiring nodes (which follow no one and hold nothing the
//     staying nodes lack) begin deleting and the roll ends
//     (CodeRollHandedOver); the failover chooses among the nodes that
//     stay;
//   - the old primary's host lost while it is demoted: the roll aborts
//     at once (no pause bound to wait out);
//   - the candidate lost during the switchover: candidateLost.
func (r *Roll) Advance(members []Member, published *SyncSetting, primaryLost bool, p FailoverPolicy, now time.Time) RollAction {
	byID := map[string]Member{}
	for _, m := range members {
		byID[m.Node.ID] = m
	}
	var act RollAction
	for {
		a, next := r.step(byID, published, primaryLost, p, now)
		a.Changed = a.Changed || act.Changed
		if next == "" {
			return a
		}
		act.Changed = true
		if next == stepDone {
			return RollAction{Changed: true, Done: true}
		}
		r.Step = next
	}
}

// PrimaryLost reports whether the failover decision d, taken over the
// roll's FailoverView,
// says the node holding the primary role in the roll's current step is
// lost (promote, or cannot fail over).
func (r *Roll) PrimaryLost(d FailoverDecision) bool {
	return d.Verdict == VerdictPromote || d.Verdict == VerdictCannot && d.Lost != "" && d.Lost == r.primary()
}

// stepDone marks the end of the plan in step's answer.
const stepDone = "\x00done"

// step evaluates the current step: its action, or the next step when it
// is done.
func (r *Roll) step(byID map[string]Member, published *SyncSetting, primaryLost bool, p FailoverPolicy, now time.Time) (RollAction, string) {
	next := func() string {
		if n := r.Plan.Next(r.Step); n != "" {
			return n
		}
		return stepDone
	}
	before := r.Step == StepAddNodes || r.Step == StepCatchUp || (r.Step == StepSwitchover && r.Phase == PhaseReady)
	if primaryLost {
		switch {
		case before:
			return RollAction{Abort: true, Fail: &Info{Code: CodeRollAborted, Message: "the primary was lost before the switchover; the new nodes are removed and the failover takes over"}}, ""
		case r.Step == StepRelease && !r.Plan.Switchover:
			// The retiring replicas followed this primary until now and
			// may hold a commit only they acknowledged: they stay.
			return RollAction{Abort: true, Fail: &Info{Code: CodeRollAborted, Message: "the primary was lost before it released the nodes to remove; they stay and the failover takes over"}}, ""
		case r.Step == StepRelease || r.Step == StepWipe:
			return r.handOver(byID), ""
		}
	}
	switch r.Step {
	case StepAddNodes:
		if len(r.Added) < len(r.Plan.Add) {
			return RollAction{AddNodes: true}, ""
		}
		return RollAction{}, next()
	case StepCatchUp:
		from, ok := byID[r.primary()]
		if !ok {
			return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "waiting for the service's primary"}}, ""
		}
		for _, id := range r.Added {
			m, ok := byID[id]
			if !ok || lostNew(m, p, now) {
				// A new node that failed or lost its host is replaced by
				// another on its slot (a new ID), MaxNewNodeReplacements
				// times at most; then the roll aborts.
				if r.Replaced >= MaxNewNodeReplacements {
					return RollAction{Abort: true, Fail: &Info{Code: CodeRollAborted, Message: "the new node " + id + " failed or lost its host before it caught up, as did the ones before it; the new nodes are removed, try again"}}, ""
				}
				return RollAction{ReplaceAdded: id}, ""
			}
			if m.Node.State != StateRunning || !streamsFrom(m, from.Node.ID) || !CaughtUp(m, from, CatchUpLag) {
				return RollAction{Wait: true, Why: &Info{Code: CodeReplicaCatchingUp, Message: "the new node " + id + " is catching up"}}, ""
			}
		}
		return RollAction{}, next()
	case StepSwitchover:
		solo := false
		if r.Phase == PhasePromote && !r.Solo && (published == nil || published.StandbyNames == "") {
			// The candidate, primary in this phase, was given no
			// synchronous standby: it may acknowledge commits alone.
			r.Solo, solo = true, true
		}
		act, n := r.switchover(byID, p, now, next)
		act.Changed = act.Changed || solo
		return act, n
	case StepRelease:
		prim, ok := byID[r.primary()]
		if !ok || prim.Report == nil || !prim.Report.Up {
			return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "waiting for the primary's report"}}, ""
		}
		for _, s := range prim.Report.Standbys {
			if slices.Contains(r.Plan.Retire, s.Name) && s.SyncState != SyncStateAsync {
				return RollAction{Wait: true, Why: &Info{Code: CodeReplicaCatchingUp, Message: "waiting for the primary to release node " + s.Name}}, ""
			}
		}
		if r.Plan.Switchover {
			// The retiring nodes followed the old primary, whose every
			// write the new one received: they hold nothing it lacks.
			return RollAction{}, next()
		}
		// The retiring replicas followed this primary until now: a commit
		// only one of them acknowledged is at most at the primary's
		// position when it reported them released. Each staying replica
		// that streams from it (a synchronous standby or about to be one)
		// receives up to there before they are wiped.
		changed := false
		if r.ReleaseLSN == 0 {
			r.ReleaseLSN, changed = prim.Report.ReceivedLSN, true
		}
		for _, id := range slices.Sorted(maps.Keys(byID)) {
			m := byID[id]
			if m.Primary || slices.Contains(r.Plan.Retire, id) || !streamsFrom(m, prim.Node.ID) || m.Report.ReceivedLSN >= r.ReleaseLSN {
				continue
			}
			return RollAction{Changed: changed, Wait: true, Why: &Info{Code: CodeReplicaCatchingUp, Message: "waiting for node " + id + " to receive what the nodes to remove may have acknowledged"}}, ""
		}
		return RollAction{Changed: changed}, next()
	case StepWipe:
		var del []string
		left := false
		for _, id := range r.Plan.Retire {
			m, ok := byID[id]
			if !ok {
				continue // deleted: wiped
			}
			if !Going(m.Node.State) {
				del = append(del, id)
			}
			// A deleting node on a lost host is wiped when its host comes
			// back (as a failed-over primary is): the roll does not wait.
			left = left || m.HostHealthy || !Going(m.Node.State)
		}
		if len(del) > 0 {
			return RollAction{Delete: del}, ""
		}
		if left {
			return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "waiting for the old nodes to be wiped"}}, ""
		}
		return RollAction{}, next()
	}
	return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "the roll-forward is in an unknown step", Cause: r.Step}}, ""
}

// lostNew reports whether a roll's new node is lost at now: deleted,
// failed, on a host that stopped heartbeating, or its PostgreSQL
// reported down for the policy's grace.
func lostNew(m Member, p FailoverPolicy, now time.Time) bool {
	if Going(m.Node.State) || m.Node.State == StateFailed {
		return true
	}
	lost, _, _ := memberLost(m, p, now)
	return lost
}

// candidateLost is the switchover's answer to a lost candidate. Never
// promoted (ready or demote phase), or promoted while the service's
// synchronous_standby_names listed at least one standby (!Solo: no node
// follows the candidate during the promote phase, so it could not
// acknowledge a commit), it holds no commit the old primary lacks: the
// old primary is re-opened (its role is primary again) and the roll goes
// back to catch-up, the candidate replaced on its slot. Promoted
// Solo, it may hold commits only it acknowledged: re-opening the old
// primary would lose them and the failover could promote no one either
// (no node followed the candidate), so the roll waits for it to return,
// the service failed with that reason. moved: the primary role (and the
// DNS name) had moved to the candidate in the pass before the release
// step (no node followed it yet): it moves back too.
func (r *Roll) candidateLost(id string, moved bool, now time.Time) (RollAction, string) {
	if r.Phase == PhasePromote && r.Solo {
		why := &Info{Code: CodePrimaryLost, Message: "the new primary " + id + " was lost (or did not finish its promotion) while it was promoted with no synchronous standby: it may hold commits the old primary lacks, so the old primary is not re-opened; the service waits for " + id + " to return"}
		return RollAction{Wait: true, Why: why, Cannot: why}, ""
	}
	// Back to catch-up with the old primary re-opened; the candidate is
	// replaced now whatever becomes of it (promoted, or maybe, it can
	// never follow the old primary again).
	r.reopen(now)
	r.Step = StepCatchUp
	act := RollAction{Changed: true}
	if moved {
		act.MovePrimary = r.From
	}
	if r.Replaced >= MaxNewNodeReplacements {
		act.Abort, act.Fail = true, &Info{Code: CodeRollAborted, Message: "the new node " + id + " was lost during the switchover, as were the ones before it; the old primary is re-opened and the new nodes are removed, try again"}
	} else {
		act.ReplaceAdded = id
	}
	return act, ""
}

// reopen ends the switchover's attempt at now: the old primary's role is
// primary again (Roles).
func (r *Roll) reopen(now time.Time) {
	r.Phase, r.DemotedAt, r.RetryAt, r.Solo, r.ReopenedAt = PhaseReady, time.Time{}, time.Time{}, false, now
}

// handOver ends a roll whose primary was lost after it moved (or after
// it released the retiring nodes): those begin deleting — they follow no
// one, hold nothing the staying nodes lack, and are no failover
// candidates — and the operation succeeds (the nodes did move); the
// failover takes over with the staying nodes.
func (r *Roll) handOver(byID map[string]Member) RollAction {
	var del []string
	for _, id := range r.Plan.Retire {
		if m, ok := byID[id]; ok && !Going(m.Node.State) {
			del = append(del, id)
		}
	}
	when := "after the switchover"
	if !r.Plan.Switchover {
		when = "after it released the nodes to remove"
	}
	return RollAction{Changed: true, Done: true, Delete: del, Why: &Info{Code: CodeRollHandedOver,
		Message: "the primary " + r.primary() + " was lost " + when + "; the old nodes are removed and the failover takes over"}}
}

// primary is the node holding the primary role in the roll's current
// step: the candidate once the switchover is over.
func (r *Roll) primary() string {
	if r.Switched() {
		return r.Candidate()
	}
	return r.From
}

// switchover drives the switchover's phases: demote the old primary once
// the new one is close behind; promote the new one once it has received
// all the old one wrote (SwitchoverReady); move the primary once it
// accepts writes. A demoted primary the new one has not caught up with
// within MaxSwitchoverPause is re-opened (it runs as the primary again)
// and the switchover retries after SwitchoverRetry.
func (r *Roll) switchover(byID map[string]Member, p FailoverPolicy, now time.Time, next func() string) (RollAction, string) {
	old, okOld := byID[r.From]
	cand, okCand := byID[r.Candidate()]
	if !okOld {
		return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "the switchover's nodes are missing"}}, ""
	}
	if !okCand || lostNew(cand, p, now) {
		return r.candidateLost(r.Candidate(), okCand && cand.Primary, now)
	}
	if r.Phase == PhaseDemote && !old.HostHealthy {
		// Not demoted cleanly as far as anyone knows: the candidate may
		// lack what the old primary acknowledged. Re-opened (lost), so
		// that the failover decides among the old nodes.
		r.reopen(now)
		return RollAction{Abort: true, Fail: &Info{Code: CodeRollAborted, Message: "the primary was lost during the switchover, before the new primary was promoted; the new nodes are removed and the failover takes over"}}, ""
	}
	switch r.Phase {
	case PhaseReady:
		if now.Before(r.RetryAt) {
			return RollAction{Wait: true, Until: r.RetryAt, Why: &Info{Code: CodeReplicaCatchingUp, Message: "the switchover retries"}}, ""
		}
		if !old.HostHealthy || old.Report == nil || !old.Report.Up || !streamsFrom(cand, r.From) || !CaughtUp(cand, old, SwitchoverLag) {
			return RollAction{Wait: true, Why: &Info{Code: CodeReplicaCatchingUp, Message: "waiting for " + cand.Node.ID + " to be close behind the primary"}}, ""
		}
		r.Phase, r.DemotedAt = PhaseDemote, now
		return RollAction{Changed: true, Wait: true, Until: now.Add(MaxSwitchoverPause), Why: &Info{Code: CodeInvalidState, Message: "switching over: the old primary is demoted"}}, ""
	case PhaseDemote:
		// Only a report the old primary's agent sent after this demotion
		// counts (a re-opened switchover's earlier one says nothing).
		if SwitchoverReady(old, cand) && old.Report.At.After(r.DemotedAt) {
			r.Phase = PhasePromote
			return RollAction{Changed: true, Wait: true, Why: &Info{Code: CodeInvalidState, Message: "switching over: promoting " + cand.Node.ID}}, ""
		}
		if end := r.DemotedAt.Add(r.PauseBound()); now.Before(end) {
			return RollAction{Wait: true, Until: end, Why: &Info{Code: CodeInvalidState, Message: "switching over: waiting for " + cand.Node.ID + " to receive the last WAL"}}, ""
		}
		bound := r.PauseBound()
		r.reopen(now)
		r.Attempts, r.RetryAt = r.Attempts+1, now.Add(SwitchoverRetry)
		return RollAction{Changed: true, Wait: true, Until: r.RetryAt, Why: &Info{Code: CodeReplicaCatchingUp,
			Message: "the switchover would pause writes longer than " + bound.String() + "; the old primary is re-opened and it retries"}}, ""
	case PhasePromote:
		if rep := cand.Report; rep == nil || !rep.Up || rep.InRecovery {
			// A promotion not done within the failover's grace of the
			// demotion is stuck: the candidate counts as lost.
			if end := r.DemotedAt.Add(p.Grace); now.Before(end) {
				return RollAction{Wait: true, Until: end, Why: &Info{Code: CodeInvalidState, Message: "switching over: promoting " + cand.Node.ID}}, ""
			}
			return r.candidateLost(cand.Node.ID, cand.Primary, now)
		}
		if !cand.Primary {
			return RollAction{MovePrimary: cand.Node.ID}, ""
		}
		r.Phase = ""
		return RollAction{}, next()
	}
	return RollAction{Wait: true, Why: &Info{Code: CodeInvalidState, Message: "the switchover is in an unknown phase", Cause: r.Phase}}, ""
}

// Roles are the roles of the service's nodes during the roll (RolesOf's
// otherwise): from the demote phase on, the old primary is demoted (until
// it is wiped); during the promote phase the candidate is primary and the
// other nodes follow no one (one that followed the candidate as a
// standby would have to notice its new timeline; one that connects to it
// once it is primary streams at once); from the release step on, the
// retiring nodes follow no one.
func (r *Roll) Roles(svc *Service, members []Member) map[string]NodeRole {
	out := RolesOf(svc, members, nil)
	switched := r.Switched()
	promoting := r.Step == StepSwitchover && r.Phase == PhasePromote
	for _, m := range members {
		id := m.Node.ID
		if _, ok := out[id]; !ok {
			continue // going
		}
		switch {
		case id == r.From && (switched || (r.Step == StepSwitchover && r.Phase != PhaseReady)):
			out[id] = NodeRole{Role: NodeRoleDemoted}
		case promoting && id == r.Candidate():
			out[id] = NodeRole{Role: NodeRolePrimary}
		case promoting:
			out[id] = NodeRole{Role: NodeRoleReplica}
		case (r.Step == StepRelease || r.Step == StepWipe) && slices.Contains(r.Plan.Retire, id):
			out[id] = NodeRole{Role: NodeRoleReplica}
		}
	}
	return out
}

// Mark sets Retiring on the members the roll is about to wipe, from its
// release step on (the primary's standby list then drops them), and
// Joining on its new nodes until the primary moves to one of them (or,
// without a switchover, until the roll ends): a new node acknowledges no
// commit while the roll may still abort and delete it, so an aborted
// roll never takes an acknowledged commit with it.
func (r *Roll) Mark(members []Member) {
	if r.Step == StepRelease || r.Step == StepWipe {
		for i := range members {
			if slices.Contains(r.Plan.Retire, members[i].Node.ID) {
				members[i].Retiring = true
			}
		}
		return
	}
	for _, m := range members {
		if m.Primary && slices.Contains(r.Added, m.Node.ID) {
			return // moved: the new nodes are its standbys
		}
	}
	for i := range members {
		if slices.Contains(r.Added, members[i].Node.ID) {
			members[i].Joining = true
		}
	}
}

// ReplaceAdded records that node took the place of the failed new node
// old, on slot sl (ReplacementSlot).
func (r *Roll) ReplaceAdded(old, node string, sl Slot) {
	if i := slices.Index(r.Added, old); i >= 0 {
		r.Added[i], r.Replaced = node, r.Replaced+1
		if i < len(r.Plan.Add) {
			r.Plan.Add[i] = sl
		}
	}
}

// ReplacementSlot is where the node replacing the lost new node id goes:
// its slot, unless f knows the slot's host and cannot place a node there
// now (down, say: the node was lost with it); then a slot Place finds
// away from the nodes that stay (the old nodes the roll retires, and id,
// are leaving), in the same AZ when a host there has room. When none
// exists the slot stays (the replacement fails with its host, and after
// MaxNewNodeReplacements the roll aborts).
func (r *Roll) ReplacementSlot(id string, members []Member, reg Region, f Fleet) Slot {
	sl, ok := r.SlotOf(id)
	if !ok {
		return sl
	}
	known := false
	for _, h := range f.Hosts {
		if h.Name == sl.Host {
			known = true
			if h.Schedulable(f.Now, f.HeartbeatTimeout) {
				return sl
			}
		}
	}
	if !known {
		return sl
	}
	req := PlacementRequest{Region: reg, Count: 1, PreferAZ: sl.AZ}
	for _, m := range members {
		switch {
		case Going(m.Node.State):
		case m.Node.ID == id || slices.Contains(r.Plan.Retire, m.Node.ID):
			req.Leaving = append(req.Leaving, m.Node)
		default:
			req.Keep = append(req.Keep, m.Node)
		}
	}
	if slots, err := Place(req, f); err == nil {
		return slots[0]
	}
	return sl
}

// SlotOf is the plan's slot of new node id (false if not one of Added).
func (r *Roll) SlotOf(id string) (Slot, bool) {
	i := slices.Index(r.Added, id)
	if i < 0 || i >= len(r.Plan.Add) {
		return Slot{}, false
	}
	return r.Plan.Add[i], true
}

// Switched reports whether the primary role has moved to the candidate
// (the release and wipe steps of a plan with a switchover).
func (r *Roll) Switched() bool {
	return r.Plan.Switchover && (r.Step == StepRelease || r.Step == StepWipe)
}

// OutOfService reports whether the roll took node id out of service: the
// old primary once demoted, the retiring nodes from the release step on.
// The failover decision does not count them.
func (r *Roll) OutOfService(id string) bool {
	if id == r.From && r.Plan.Switchover && (r.Switched() || (r.Step == StepSwitchover && r.Phase != PhaseReady)) {
		return true
	}
	return (r.Step == StepRelease || r.Step == StepWipe) && slices.Contains(r.Plan.Retire, id)
}

// FailoverView is members as the failover decision sees them during the
// roll: without the nodes it took out of service (OutOfService), and with
// a re-opened old primary's PostgreSQL down at most since its re-opening
// (the switchover stopped it on purpose: the grace counts from then).
func (r *Roll) FailoverView(members []Member) []Member {
	var out []Member
	for _, m := range members {
		if r.OutOfService(m.Node.ID) {
			continue
		}
		if rep := m.Report; m.Node.ID == r.From && rep != nil && !rep.Up && rep.DownSince.Before(r.ReopenedAt) {
			c := *rep
			c.DownSince, m.Report = r.ReopenedAt, &c
		}
		out = append(out, m)
	}
	return out
}

// Switching reports whether the roll's switchover has demoted the old
// primary (until the primary moves): the agents then read and report
// replication changes at once, positions included (not at their next
// tick). Before the demotion they report as usual.
func (r *Roll) Switching() bool { return r.Step == StepSwitchover && r.Phase != PhaseReady }

// ServiceRoles returns each live node's role in svc's desired state from
// its live operations: a failover's, a roll-forward's, else RolesOf's.
func ServiceRoles(svc *Service, members []Member, ops []*Operation) map[string]NodeRole {
	if _, f := LiveFailover(svc, ops); f != nil {
		return f.Roles(members)
	}
	if _, r := LiveRoll(svc, ops); r != nil {
		return r.Roles(svc, members)
	}
	return RolesOf(svc, members, nil)
}

// AbortRoll ends svc's roll op after act.Abort: the node count goes back
// to what it was and the operation fails with act.Fail. The caller
// deletes the added nodes.
func AbortRoll(svc *Service, op *Operation, why Info, now time.Time) error {
	if err := op.Fail(why, now); err != nil {
		return err
	}
	if op.Roll != nil && op.Roll.Before > 0 {
		svc.NodeCount = op.Roll.Before
	}
	svc.EndOperation(op.ID, now)
	return nil
}

// NextNodeIndex is the index of a service's next new node: past every
// index its nodes (live or not) used, so a new node never takes index 0
// (the primary of a service that never moved it).
func NextNodeIndex(nodes []*Node) int {
	i := 0
	for _, n := range nodes {
		i = max(i, n.Index+1)
	}
	return i
}
