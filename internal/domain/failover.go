package domain

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Failover (unplanned): detect a lost primary, promote the replica that
// received the most WAL, re-point the others, replace the lost node. The
// argument for why this never leaves two writable primaries is in
// docs/design/0014-failover.md.

// OpServiceFailover is the operation of an unplanned failover.
const OpServiceFailover = "service.failover"

// Steps of a failover operation, in order (FailoverSteps).
const (
	// StepFence: the old primary must stop acknowledging writes — its
	// agent reports it fenced, or its lease has run out.
	StepFence = "fence"
	// StepDetach: every replica stops following the old primary (so it
	// can no longer acknowledge a commit, and their WAL positions are
	// final); the one that received the most WAL is chosen again.
	StepDetach = "detach"
	// StepPromote: the chosen replica is promoted.
	StepPromote = "promote"
	// StepRepoint: the service's primary (its DNS name) moves to the
	// promoted node and the other replicas stream from it.
	StepRepoint = "repoint"
	// StepReplace: a new node is placed for the lost one, which is
	// deleted (wiped if its host comes back).
	StepReplace = "replace"
	// StepCatchUp: the new node streams from the primary and has caught
	// up; the failover is over.
	StepCatchUp = "catch-up"
)

// FailoverSteps is the failover's step machine.
var FailoverSteps = Machine{Name: "failover step", Initial: StepFence, Next: map[string][]string{
	StepFence:   {StepDetach},
	StepDetach:  {StepPromote},
	StepPromote: {StepRepoint},
	StepRepoint: {StepReplace},
	StepReplace: {StepCatchUp},
}}

// Error and condition codes of failover.
const (
	// CodeSingleNode: a 1-node service has no replica to fail over to.
	CodeSingleNode = "single_node"
	// CodeDoubleFailure: the primary and a replica are lost at once.
	CodeDoubleFailure = "double_failure"
	// CodeReplicaNotSynchronous: a 2-node service's replica was behind
	// (asynchronous) when the primary was lost.
	CodeReplicaNotSynchronous = "replica_not_synchronous"
	// CodePrimaryLost is the condition of a service whose primary is
	// lost (during the grace, or when it cannot fail over).
	CodePrimaryLost = "primary_lost"
	// CodeNodeLost is the condition of a lost replica.
	CodeNodeLost = "node_lost"
	// CodeFailoverAborted: the chosen replica was lost before promotion.
	CodeFailoverAborted = "failover_aborted"
)

// FailoverPolicy holds the timings of detection and fencing, one
// coherent set (Check): agents heartbeat every HeartbeatInterval; a host
// silent for HostTimeout is down; an agent that has not reached the
// control plane for Lease fences its primaries, and the control plane
// counts them fenced LeaseMargin later. The defaults and the argument
// for them are in docs/design/0014-failover.md ("Detection").
type FailoverPolicy struct {
	// HeartbeatInterval is how often an agent reports when nothing
	// changed (a report without nodes: the host's heartbeat).
	HeartbeatInterval time.Duration
	// HostTimeout: a host whose last heartbeat is older is down.
	HostTimeout time.Duration
	// Grace is how long an agent may report PostgreSQL down before its
	// node counts as lost.
	Grace time.Duration
	// ReportTimeout: a node's replication report older than this does
	// not count (nodes report their positions at least every
	// ReplicationReportInterval, not with every heartbeat).
	ReportTimeout time.Duration
	// Lease is how long an agent keeps a node writable without reaching
	// the control plane, counted from the sending of its last report the
	// control plane acknowledged; LeaseMargin covers the agent's delay in
	// closing the firewall once the lease ran out and the drift of the
	// clocks' rates.
	Lease       time.Duration
	LeaseMargin time.Duration
}

// StuckReplicaAfter is how long a replica that follows a healthy primary
// may not stream before it counts as lost and is replaced: one that
// cannot follow (after a failover to a node whose WAL lacks what it
// needs) never will, and one reconnecting streams again within seconds.
const StuckReplicaAfter = time.Minute

// Default timings (DefaultFailoverPolicy).
const (
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultHostTimeout       = 3 * time.Second
	DefaultLease             = 2500 * time.Millisecond
	DefaultLeaseMargin       = 400 * time.Millisecond
	DefaultGrace             = 10 * time.Second
	DefaultReportTimeout     = 15 * time.Second
	// ReplicationReportInterval is how often an agent reports a node's
	// replication when only its positions changed.
	ReplicationReportInterval = 5 * time.Second
)

// DefaultFailoverPolicy: heartbeats every half second, a host down after
// 3 s of silence; its agent has fenced its primaries 2.9 s after its
// last acknowledged report (lease 2.5 s + margin 0.4 s), before the host
// is marked down, so the failover's fence step does not wait. A healthy
// primary is fenced only after four heartbeats in a row went unanswered.
func DefaultFailoverPolicy() FailoverPolicy {
	return FailoverPolicy{HeartbeatInterval: DefaultHeartbeatInterval, HostTimeout: DefaultHostTimeout, Grace: DefaultGrace,
		ReportTimeout: DefaultReportTimeout, Lease: DefaultLease, LeaseMargin: DefaultLeaseMargin}
}

// CodeInvalidTiming is the error code of an incoherent FailoverPolicy.
const CodeInvalidTiming = "invalid_timing"

// Check reports the first rule p breaks, naming the field (the flags of
// moat server, up and agent are these names with dashes):
//
//   - every timing positive, the lease at least a second (agents before
//     lease_ms read whole seconds);
//   - heartbeat_interval at most a third of the lease: two heartbeats
//     may be lost or late before a healthy primary is fenced;
//   - lease + lease_margin shorter than host_timeout: by the time a host
//     is marked down its agent has fenced its primaries;
//   - report_timeout at least host_timeout and twice the replication
//     report interval: a replica that reports normally always counts.
func (p FailoverPolicy) Check() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"heartbeat_interval", p.HeartbeatInterval}, {"host_timeout", p.HostTimeout}, {"grace", p.Grace},
		{"report_timeout", p.ReportTimeout}, {"lease", p.Lease}, {"lease_margin", p.LeaseMargin}} {
		if f.d <= 0 {
			return Invalidf(CodeInvalidTiming, f.name, "give "+f.name+" a positive duration such as "+durationOf(f.name), "%s %v is not positive", f.name, f.d)
		}
	}
	switch {
	case p.Lease < time.Second:
		return Invalidf(CodeInvalidTiming, "lease", "give a lease of at least 1s", "lease %v is shorter than a second", p.Lease)
	case 3*p.HeartbeatInterval > p.Lease:
		return Invalidf(CodeInvalidTiming, "heartbeat_interval", fmt.Sprintf("give a heartbeat_interval of at most %v (a third of the lease), or a longer lease", (p.Lease/3).Truncate(time.Millisecond)),
			"heartbeat_interval %v is more than a third of the lease %v: a healthy primary would be fenced after one late heartbeat", p.HeartbeatInterval, p.Lease)
	case p.Lease+p.LeaseMargin >= p.HostTimeout:
		return Invalidf(CodeInvalidTiming, "host_timeout", fmt.Sprintf("give a host_timeout longer than %v (lease + lease_margin), or a shorter lease", p.Lease+p.LeaseMargin),
			"host_timeout %v is not longer than lease %v + lease_margin %v: a host marked down might still accept writes", p.HostTimeout, p.Lease, p.LeaseMargin)
	case p.ReportTimeout < p.HostTimeout || p.ReportTimeout < 2*ReplicationReportInterval:
		return Invalidf(CodeInvalidTiming, "report_timeout", fmt.Sprintf("give a report_timeout of at least %v", max(p.HostTimeout, 2*ReplicationReportInterval)),
			"report_timeout %v is shorter than host_timeout %v or twice the replication report interval %v", p.ReportTimeout, p.HostTimeout, ReplicationReportInterval)
	}
	return nil
}

// durationOf is an example value of timing field name (its default).
func durationOf(name string) string {
	d := DefaultFailoverPolicy()
	return map[string]time.Duration{"heartbeat_interval": d.HeartbeatInterval, "host_timeout": d.HostTimeout, "grace": d.Grace,
		"report_timeout": d.ReportTimeout, "lease": d.Lease, "lease_margin": d.LeaseMargin}[name].String()
}

// Fenced reports whether an agent whose last contact with the control
// plane was lastContact must have fenced its nodes at now (the agent
// runs this on its monotonic clock; the control plane with the lease's
// margin added).
func Fenced(lastContact time.Time, lease time.Duration, now time.Time) bool {
	return !now.Before(lastContact.Add(lease))
}

// Failover verdicts (FailoverDecision.Verdict).
const (
	VerdictNone    = "none"
	VerdictWait    = "wait"
	VerdictPromote = "promote"
	VerdictReplace = "replace"
	VerdictCannot  = "cannot"
)

// FailoverDecision is what the control plane does about a service now.
type FailoverDecision struct {
	Verdict string
	// Lost is the lost node (the primary for wait, promote and cannot;
	// a replica for replace); Promote the replica to promote.
	Lost    string
	Promote string
	// Until is when to look again (wait).
	Until time.Time
	// Why explains the verdict (the service's condition).
	Why *Info
	// Forced: an operator forced the failover (see DecideFailover).
	Forced bool
}

// DecideFailover looks at svc's members at now. The primary is lost when
// its host stopped heartbeating, or its agent has reported PostgreSQL
// down for p.Grace (wait until then). A lost primary is replaced by the
// replica that received the most WAL (ties by node ID) among those that
// followed it and report now, provided none could hold a commit it lacks:
//
//   - 1 node: cannot (single_node).
//   - 2 nodes: the replica must have been synchronous in the primary's
//     last report; else cannot (replica_not_synchronous): commits were
//     acknowledged without it.
//   - 3 nodes: every running (or failed) replica must report: one that
//     does not may hold the only copy of an acknowledged commit; else
//     cannot (double_failure). A replica still being created was never
//     in synchronous_standby_names and does not count.
//   - A replica that left the service (its Departure: replaced, drained)
//     may have acknowledged commits before the primary stopped counting
//     it: the replica promoted must have received up to its AckBound,
//     and while that bound is not known nothing is promoted (as above:
//     replica_not_synchronous with 2 nodes, else double_failure).
//
// force (an operator's decision) promotes the best reporting replica
// despite those risks. With the primary healthy, a lost replica gives
// replace. Never two primaries: a service with two members marked
// primary gets cannot.
func DecideFailover(svc *Service, members []Member, p FailoverPolicy, force bool, now time.Time) FailoverDecision {
	var primary *Member
	live := 0
	for i, m := range members {
		if Going(m.Node.State) {
			continue
		}
		live++
		if m.Primary {
			if primary != nil {
				return FailoverDecision{Verdict: VerdictCannot, Why: &Info{Code: CodeInvalidState,
					Message: "two nodes are marked primary; the control plane refuses to fail over", Cause: primary.Node.ID + ", " + m.Node.ID}}
			}
			primary = &members[i]
		}
	}
	if primary == nil || Going(svc.State) {
		return FailoverDecision{Verdict: VerdictNone}
	}
	lost, until, why := memberLost(*primary, p, now)
	if !lost {
		if !until.IsZero() {
			return FailoverDecision{Verdict: VerdictWait, Lost: primary.Node.ID, Until: until, Why: why}
		}
		for _, m := range members {
			if m.Primary || Going(m.Node.State) || m.Node.State == StateCreating {
				continue
			}
			if l, _, w := memberLost(m, p, now); l {
				return FailoverDecision{Verdict: VerdictReplace, Lost: m.Node.ID, Why: &Info{Code: CodeNodeLost, Message: "replica " + m.Node.ID + " is lost: " + w.Message, Cause: w.Cause}}
			}
			if r := m.Report; r != nil && r.Up && r.InRecovery && r.Upstream == primary.Node.ID && !r.Streaming &&
				!r.NotStreamingSince.IsZero() && now.Sub(r.NotStreamingSince) >= StuckReplicaAfter {
				// Following the primary but never streaming: it cannot
				// (its WAL diverged or the primary lacks what it needs).
				return FailoverDecision{Verdict: VerdictReplace, Lost: m.Node.ID, Why: &Info{Code: CodeNodeLost,
					Message: "replica " + m.Node.ID + " is lost: it has not streamed from the primary since " + r.NotStreamingSince.UTC().Format(time.RFC3339)}}
			}
		}
		return FailoverDecision{Verdict: VerdictNone}
	}
	d := FailoverDecision{Lost: primary.Node.ID}
	if svc.NodeCount <= 1 || live == 1 {
		next := "it returns with its host, or restore it from a backup"
		if volumeLost(primary.Node) {
			next = "its data cannot come back: restore it from a backup into a new service"
		}
		d.Verdict, d.Why = VerdictCannot, &Info{Code: CodeSingleNode,
			Message: "the service's only node is lost (" + why.Message + "); " + next, Cause: why.Cause}
		return d
	}
	var cands []Member
	var missing []string
	for _, m := range members {
		if m.Primary || Going(m.Node.State) {
			continue
		}
		if promotable(m, primary.Node.ID, p, now) {
			cands = append(cands, m)
		} else if m.Node.State == StateRunning || m.Node.State == StateFailed {
			// Listed in synchronous_standby_names (SyncStandbyNames lists
			// running replicas): it may hold a commit the others lack.
			missing = append(missing, m.Node.ID)
		}
	}
	if len(cands) == 0 {
		d.Verdict, d.Why = VerdictCannot, &Info{Code: CodeDoubleFailure,
			Message: "the primary is lost (" + why.Message + ") and no replica that followed it reports; the service waits for a node to return", Cause: why.Cause}
		return d
	}
	slices.SortFunc(cands, func(a, b Member) int {
		if a.Report.ReceivedLSN != b.Report.ReceivedLSN {
			if a.Report.ReceivedLSN > b.Report.ReceivedLSN {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Node.ID, b.Node.ID)
	})
	best := cands[0]
	if !force {
		if svc.NodeCount == 2 && !wasSynchronous(*primary, best.Node) {
			d.Verdict, d.Why = VerdictCannot, &Info{Code: CodeReplicaNotSynchronous,
				Message: "the primary is lost and its replica was not synchronous (replication was asynchronous); promoting it could lose acknowledged commits, so the service waits for the primary or an operator's forced failover"}
			return d
		}
		if len(missing) > 0 {
			d.Verdict, d.Why = VerdictCannot, &Info{Code: CodeDoubleFailure,
				Message: "the primary and replica " + strings.Join(missing, ", ") + " are lost; the surviving replica may lack acknowledged commits, so the service waits for a node to return or an operator's forced failover"}
			return d
		}
		if why := departedAhead(svc, primary.Node.ID, members, best); why != nil {
			d.Verdict, d.Why = VerdictCannot, why
			return d
		}
	}
	d.Verdict, d.Promote, d.Forced = VerdictPromote, best.Node.ID, force
	d.Why = &Info{Code: CodePrimaryLost, Message: "the primary " + primary.Node.ID + " is lost (" + why.Message + "); promoting " + best.Node.ID, Cause: why.Cause}
	return d
}

// memberLost reports whether m is lost at now, or until when to wait
// (its PostgreSQL reported down, within the grace), and why. A node whose
// volume lost its key is lost at once: nothing can bring its data back,
// so there is nothing to wait for.
func memberLost(m Member, p FailoverPolicy, now time.Time) (lost bool, until time.Time, why *Info) {
	if !m.HostHealthy {
		// The host's name is the platform's: operators only (Cause).
		return true, time.Time{}, &Info{Code: CodeNodeLost, Message: "its host stopped sending heartbeats", Cause: "host " + m.Node.Host}
	}
	if volumeLost(m.Node) {
		return true, time.Time{}, &Info{Code: CodeNodeLost, Message: "its encrypted volume lost its key", Cause: m.Node.StateInfo.Cause}
	}
	if r := m.Report; r != nil && !r.Up && !r.DownSince.IsZero() && m.Node.State != StateCreating {
		end := r.DownSince.Add(p.Grace)
		w := &Info{Code: CodeNodeLost, Message: "its PostgreSQL is down since " + r.DownSince.UTC().Format(time.RFC3339)}
		if now.Before(end) {
			return false, end, w
		}
		return true, time.Time{}, w
	}
	return false, time.Time{}, nil
}

// volumeLost reports whether n failed because its volume lost its key
// (CodeVolumeLost): for good, whatever its last replication report says
// (after a host reboot its PostgreSQL never ran again to report).
func volumeLost(n *Node) bool {
	return n.State == StateFailed && n.StateInfo != nil && n.StateInfo.Code == CodeVolumeLost
}

// promotable reports whether replica m may be promoted in place of the
// lost primary: its host is healthy, it reports now, its PostgreSQL is
// up in recovery and it followed primary.
func promotable(m Member, primary string, p FailoverPolicy, now time.Time) bool {
	r := m.Report
	return m.HostHealthy && r != nil && now.Sub(r.At) <= p.ReportTimeout && r.Up && r.InRecovery && r.Upstream == primary
}

// wasSynchronous reports whether the primary's last report listed n as a
// synchronous (or quorum) standby.
func wasSynchronous(primary Member, n *Node) bool {
	if primary.Report == nil {
		return false
	}
	for _, s := range primary.Report.Standbys {
		if s.Name == ApplicationName(n) {
			return s.SyncState == SyncStateSync || s.SyncState == SyncStateQuorum
		}
	}
	return false
}

// CheckFailoverRequest checks an operator's request to fail svc over: a
// 1-node service cannot (409 single_node), nor a service under another
// operation (409). live are the service's live operations; a live
// failover is returned as is (the request is idempotent).
func CheckFailoverRequest(svc *Service, live []*Operation) (*Operation, error) {
	for _, o := range live {
		if o.TargetID == svc.ID && o.Type == OpServiceFailover && o.Live() {
			return o, nil
		}
	}
	if svc.NodeCount <= 1 {
		return nil, Conflictf(CodeSingleNode, "", "add a replica first (moat service update "+svc.Name+" --nodes 2)", "service %s has a single node and nothing to fail over to", svc.ID)
	}
	if Going(svc.State) {
		return nil, Conflictf(CodeInvalidState, "", "", "service %s is %s", svc.ID, svc.State)
	}
	if svc.OperationID != "" {
		return nil, Conflictf(CodeOperationInProgress, "", "wait for operation "+svc.OperationID+" to finish", "service %s has an operation in progress", svc.ID)
	}
	return nil, nil
}

// Failover is a failover operation's progress, stored with the
// operation (Step in Operation.Step): each pass of the reconciler reads
// it, observes the members and calls Advance; every step's action is
// idempotent, so a control plane killed mid-way finishes on restart.
type Failover struct {
	Step string `json:"step"`
	// Lost is the old primary, LostHost its host; Promote the replica
	// chosen; Replacement the new node (set by the replace step).
	Lost        string `json:"lost"`
	LostHost    string `json:"lost_host"`
	LostAZ      string `json:"lost_az"`
	Promote     string `json:"promote"`
	Replacement string `json:"replacement,omitempty"`
	// Forced: promote even if a replica that may hold acknowledged
	// commits is lost meanwhile.
	Forced bool `json:"forced,omitempty"`
}

// StartFailover returns the operation and progress of the failover d
// decides (a promote verdict) on svc, whose lost primary is lost.
func StartFailover(svc *Service, d FailoverDecision, lost *Node, now time.Time) (*Operation, *Failover, error) {
	if d.Verdict != VerdictPromote || d.Lost != lost.ID {
		return nil, nil, Conflictf(CodeInvalidState, "", "", "no failover to start: verdict %s", d.Verdict)
	}
	op := NewOperation(svc.ProjectID, OpServiceFailover, svc.ID, now)
	if err := op.Start(StepFence, now); err != nil {
		return nil, nil, err
	}
	return op, &Failover{Step: StepFence, Lost: lost.ID, LostHost: lost.Host, LostAZ: lost.AZ, Promote: d.Promote, Forced: d.Forced}, nil
}

// Roles of a node in the desired state.
const (
	NodeRolePrimary = "primary"
	NodeRoleReplica = "replica"
	// NodeRoleFenced: the agent keeps the node from acknowledging anything
	// (PostgreSQL stopped, firewall closed) and never restarts it as it
	// was; the node is wiped once deleted.
	NodeRoleFenced = "fenced"
)

// NodeRole is what the desired state tells a node's agent: its role and,
// for a replica, the node it follows.
type NodeRole struct {
	Role     string
	Upstream string
}

// Roles are the roles of the service's nodes during the failover, by
// node ID (members not listed keep theirs): the old primary is fenced
// throughout; the replicas follow it while it is fenced, follow no one
// (stay in recovery, streaming from nobody) during the detach step and,
// but the chosen one, the promote step; from the promote step on the
// chosen one is primary, and from the repoint step on the others (the
// replacement included) follow it.
func (f *Failover) Roles(members []Member) map[string]NodeRole {
	out := map[string]NodeRole{f.Lost: {Role: NodeRoleFenced}}
	for _, m := range members {
		id := m.Node.ID
		switch {
		case id == f.Lost || Going(m.Node.State):
		case f.Step == StepFence:
			out[id] = NodeRole{Role: NodeRoleReplica, Upstream: f.Lost}
		case f.Step == StepDetach, f.Step == StepPromote && id != f.Promote:
			// Detached until the chosen one is promoted: a replica that
			// followed it as a standby would have to notice its new
			// timeline (seconds to tens of seconds), one that connects
			// to it as a primary streams at once.
			out[id] = NodeRole{Role: NodeRoleReplica}
		case id == f.Promote:
			out[id] = NodeRole{Role: NodeRolePrimary}
		default:
			out[id] = NodeRole{Role: NodeRoleReplica, Upstream: f.Promote}
		}
	}
	return out
}

// FailoverAction is what the reconciler does after Advance.
type FailoverAction struct {
	// Wait: nothing to do until the members change or Until (if set);
	// Why says what the failover waits for.
	Wait  bool
	Until time.Time
	Why   *Info
	// MovePrimary: store the service's primary as f.Promote and move
	// its DNS name, in the transaction that stores the progress.
	MovePrimary bool
	// PlaceReplacement: place a node for f.Lost (ReplacementRequest),
	// record it in f.Replacement and begin deleting f.Lost, in one
	// transaction. A placement error leaves the service degraded with
	// the error as reason; the next pass tries again.
	PlaceReplacement bool
	// Discard (with PlaceReplacement, at the catch-up step): the
	// replacement failed or lost its host before catching up; begin
	// deleting it and record the new one in f.Replacement, in the same
	// transaction. Until a placement succeeds the action repeats.
	Discard string
	// Fail: the failover cannot go on (the chosen replica is lost
	// before promotion); the operation fails with Fail and the next
	// DecideFailover starts over.
	Fail *Info
	// Done: the operation succeeds.
	Done bool
}

// Advance moves the failover through the steps its observation allows
// at now (lostHost is the old primary's host, nil if removed) and says
// what the reconciler must do. It changes f.Step only along
// FailoverSteps; callers store f when its step changed.
func (f *Failover) Advance(members []Member, lostHost *Host, p FailoverPolicy, now time.Time) FailoverAction {
	byID := map[string]Member{}
	for _, m := range members {
		byID[m.Node.ID] = m
	}
	for {
		act, next := f.step(byID, lostHost, p, now)
		if next == "" {
			return act
		}
		if FailoverSteps.Move(f.Step, next) != nil {
			return FailoverAction{Fail: &Info{Code: CodeInvalidState, Message: "the failover is in an unknown step", Cause: f.Step}}
		}
		f.Step = next
	}
}

// step evaluates the current step: its action, or the next step when
// the current one is done.
func (f *Failover) step(byID map[string]Member, lostHost *Host, p FailoverPolicy, now time.Time) (FailoverAction, string) {
	cand, ok := byID[f.Promote]
	gone := !ok || !cand.HostHealthy || Going(cand.Node.State)
	if ok && !gone {
		// Its PostgreSQL down past the grace counts as lost too.
		gone, _, _ = memberLost(cand, p, now)
	}
	switch f.Step {
	case StepFence, StepDetach, StepPromote:
		if gone {
			return FailoverAction{Fail: &Info{Code: CodeFailoverAborted, Message: "the replica chosen for promotion was lost before it was promoted; the failover starts over"}}, ""
		}
	default:
		if gone {
			return FailoverAction{Fail: &Info{Code: CodeFailoverAborted, Message: "the promoted node " + f.Promote + " was lost; a new failover decides"}}, ""
		}
	}
	switch f.Step {
	case StepFence:
		if l, ok := byID[f.Lost]; ok && l.HostHealthy && l.Report != nil && l.Report.Fenced {
			return FailoverAction{}, StepDetach
		}
		var last time.Time
		if lostHost != nil {
			last = lostHost.LastHeartbeatAt
		}
		if Fenced(last, p.Lease+p.LeaseMargin, now) {
			return FailoverAction{}, StepDetach
		}
		return FailoverAction{Wait: true, Until: last.Add(p.Lease + p.LeaseMargin),
			Why: &Info{Code: CodePrimaryLost, Message: "waiting for the old primary to be fenced"}}, ""
	case StepDetach:
		var best *Member
		for _, id := range slices.Sorted(maps.Keys(byID)) {
			m := byID[id]
			// A replica still being created was never listed in
			// synchronous_standby_names: it acknowledged nothing.
			if id == f.Lost || Going(m.Node.State) || m.Node.State == StateCreating {
				continue
			}
			if !m.HostHealthy {
				if f.Forced {
					continue
				}
				return FailoverAction{Fail: &Info{Code: CodeDoubleFailure, Message: "replica " + id + " was lost during the failover; it may hold acknowledged commits, so the failover stops"}}, ""
			}
			r := m.Report
			if r == nil || now.Sub(r.At) > p.ReportTimeout || r.Upstream == f.Lost {
				return FailoverAction{Wait: true, Why: &Info{Code: CodePrimaryLost, Message: "waiting for replica " + id + " to stop following the old primary"}}, ""
			}
			if r.Up && r.InRecovery && (best == nil || r.ReceivedLSN > best.Report.ReceivedLSN) {
				best = &m
			}
		}
		if best == nil {
			return FailoverAction{Fail: &Info{Code: CodeFailoverAborted, Message: "no replica could be promoted; the failover starts over"}}, ""
		}
		// Positions are final now: promote the most advanced.
		f.Promote = best.Node.ID
		return FailoverAction{}, StepPromote
	case StepPromote:
		if r := cand.Report; r != nil && r.Up && !r.InRecovery {
			return FailoverAction{}, StepRepoint
		}
		return FailoverAction{Wait: true, Why: &Info{Code: CodePrimaryLost, Message: "waiting for " + f.Promote + " to be promoted"}}, ""
	case StepRepoint:
		if !ok || !cand.Primary {
			return FailoverAction{MovePrimary: true}, ""
		}
		for id, m := range byID {
			if id == f.Lost || id == f.Promote || id == f.Replacement || Going(m.Node.State) || !m.HostHealthy || m.Node.State == StateCreating {
				continue
			}
			// Re-pointed, not necessarily streaming: a replica that fell
			// behind under ANY 1 may never follow the new primary (it
			// lacks WAL the new primary never had); the replacement must
			// not wait behind it.
			if r := m.Report; r == nil || r.Upstream != f.Promote {
				return FailoverAction{Wait: true, Why: &Info{Code: CodeNodeLost, Message: "waiting for replica " + id + " to stream from the new primary"}}, ""
			}
		}
		return FailoverAction{}, StepReplace
	case StepReplace:
		if f.Replacement == "" {
			return FailoverAction{PlaceReplacement: true}, ""
		}
		return FailoverAction{}, StepCatchUp
	case StepCatchUp:
		r, ok := byID[f.Replacement]
		if !ok || !r.HostHealthy || Going(r.Node.State) || r.Node.State == StateFailed {
			// The replacement failed or its host went: place another.
			return FailoverAction{PlaceReplacement: true, Discard: f.Replacement}, ""
		}
		if cand.Primary && streamsFrom(r, f.Promote) && CaughtUp(r, cand, CatchUpLag) {
			return FailoverAction{Done: true}, ""
		}
		return FailoverAction{Wait: true, Why: &Info{Code: CodeNodeLost, Message: "the replacement node " + f.Replacement + " is catching up"}}, ""
	}
	return FailoverAction{Fail: &Info{Code: CodeInvalidState, Message: "the failover is in an unknown step", Cause: f.Step}}, ""
}

// ReplacementRequest is the placement of the node replacing lost among
// the service's members: away from the hosts and AZs of the nodes that
// stay, in lost's AZ when a healthy host there has room.
func ReplacementRequest(r Region, lost *Node, members []Member) PlacementRequest {
	req := PlacementRequest{Region: r, Count: 1, Leaving: []*Node{lost}, PreferAZ: lost.AZ}
	for _, m := range members {
		if m.Node.ID != lost.ID && !Going(m.Node.State) {
			req.Keep = append(req.Keep, m.Node)
		}
	}
	return req
}

// Health of a service (ServiceHealth.Status).
const (
	HealthHealthy  = "healthy"
	HealthDegraded = "degraded"
	HealthFailed   = "failed"
)

// ServiceHealth is a service's health derived from its members: failed
// when it cannot take writes and will not fail over by itself, degraded
// while a node is lost or being replaced or replication is weaker than
// its node count promises, with the reasons.
type ServiceHealth struct {
	Status     string `json:"status"`
	Conditions []Info `json:"conditions,omitempty"`
}

// Health derives the service's health from the failover decision d of
// this pass, its replication setting, its live failover (nil if none) and
// its members. The service stays degraded until the failover's
// replacement streams, and until a lost or moved replica's replacement
// streams (Replacements; during a failover, the failover's own
// conditions say it).
func Health(d FailoverDecision, sync SyncSetting, live *Failover, members []Member) ServiceHealth {
	h := ServiceHealth{Status: HealthHealthy}
	add := func(status string, why *Info) {
		if why == nil {
			return
		}
		if h.Status != HealthFailed {
			h.Status = status
		}
		h.Conditions = append(h.Conditions, *why)
	}
	var repl []replacement
	if live == nil {
		repl = replacing(members)
	}
	switch d.Verdict {
	case VerdictCannot:
		add(HealthFailed, d.Why)
	case VerdictReplace:
		// Said by the replacement's condition once it is placed.
		if !slices.ContainsFunc(repl, func(r replacement) bool { return r.left == d.Lost }) {
			add(HealthDegraded, d.Why)
		}
	case VerdictWait, VerdictPromote:
		add(HealthDegraded, d.Why)
	}
	if live != nil {
		add(HealthDegraded, &Info{Code: CodePrimaryLost, Message: "failing over from " + live.Lost + " to " + live.Promote + ": step " + live.Step})
	}
	for _, r := range repl {
		add(HealthDegraded, &r.why)
	}
	add(HealthDegraded, sync.Condition)
	return h
}

// Members are svc's nodes (those not gone) as replication and failover
// see them: its primary role, whether each node's host is healthy
// (hostHealthy, by host name) and the node's last replication report.
func Members(svc *Service, nodes []*Node, hostHealthy func(host string) bool) []Member {
	var out []Member
	for _, n := range nodes {
		if n.ServiceID != svc.ID || Gone(n.State) {
			continue
		}
		out = append(out, Member{Node: n, Primary: svc.IsPrimary(n), HostHealthy: hostHealthy(n.Host), Report: n.Replication})
	}
	return out
}

// LiveFailover returns the live failover operation of svc among ops, and
// its progress (nil, nil if none).
func LiveFailover(svc *Service, ops []*Operation) (*Operation, *Failover) {
	for _, o := range ops {
		if o.TargetID == svc.ID && o.Type == OpServiceFailover && o.Live() && o.Failover != nil {
			return o, o.Failover
		}
	}
	return nil, nil
}

// ReplaceNode returns the node replacing lost in svc, in AZ az (the lost
// node's when a host there has room: ReplacementRequest), with a new ID
// and, once placed, new certificates; lost begins deleting (its agent
// wipes it if its host comes back: it never rejoins). A replica is
// replaced with ReplaceReplica.
func ReplaceNode(svc *Service, lost *Node, az string, now time.Time) (*Node, error) {
	if _, err := lost.BeginDelete(now); err != nil {
		return nil, err
	}
	return NewNode(svc, lost.Index, az, now), nil
}

// Departure is what bounds the commits a replica may have acknowledged
// once it left its service (design 0014, "Departed replicas"). A deleting
// replica is no longer in synchronous_standby_names, but until the
// primary applied that it could still acknowledge commits, which the
// other replicas may lack; the primary then tells when it stopped
// counting it and how far its own WAL was flushed.
type Departure struct {
	// LeftAt is when it began deleting (it left the standby list).
	LeftAt time.Time `json:"left_at"`
	// ReleasedAt is when the control plane received the first report
	// of the primary, after LeftAt, that no longer counts it as an
	// acknowledging standby (absent from its pg_stat_replication, or
	// async): from then on it acknowledges nothing.
	ReleasedAt time.Time `json:"released_at,omitzero"`
	// AckBound is the primary's flushed position in its first report
	// received after ReleasedAt (normally read after the release was
	// seen, so past every commit it acknowledged); 0 while not known.
	AckBound LSN `json:"ack_bound,omitempty"`
}

// ReplaceReplica is ReplaceNode for a replica (lost, stuck, or moved off
// a draining host): unless it was still being created — never a
// synchronous standby, it acknowledged nothing — it records its
// Departure, and until the primary's reports bound what it acknowledged
// (RecordAckBounds) no replica is promoted without holding that
// (DecideFailover).
func ReplaceReplica(svc *Service, lost *Node, az string, now time.Time) (*Node, error) {
	listed := lost.State != StateCreating && !Going(lost.State)
	repl, err := ReplaceNode(svc, lost, az, now)
	if err != nil {
		return nil, err
	}
	if listed && lost.Departure == nil {
		lost.Departure = &Departure{LeftAt: now}
	}
	return repl, nil
}

// RecordAckBounds reads the primary's last report among members for what
// it tells of the departed replicas (Departure) whose bound is not known
// yet, and returns the nodes it changed (the caller stores them). Only a
// report of a primary that is up counts (a server down lists what it
// listed last, and its position may be behind what it flushed before it
// stopped), and only one received after the replica left. The first such
// report that no longer counts it (absent or async) marks it released;
// the primary's flushed position in the next report received after that
// one is its bound. Not the release report's own position: the agent
// reads the position before pg_stat_replication, so a commit acknowledged
// between the two reads could lie past it. (An agent may send a node's
// last reading again with another node's report; the bound is then the
// release report's position, which a commit misses only in that gap of
// a fraction of a millisecond.)
func RecordAckBounds(members []Member) []*Node {
	var prim *ReplicationReport
	for _, m := range members {
		if m.Primary && !Going(m.Node.State) {
			prim = m.Report
		}
	}
	if prim == nil || !prim.Up || prim.InRecovery || prim.ReceivedLSN == 0 {
		return nil
	}
	var out []*Node
	for _, m := range members {
		d := m.Node.Departure
		if m.Primary || !Going(m.Node.State) || d == nil || d.AckBound != 0 || !prim.At.After(d.LeftAt) || acknowledging(prim, m.Node) {
			continue
		}
		switch {
		case d.ReleasedAt.IsZero():
			d.ReleasedAt = prim.At
		case prim.At.After(d.ReleasedAt):
			d.AckBound = prim.ReceivedLSN
		default:
			continue
		}
		out = append(out, m.Node)
	}
	return out
}

// DepartureSettled reports whether n, a deleting node, may be marked
// deleted (and so no longer be seen by DecideFailover) without losing
// what bounds a failover: it left no Departure, or its bound is known
// and every other live node of its service (among nodes) reported
// receiving up to it — a node promoted later holds what it may have
// acknowledged. (A replica added later is cloned past it.)
func DepartureSettled(n *Node, nodes []*Node) bool {
	d := n.Departure
	if d == nil {
		return true
	}
	if d.AckBound == 0 {
		return false
	}
	for _, o := range nodes {
		if o.ID == n.ID || o.ServiceID != n.ServiceID || Going(o.State) {
			continue
		}
		if o.Replication == nil || o.Replication.ReceivedLSN < d.AckBound {
			return false
		}
	}
	return true
}

// acknowledging reports whether a primary's report counts n as a standby
// that acknowledges commits or may at any moment (sync, quorum or
// potential).
func acknowledging(primary *ReplicationReport, n *Node) bool {
	for _, s := range primary.Standbys {
		if s.Name == ApplicationName(n) {
			return s.SyncState != SyncStateAsync
		}
	}
	return false
}

// departedAhead explains why best may not be promoted in place of the lost
// primary: a replica that left the service may have acknowledged commits
// best has not received — its bound is not known, or best's received
// position is below it (nil if none). A 2-node service refuses as for an
// asynchronous replica, a larger one as for a double failure.
func departedAhead(svc *Service, primary string, members []Member, best Member) *Info {
	code := CodeDoubleFailure
	if svc.NodeCount == 2 {
		code = CodeReplicaNotSynchronous
	}
	const next = "the service waits for a node to return or an operator's forced failover"
	for _, m := range members {
		d := m.Node.Departure
		if m.Primary || !Going(m.Node.State) || d == nil {
			continue
		}
		if d.AckBound == 0 {
			return &Info{Code: code, Message: "the primary " + primary + " is lost and replica " + m.Node.ID +
				", which left the service, may have acknowledged commits no remaining replica holds (the primary has not reported how far): " + next}
		}
		if got := best.Report.ReceivedLSN; got < d.AckBound {
			return &Info{Code: code, Message: "the primary " + primary + " is lost and replica " + m.Node.ID + ", which left the service, may have acknowledged commits up to " +
				d.AckBound.String() + "; " + best.Node.ID + " has received only up to " + got.String() + " and promoting it could lose them: " + next}
		}
	}
	return nil
}

// RolesOf returns each live node's role in svc's desired state: the
// live failover's (f, nil if none) while one runs, else primary for the
// node holding the primary role and replica of it for the others.
func RolesOf(svc *Service, members []Member, f *Failover) map[string]NodeRole {
	if f != nil {
		return f.Roles(members)
	}
	out := map[string]NodeRole{}
	var primary string
	for _, m := range members {
		if m.Primary && !Going(m.Node.State) {
			primary = m.Node.ID
		}
	}
	for _, m := range members {
		switch {
		case Going(m.Node.State):
		case m.Node.ID == primary:
			out[m.Node.ID] = NodeRole{Role: NodeRolePrimary}
		default:
			out[m.Node.ID] = NodeRole{Role: NodeRoleReplica, Upstream: primary}
		}
	}
	return out
}

// RequestFailover starts the failover an operator asks for on svc (live
// are its live operations): refused for a 1-node service or one under
// another operation (CheckFailoverRequest); a live failover is returned
// as is (started false). The primary is treated as lost, and the same
// checks as for a real loss choose the replica (DecideFailover), so a
// request never promotes a replica that may lack acknowledged commits:
// it is refused (409) with that reason instead.
func RequestFailover(svc *Service, members []Member, live []*Operation, p FailoverPolicy, now time.Time) (op *Operation, started bool, err error) {
	if op, err = CheckFailoverRequest(svc, live); op != nil || err != nil {
		return op, false, err
	}
	asLost := slices.Clone(members)
	var primary *Node
	for i, m := range asLost {
		if m.Primary && !Going(m.Node.State) {
			asLost[i].HostHealthy, primary = false, m.Node
		}
	}
	if primary == nil {
		return nil, false, Conflictf(CodeInvalidState, "", "wait until the service has a primary", "service %s has no primary", svc.ID)
	}
	d := DecideFailover(svc, asLost, p, false, now)
	if d.Verdict != VerdictPromote {
		why := "no replica can be promoted"
		if d.Why != nil {
			why = d.Why.Message
		}
		return nil, false, Conflictf(CodeInvalidState, "", "wait until the replicas stream (moat service get "+svc.Name+")", "service %s cannot fail over now: %s", svc.ID, why)
	}
	d.Why = &Info{Code: CodePrimaryLost, Message: "failover requested: promoting " + d.Promote + " in place of " + primary.ID}
	op, f, err := StartFailover(svc, d, primary, now)
	if err != nil {
		return nil, false, err
	}
	op.Failover = f
	return op, true, svc.BeginFailover(op.ID, *d.Why, now)
}

// DrainNext returns the next node of svc to move off a draining host
// (draining, by host name), one node at a time and only while nothing else
// happens to the service: it runs with no operation, has all its nodes,
// each running on a healthy host, and every replica streams — so a move
// never stacks on a loss. Replicas move first; primary says the node is
// the primary, which moves by a roll-forward (PlanReplace: a new node
// catches up, a switchover, the old node wiped), as does a 1-node
// service's only node; a replica moves by ReplaceNode (quorum commit goes
// on with the other replica).
func DrainNext(svc *Service, members []Member, draining func(host string) bool) (node *Node, primary bool) {
	if svc.State != StateRunning || svc.OperationID != "" || len(members) != svc.NodeCount {
		return nil, false
	}
	var prim *Node
	for _, m := range members {
		r := m.Report
		if !m.HostHealthy || m.Node.State != StateRunning || r == nil || !r.Up || (!m.Primary && !r.Streaming) {
			return nil, false
		}
		switch {
		case !draining(m.Node.Host):
		case m.Primary:
			prim = m.Node
		case node == nil:
			node = m.Node
		}
	}
	if node != nil {
		return node, false
	}
	return prim, prim != nil
}
