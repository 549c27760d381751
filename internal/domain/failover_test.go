package domain

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// policy: the timings these tests' clocks were written for (the defaults
// before heartbeats every second), a coherent set (Check).
var policy = FailoverPolicy{HeartbeatInterval: 3 * time.Second, HostTimeout: 15 * time.Second, Grace: 10 * time.Second,
	ReportTimeout: 15 * time.Second, Lease: 10 * time.Second, LeaseMargin: 2 * time.Second}

func svcN(n int) *Service {
	return &Service{Meta: Meta{ID: "svc-1", Name: "db", ProjectID: "proj-1", State: StateRunning}, NodeCount: n}
}

func TestDecideFailover(t *testing.T) {
	now := t1
	quorum := func(names ...string) *ReplicationReport {
		var sb []StandbyStatus
		for _, n := range names {
			sb = append(sb, StandbyStatus{Name: n, SyncState: SyncStateQuorum})
		}
		return primaryReport(500, sb...)
	}
	pgDown := func(since time.Time) *ReplicationReport {
		return &ReplicationReport{At: now, DownSince: since, Standbys: []StandbyStatus{{Name: "node-a", SyncState: SyncStateSync}}}
	}
	lostP := member("node-p", true, false, quorum("node-a", "node-b"))
	a := member("node-a", false, true, replicaReport("node-p", false, 300))
	b := member("node-b", false, true, replicaReport("node-p", false, 400))
	bLost := member("node-b", false, false, replicaReport("node-p", true, 400))
	stale := member("node-b", false, true, replicaReport("node-p", false, 400))
	stale.Report.At = now.Add(-time.Minute)
	creating := member("node-c", false, true, nil)
	creating.Node.State = StateCreating
	tie := member("node-b", false, true, replicaReport("node-p", false, 300))
	other := member("node-b", false, true, replicaReport("node-x", false, 900))
	// A volume lost its key: failed at once, even while its PostgreSQL
	// still answers (from memory, until its next write fails).
	withVolumeLost := func(m Member) Member {
		n := *m.Node
		n.State, n.StateInfo = StateFailed, &Info{Code: CodeVolumeLost, Message: volumeLostMessage, Cause: "volume key lost"}
		m.Node = &n
		return m
	}
	lostVolP := withVolumeLost(member("node-p", true, true, quorum("node-a", "node-b")))
	// node-b left the service (replaced: deleting), with what bounds the
	// commits it may have acknowledged (0: not known yet); the primary's
	// last report no longer lists it.
	departed := func(bound LSN) Member {
		m := member("node-b", false, false, replicaReport("node-p", true, 500))
		m.Node.State, m.Node.Departure = StateDeleting, &Departure{LeftAt: t0, AckBound: bound}
		if bound != 0 {
			m.Node.Departure.ReleasedAt = t0.Add(time.Second)
		}
		return m
	}
	neverListed := member("node-b", false, false, nil)
	neverListed.Node.State = StateDeleting
	lostPWithout := member("node-p", true, false, quorum("node-a"))
	aPast := member("node-a", false, true, replicaReport("node-p", false, 600))
	replacement := member("node-r", false, true, replicaReport("node-p", true, 300))
	lostP2 := member("node-p", true, false, primaryReport(500, StandbyStatus{Name: "node-r", SyncState: SyncStateSync}))
	stuck := func(since time.Time) Member {
		m := member("node-b", false, true, replicaReport("node-p", false, 400))
		m.Report.Streaming, m.Report.NotStreamingSince = false, since
		return m
	}
	for _, tc := range []struct {
		name    string
		n       int
		members []Member
		force   bool
		want    FailoverDecision
	}{
		{"healthy", 3, []Member{member("node-p", true, true, quorum()), a, b}, false, FailoverDecision{Verdict: VerdictNone}},
		{"three nodes: most WAL received wins", 3, []Member{lostP, a, b}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-b",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-b", Cause: "host host-of-node-p"}}},
		{"ties by node ID", 3, []Member{lostP, tie, a}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"a replica still being created does not count", 3, []Member{lostP, a, creating}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"PostgreSQL down within the grace: wait", 2, []Member{member("node-p", true, true, pgDown(now.Add(-3*time.Second))), a}, false,
			FailoverDecision{Verdict: VerdictWait, Lost: "node-p", Until: now.Add(7 * time.Second),
				Why: &Info{Code: CodeNodeLost, Message: "its PostgreSQL is down since 2026-12-03T10:00:57Z"}}},
		{"PostgreSQL down past the grace: the synchronous replica is promoted", 2, []Member{member("node-p", true, true, pgDown(now.Add(-10*time.Second))), a}, false,
			FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
				Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its PostgreSQL is down since 2026-12-03T10:00:50Z); promoting node-a"}}},
		{"one node", 1, []Member{lostP}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeSingleNode, Message: "the service's only node is lost (its host stopped sending heartbeats); it returns with its host, or restore it from a backup", Cause: "host host-of-node-p"}}},
		{"double failure: primary and a replica", 3, []Member{lostP, a, bLost}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary and replica node-b are lost; the surviving replica may lack acknowledged commits, so the service waits for a node to return or an operator's forced failover"}}},
		{"double failure, forced", 3, []Member{lostP, a, bLost}, true, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a", Forced: true,
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"a stale report counts as lost", 3, []Member{lostP, a, stale}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary and replica node-b are lost; the surviving replica may lack acknowledged commits, so the service waits for a node to return or an operator's forced failover"}}},
		{"a replica of another node is not promoted", 3, []Member{lostP, a, other}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary and replica node-b are lost; the surviving replica may lack acknowledged commits, so the service waits for a node to return or an operator's forced failover"}}},
		{"no replica reports", 2, []Member{lostP, bLost}, true, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary is lost (its host stopped sending heartbeats) and no replica that followed it reports; the service waits for a node to return", Cause: "host host-of-node-p"}}},
		{"two nodes, asynchronous replica", 2, []Member{member("node-p", true, false, primaryReport(500, StandbyStatus{Name: "node-a", SyncState: SyncStateAsync})), a}, false,
			FailoverDecision{Verdict: VerdictCannot, Lost: "node-p", Why: &Info{Code: CodeReplicaNotSynchronous,
				Message: "the primary is lost and its replica was not synchronous (replication was asynchronous); promoting it could lose acknowledged commits, so the service waits for the primary or an operator's forced failover"}}},
		{"two nodes, asynchronous replica, forced", 2, []Member{member("node-p", true, false, nil), a}, true,
			FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a", Forced: true,
				Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"lost replica: replace", 3, []Member{member("node-p", true, true, quorum()), a, bLost}, false,
			FailoverDecision{Verdict: VerdictReplace, Lost: "node-b", Why: &Info{Code: CodeNodeLost, Message: "replica node-b is lost: its host stopped sending heartbeats", Cause: "host host-of-node-b"}}},
		{"a replica that follows the primary but has not streamed for a minute: replace", 3, []Member{member("node-p", true, true, quorum()), a, stuck(now.Add(-StuckReplicaAfter))}, false,
			FailoverDecision{Verdict: VerdictReplace, Lost: "node-b", Why: &Info{Code: CodeNodeLost, Message: "replica node-b is lost: it has not streamed from the primary since 2026-12-03T10:00:00Z"}}},
		{"not streaming for less than a minute: wait for it", 3, []Member{member("node-p", true, true, quorum()), a, stuck(now.Add(-StuckReplicaAfter + time.Second))}, false,
			FailoverDecision{Verdict: VerdictNone}},
		{"two primaries: refuse", 3, []Member{lostP, member("node-a", true, true, nil)}, false,
			FailoverDecision{Verdict: VerdictCannot, Why: &Info{Code: CodeInvalidState, Message: "two nodes are marked primary; the control plane refuses to fail over", Cause: "node-p, node-a"}}},
		{"the primary's volume lost its key: no grace", 3, []Member{lostVolP, a, b}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-b",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its encrypted volume lost its key); promoting node-b", Cause: "volume key lost"}}},
		{"a replica's volume lost its key: replace", 3, []Member{member("node-p", true, true, quorum()), a, withVolumeLost(b)}, false,
			FailoverDecision{Verdict: VerdictReplace, Lost: "node-b", Why: &Info{Code: CodeNodeLost, Message: "replica node-b is lost: its encrypted volume lost its key", Cause: "volume key lost"}}},
		// After a host reboot the agent finds the volume with no server and
		// reports it lost; its PostgreSQL never ran since, so the last
		// replication report is from before (up, and stale).
		{"one node, its volume lost", 1, []Member{withVolumeLost(member("node-p", true, true, primaryReport(500)))}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeSingleNode, Message: "the service's only node is lost (its encrypted volume lost its key); its data cannot come back: restore it from a backup into a new service", Cause: "volume key lost"}}},
		{"a host rebooted: the replica's volume lost, its last report from before", 3, []Member{member("node-p", true, true, quorum()), a, withVolumeLost(stale)}, false,
			FailoverDecision{Verdict: VerdictReplace, Lost: "node-b", Why: &Info{Code: CodeNodeLost, Message: "replica node-b is lost: its encrypted volume lost its key", Cause: "volume key lost"}}},
		{"no primary yet", 3, []Member{a, b}, false, FailoverDecision{Verdict: VerdictNone}},
		// A replica lost and replaced, then the primary (the audit's gap 1).
		{"departed replica's bound above the survivor: refuse", 3, []Member{lostPWithout, a, departed(500)}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary node-p is lost and replica node-b, which left the service, may have acknowledged commits up to 0/1F4; node-a has received only up to 0/12C and promoting it could lose them: the service waits for a node to return or an operator's forced failover"}}},
		{"departed replica's bound not known: refuse", 3, []Member{lostPWithout, a, departed(0)}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeDoubleFailure, Message: "the primary node-p is lost and replica node-b, which left the service, may have acknowledged commits no remaining replica holds (the primary has not reported how far): the service waits for a node to return or an operator's forced failover"}}},
		{"departed replica's bound reached: promote", 3, []Member{lostPWithout, aPast, departed(500)}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"departed replica's bound reached exactly: promote", 3, []Member{lostPWithout, aPast, departed(600)}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"departed replica's bound, forced", 3, []Member{lostPWithout, a, departed(500)}, true, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a", Forced: true,
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"a departed replica never listed (replaced while being created) is ignored", 3, []Member{lostPWithout, a, neverListed}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-a",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-a", Cause: "host host-of-node-p"}}},
		{"two nodes: the synchronous replacement below the departed replica's bound", 2, []Member{lostP2, replacement, departed(500)}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeReplicaNotSynchronous, Message: "the primary node-p is lost and replica node-b, which left the service, may have acknowledged commits up to 0/1F4; node-r has received only up to 0/12C and promoting it could lose them: the service waits for a node to return or an operator's forced failover"}}},
		{"two nodes: the departed replica's bound not known", 2, []Member{lostP2, replacement, departed(0)}, false, FailoverDecision{Verdict: VerdictCannot, Lost: "node-p",
			Why: &Info{Code: CodeReplicaNotSynchronous, Message: "the primary node-p is lost and replica node-b, which left the service, may have acknowledged commits no remaining replica holds (the primary has not reported how far): the service waits for a node to return or an operator's forced failover"}}},
		{"two nodes: the departed replica's bound reached", 2, []Member{lostP2, replacement, departed(300)}, false, FailoverDecision{Verdict: VerdictPromote, Lost: "node-p", Promote: "node-r",
			Why: &Info{Code: CodePrimaryLost, Message: "the primary node-p is lost (its host stopped sending heartbeats); promoting node-r", Cause: "host host-of-node-p"}}},
		{"a departed replica does not matter while the primary is healthy", 3, []Member{member("node-p", true, true, quorum("node-a")), a, departed(0)}, false, FailoverDecision{Verdict: VerdictNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideFailover(svcN(tc.n), tc.members, policy, tc.force, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecideFailover (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRecordAckBounds: a replaced replica's departure is recorded unless
// it was being created; its bound is the primary's flushed position in
// the first report received after the one that stopped counting it, and
// only an up primary's report received after it left counts.
func TestRecordAckBounds(t *testing.T) {
	svc := svcN(3)
	creating := member("node-c", false, true, nil)
	creating.Node.State = StateCreating
	if _, err := ReplaceReplica(svc, creating.Node, "az", t0); err != nil || creating.Node.Departure != nil || creating.Node.State != StateDeleting {
		t.Fatalf("ReplaceReplica of a node being created: %v, departure %+v, state %s; want none, deleting", err, creating.Node.Departure, creating.Node.State)
	}
	p := member("node-p", true, true, nil)
	a := member("node-a", false, true, replicaReport("node-p", true, 300))
	b := member("node-b", false, false, replicaReport("node-p", true, 500))
	left := t0.Add(10 * time.Second)
	repl, err := ReplaceReplica(svc, b.Node, "az-of-node-b", left)
	if err != nil || repl.Index != b.Node.Index || b.Node.State != StateDeleting {
		t.Fatalf("ReplaceReplica = %+v, %v; node-b %s", repl, err, b.Node.State)
	}
	if diff := cmp.Diff(&Departure{LeftAt: left}, b.Node.Departure); diff != "" {
		t.Fatalf("departure (-want +got):\n%s", diff)
	}
	at := func(d time.Duration, flush LSN, standbys ...StandbyStatus) *ReplicationReport {
		r := primaryReport(flush, standbys...)
		r.At = left.Add(d)
		return r
	}
	quorumB := StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum}
	down := at(4*time.Second, 900)
	down.Up = false
	demoted := at(4*time.Second, 900)
	demoted.InRecovery = true
	for _, step := range []struct {
		what   string
		report *ReplicationReport
		want   Departure
	}{
		{"a report from before it left", at(-time.Second, 600), Departure{LeftAt: left}},
		{"still counted (the primary has not reloaded)", at(time.Second, 610, quorumB), Departure{LeftAt: left}},
		{"still counted as potential", at(time.Second, 610, StandbyStatus{Name: "node-b", SyncState: SyncStatePotential}), Departure{LeftAt: left}},
		{"async: released", at(2*time.Second, 620, StandbyStatus{Name: "node-b", SyncState: SyncStateAsync}), Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second)}},
		{"the same report again", at(2*time.Second, 620), Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second)}},
		{"a primary down lists what it listed last", down, Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second)}},
		{"a primary in recovery", demoted, Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second)}},
		{"the next report bounds it", at(3*time.Second, 640), Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second), AckBound: 640}},
		{"and the bound stays", at(9*time.Second, 900), Departure{LeftAt: left, ReleasedAt: left.Add(2 * time.Second), AckBound: 640}},
	} {
		p.Report = step.report
		before := *b.Node.Departure
		changed := RecordAckBounds([]Member{p, a, b, creating})
		if diff := cmp.Diff(step.want, *b.Node.Departure); diff != "" {
			t.Fatalf("%s: departure (-want +got):\n%s", step.what, diff)
		}
		if wantChanged := before != step.want; wantChanged != (len(changed) == 1 && changed[0] == b.Node) || (!wantChanged && len(changed) != 0) {
			t.Fatalf("%s: RecordAckBounds returned %d nodes, want the change reported", step.what, len(changed))
		}
	}
	// The primary absent from the members (or going): nothing to read.
	c := member("node-x", false, false, nil)
	if _, err := ReplaceReplica(svc, c.Node, "az", left); err != nil {
		t.Fatal(err)
	}
	if got := RecordAckBounds([]Member{a, c}); len(got) != 0 || c.Node.Departure.ReleasedAt != (time.Time{}) {
		t.Errorf("without a primary: RecordAckBounds = %v", got)
	}
}

// TestDepartureSettled: a departed replica may go once its bound is known
// and every other live node of its service received up to it.
func TestDepartureSettled(t *testing.T) {
	node := func(id, state string, received LSN, reported bool) *Node {
		n := &Node{Meta: Meta{ID: id, State: state}, ServiceID: "svc-1"}
		if reported {
			n.Replication = &ReplicationReport{At: t1, Up: true, InRecovery: true, ReceivedLSN: received}
		}
		return n
	}
	departed := func(bound LSN) *Node {
		n := node("node-b", StateDeleting, 0, false)
		n.Departure = &Departure{LeftAt: t0, AckBound: bound}
		return n
	}
	other := node("node-x", StateRunning, 100, true)
	other.ServiceID = "svc-2"
	for _, tc := range []struct {
		name   string
		n      *Node
		others []*Node
		want   bool
	}{
		{"no departure", node("node-b", StateDeleting, 0, false), []*Node{node("node-a", StateRunning, 1, true)}, true},
		{"bound not known", departed(0), []*Node{node("node-a", StateRunning, 900, true)}, false},
		{"a live node below the bound", departed(500), []*Node{node("node-p", StateRunning, 600, true), node("node-a", StateRunning, 499, true)}, false},
		{"a live node not reported yet", departed(500), []*Node{node("node-p", StateRunning, 600, true), node("node-r", StateCreating, 0, false)}, false},
		{"every live node past it", departed(500), []*Node{node("node-p", StateRunning, 600, true), node("node-a", StateFailed, 500, true)}, true},
		{"going nodes and other services do not count", departed(500), []*Node{node("node-p", StateRunning, 600, true), node("node-c", StateDeleting, 1, true), other}, true},
	} {
		if got := DepartureSettled(tc.n, append([]*Node{tc.n}, tc.others...)); got != tc.want {
			t.Errorf("%s: DepartureSettled = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCheckFailoverRequest(t *testing.T) {
	live := NewOperation("proj-1", OpServiceFailover, "svc-1", t0)
	busy := svcN(3)
	busy.OperationID = "op-attach"
	for _, tc := range []struct {
		name   string
		svc    *Service
		live   []*Operation
		wantOp *Operation
		want   *errSummary
	}{
		{"ok", svcN(2), nil, nil, nil},
		{"one node", svcN(1), nil, nil, &errSummary{CodeSingleNode, "", "add a replica first (moat service update db --nodes 2)"}},
		{"during another operation", busy, nil, nil, &errSummary{CodeOperationInProgress, "", "wait for operation op-attach to finish"}},
		{"a live failover is returned", svcN(3), []*Operation{live}, live, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, err := CheckFailoverRequest(tc.svc, tc.live)
			if diff := cmp.Diff(tc.want, summarize(err)); diff != "" || op != tc.wantOp {
				t.Errorf("CheckFailoverRequest = %v, %v; want %v (-want +got error):\n%s", op, err, tc.wantOp, diff)
			}
		})
	}
}

// world is a 3-node service whose primary node-p lost its host at t0;
// node-b received the most WAL. Each test moves it as agents would.
type world struct {
	p, a, b, r Member
	lostHost   *Host
}

func newWorld() *world {
	w := &world{
		p:        member("node-p", true, false, primaryReport(500, StandbyStatus{Name: "node-a", SyncState: SyncStateQuorum}, StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum})),
		a:        member("node-a", false, true, replicaReport("node-p", false, 400)),
		b:        member("node-b", false, true, replicaReport("node-p", false, 500)),
		lostHost: host("host-of-node-p", "us-east-1a", 4),
	}
	w.lostHost.LastHeartbeatAt = t0
	return w
}

func (w *world) members() []Member {
	out := []Member{w.p, w.a, w.b}
	if w.r.Node != nil {
		out = append(out, w.r)
	}
	return out
}

func TestFailoverSteps(t *testing.T) {
	w := newWorld()
	now := t0.Add(hbTimeout + time.Second)
	d := DecideFailover(svcN(3), w.members(), policy, false, now)
	op, f, err := StartFailover(svcN(3), d, w.p.Node, now)
	if err != nil {
		t.Fatal(err)
	}
	if op.Type != OpServiceFailover || op.State != StateRunning || op.Step != StepFence || f.Promote != "node-b" || f.LostAZ != "az-of-node-p" {
		t.Fatalf("StartFailover = %+v, %+v", op, f)
	}
	advance := func(what string, at time.Time, want FailoverAction, wantStep string) {
		t.Helper()
		got := f.Advance(w.members(), w.lostHost, policy, at)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: Advance (-want +got):\n%s", what, diff)
		}
		if f.Step != wantStep {
			t.Fatalf("%s: step %s, want %s", what, f.Step, wantStep)
		}
		// Resumable: a control plane restarted here reads the stored
		// progress and, seeing the same world, does the same (idempotent).
		again := *f
		if diff := cmp.Diff(want, again.Advance(w.members(), w.lostHost, policy, at)); diff != "" || again.Step != f.Step {
			t.Fatalf("%s: Advance after a restart moved to %s (-want +got):\n%s", what, again.Step, diff)
		}
		primaries := 0
		for id, r := range f.Roles(w.members()) {
			if r.Role == NodeRolePrimary {
				primaries++
			}
			if id == "node-p" && r.Role != NodeRoleFenced {
				t.Fatalf("%s: the old primary's role is %+v", what, r)
			}
		}
		if primaries > 1 {
			t.Fatalf("%s: two primaries in %v", what, f.Roles(w.members()))
		}
	}

	// Fence: the lost host's agent may still be alive; wait for its lease.
	advance("fence within the lease", t0.Add(5*time.Second), FailoverAction{Wait: true, Until: t0.Add(12 * time.Second),
		Why: &Info{Code: CodePrimaryLost, Message: "waiting for the old primary to be fenced"}}, StepFence)
	if diff := cmp.Diff(map[string]NodeRole{"node-p": {Role: NodeRoleFenced}, "node-a": {Role: NodeRoleReplica, Upstream: "node-p"}, "node-b": {Role: NodeRoleReplica, Upstream: "node-p"}}, f.Roles(w.members())); diff != "" {
		t.Errorf("roles while fencing (-want +got):\n%s", diff)
	}
	// Past the lease, detach: every replica stops following node-p.
	advance("detach", now, FailoverAction{Wait: true, Why: &Info{Code: CodePrimaryLost, Message: "waiting for replica node-a to stop following the old primary"}}, StepDetach)
	if diff := cmp.Diff(map[string]NodeRole{"node-p": {Role: NodeRoleFenced}, "node-a": {Role: NodeRoleReplica}, "node-b": {Role: NodeRoleReplica}}, f.Roles(w.members())); diff != "" {
		t.Errorf("roles while detaching (-want +got):\n%s", diff)
	}
	w.a.Report = replicaReport("", false, 400)
	advance("detach waits for every replica", now, FailoverAction{Wait: true, Why: &Info{Code: CodePrimaryLost, Message: "waiting for replica node-b to stop following the old primary"}}, StepDetach)
	w.b.Report = replicaReport("", false, 500)
	advance("promote", now, FailoverAction{Wait: true, Why: &Info{Code: CodePrimaryLost, Message: "waiting for node-b to be promoted"}}, StepPromote)
	if r := f.Roles(w.members())["node-b"]; r.Role != NodeRolePrimary {
		t.Errorf("node-b's role while promoting = %+v", r)
	}
	w.b.Report = primaryReport(510)
	advance("repoint moves the primary", now, FailoverAction{MovePrimary: true}, StepRepoint)
	w.b.Primary, w.p.Primary = true, false
	advance("repoint waits for node-a", now, FailoverAction{Wait: true, Why: &Info{Code: CodeNodeLost, Message: "waiting for replica node-a to stream from the new primary"}}, StepRepoint)
	w.a.Report = replicaReport("node-b", true, 510)
	advance("replace", now, FailoverAction{PlaceReplacement: true}, StepReplace)

	req := ReplacementRequest(useast, w.p.Node, w.members())
	if req.PreferAZ != "az-of-node-p" || len(req.Keep) != 2 || len(req.Leaving) != 1 || req.Count != 1 {
		t.Errorf("ReplacementRequest = %+v", req)
	}
	w.r = member("node-r", false, true, nil)
	w.r.Node.State = StateCreating
	f.Replacement = "node-r"
	w.p.Node.State = StateDeleting
	advance("catch-up", now, FailoverAction{Wait: true, Why: &Info{Code: CodeNodeLost, Message: "the replacement node node-r is catching up"}}, StepCatchUp)
	if r := f.Roles(w.members())["node-r"]; r != (NodeRole{Role: NodeRoleReplica, Upstream: "node-b"}) {
		t.Errorf("the replacement's role = %+v", r)
	}
	w.r.Node.State = StateFailed
	advance("a failed replacement is discarded", now, FailoverAction{PlaceReplacement: true, Discard: "node-r"}, StepCatchUp)
	w.r = member("node-r2", false, true, replicaReport("node-b", true, 510))
	f.Replacement = "node-r2"
	advance("done", now, FailoverAction{Done: true}, StepCatchUp)
	w.b.HostHealthy = false
	if got := f.Advance(w.members(), w.lostHost, policy, now); got.Fail == nil || got.Fail.Code != CodeFailoverAborted {
		t.Errorf("the promoted node lost: Advance = %+v", got)
	}
}

func TestFailoverDetachChoosesAgain(t *testing.T) {
	// The old primary, alive but cut off from the control plane, went on
	// committing through node-a after the decision: node-a is promoted.
	w := newWorld()
	w.a.Report = replicaReport("", false, 520)
	w.b.Report = replicaReport("", false, 500)
	f := &Failover{Step: StepDetach, Lost: "node-p", Promote: "node-b"}
	f.Advance(w.members(), w.lostHost, policy, t1)
	if f.Step != StepPromote || f.Promote != "node-a" {
		t.Errorf("after detach: step %s, promote %s; want promote node-a", f.Step, f.Promote)
	}
	// node-b follows no one until node-a is promoted, then node-a.
	if r := f.Roles(w.members()); r["node-a"].Role != NodeRolePrimary || r["node-b"] != (NodeRole{Role: NodeRoleReplica}) {
		t.Errorf("roles while promoting = %v", r)
	}
	f.Step = StepRepoint
	if r := f.Roles(w.members()); r["node-a"].Role != NodeRolePrimary || r["node-b"] != (NodeRole{Role: NodeRoleReplica, Upstream: "node-a"}) {
		t.Errorf("roles after promotion = %v", r)
	}
}

func TestFailoverFenceByAgent(t *testing.T) {
	// PostgreSQL down on a live host: its agent fences the node at once.
	w := newWorld()
	w.p.HostHealthy = true
	w.p.Report = &ReplicationReport{At: t1, Fenced: true}
	w.lostHost.LastHeartbeatAt = t1
	f := &Failover{Step: StepFence, Lost: "node-p", Promote: "node-b"}
	got := f.Advance(w.members(), w.lostHost, policy, t1)
	if f.Step != StepDetach || !got.Wait {
		t.Errorf("Advance = %+v at step %s, want waiting at detach", got, f.Step)
	}
	// Without the agent's word the lease runs from the last heartbeat.
	w.p.Report.Fenced = false
	f.Step = StepFence
	fenced := policy.Lease + policy.LeaseMargin
	if got := f.Advance(w.members(), w.lostHost, policy, t1.Add(fenced-time.Millisecond)); f.Step != StepFence || !got.Until.Equal(t1.Add(fenced)) {
		t.Errorf("Advance = %+v at step %s, want waiting at fence until t1+%v (lease + margin)", got, f.Step, fenced)
	}
	if f.Advance(w.members(), w.lostHost, policy, t1.Add(fenced)); f.Step != StepDetach {
		t.Errorf("step %s once lease + margin ran out, want detach", f.Step)
	}
}

func TestFailoverAborts(t *testing.T) {
	for _, step := range []string{StepFence, StepDetach, StepPromote} {
		w := newWorld()
		w.b.HostHealthy = false
		f := &Failover{Step: step, Lost: "node-p", Promote: "node-b"}
		got := f.Advance(w.members(), nil, policy, t1)
		if got.Fail == nil || got.Fail.Code != CodeFailoverAborted || f.Step != step {
			t.Errorf("step %s, candidate lost: Advance = %+v, step %s", step, got, f.Step)
		}
	}
	w := newWorld()
	w.a.HostHealthy = false
	w.b.Report = replicaReport("", false, 500)
	f := &Failover{Step: StepDetach, Lost: "node-p", Promote: "node-b"}
	if got := f.Advance(w.members(), nil, policy, t1); got.Fail == nil || got.Fail.Code != CodeDoubleFailure || f.Step != StepDetach {
		t.Errorf("a replica lost while detaching: Advance = %+v, step %s", got, f.Step)
	}
	f.Forced = true
	if f.Advance(w.members(), nil, policy, t1); f.Step != StepPromote || f.Promote != "node-b" {
		t.Errorf("forced, a replica lost while detaching: step %s, promote %s", f.Step, f.Promote)
	}
	f = &Failover{Step: "bogus", Lost: "node-p", Promote: "node-b"}
	if got := f.Advance(w.members(), nil, policy, t1); got.Fail == nil || got.Fail.Code != CodeInvalidState {
		t.Errorf("unknown step: Advance = %+v", got)
	}
	if _, _, err := StartFailover(svcN(3), FailoverDecision{Verdict: VerdictCannot}, &Node{}, t1); err == nil {
		t.Errorf("StartFailover without a promote verdict succeeded")
	}
}

// FuzzDecideFailover: a promotion (unforced) only ever picks a healthy,
// reporting replica that followed the lost primary, and no other replica
// that may hold acknowledged commits is unaccounted for or ahead of it —
// a replica that left the service (deleting, with a Departure) included:
// its bound is known and the promoted replica received up to it; a
// 2-node promotion's replica was synchronous; a 1-node service never
// promotes.
func FuzzDecideFailover(f *testing.F) {
	f.Add(uint64(1), uint8(3))
	f.Add(uint64(0xdeadbeef), uint8(2))
	f.Fuzz(func(t *testing.T, seed uint64, count uint8) {
		rnd := seed | 1
		next := func(n int) int {
			rnd ^= rnd << 13
			rnd ^= rnd >> 7
			rnd ^= rnd << 17
			return int(rnd % uint64(n))
		}
		n := 1 + int(count%3)
		syncStates := []string{SyncStateAsync, SyncStateSync, SyncStateQuorum, ""}
		var standbys []StandbyStatus
		ids := []string{"node-a", "node-b", "node-c"}
		for _, id := range ids[:n-1] {
			standbys = append(standbys, StandbyStatus{Name: id, SyncState: syncStates[next(4)]})
		}
		p := member("node-p", true, next(2) == 0, primaryReport(LSN(next(1000)), standbys...))
		if next(2) == 0 {
			p.Report.Up, p.Report.DownSince = false, t1.Add(-time.Duration(next(20))*time.Second)
		}
		members := []Member{p}
		nodeStates := []string{StateRunning, StateRunning, StateCreating, StateFailed, StateDeleting}
		upstreams := []string{"node-p", "node-p", "node-x"}
		for _, id := range ids[:n-1] {
			m := member(id, false, next(3) != 0, nil)
			m.Node.State = nodeStates[next(len(nodeStates))]
			if next(4) != 0 {
				m.Report = replicaReport(upstreams[next(3)], next(2) == 0, LSN(next(1000)))
				m.Report.At = t1.Add(-time.Duration(next(30)) * time.Second)
				m.Report.Up, m.Report.InRecovery = next(5) != 0, next(5) != 0
			}
			members = append(members, m)
		}
		if next(2) == 0 {
			// A replica that left: never listed, or listed with its
			// bound known or not (0).
			m := member("node-d", false, next(2) == 0, replicaReport("node-p", next(2) == 0, LSN(next(1000))))
			m.Node.State = StateDeleting
			if next(3) != 0 {
				m.Node.Departure = &Departure{LeftAt: t0, AckBound: LSN(next(2) * next(1000))}
			}
			members = append(members, m)
		}
		d := DecideFailover(svcN(n), members, policy, false, t1)
		if d.Verdict != VerdictPromote {
			return
		}
		if n == 1 {
			t.Fatalf("a 1-node service promoted %s", d.Promote)
		}
		var best Member
		for _, m := range members {
			if m.Node.ID == d.Promote {
				best = m
			}
		}
		if best.Node == nil || best.Primary || !promotable(best, "node-p", policy, t1) || Going(best.Node.State) {
			t.Fatalf("promoted %+v", best)
		}
		if n == 2 && !wasSynchronous(p, best.Node) {
			t.Fatalf("2 nodes: promoted an asynchronous replica")
		}
		for _, m := range members[1:] {
			if dep := m.Node.Departure; Going(m.Node.State) && dep != nil && (dep.AckBound == 0 || best.Report.ReceivedLSN < dep.AckBound) {
				t.Fatalf("promoted %s (received %v) while %s, which left, may have acknowledged up to %v", best.Node.ID, best.Report.ReceivedLSN, m.Node.ID, dep.AckBound)
			}
			if m.Node.ID == best.Node.ID || (m.Node.State != StateRunning && m.Node.State != StateFailed) {
				continue
			}
			if !promotable(m, "node-p", policy, t1) || m.Report.ReceivedLSN > best.Report.ReceivedLSN {
				t.Fatalf("promoted %s while replica %+v (report %+v) may hold more", best.Node.ID, m.Node, m.Report)
			}
		}
	})
}

func TestHealth(t *testing.T) {
	lost := &Info{Code: CodeReplicaLost, Message: "replication asynchronous: replica lost"}
	cannot := &Info{Code: CodeDoubleFailure, Message: "x"}
	for _, tc := range []struct {
		name string
		d    FailoverDecision
		sync SyncSetting
		live *Failover
		want ServiceHealth
	}{
		{"healthy", FailoverDecision{Verdict: VerdictNone}, SyncSetting{Mode: ReplQuorum}, nil, ServiceHealth{Status: HealthHealthy}},
		{"asynchronous", FailoverDecision{Verdict: VerdictNone}, SyncSetting{Mode: ReplAsync, Condition: lost}, nil, ServiceHealth{Status: HealthDegraded, Conditions: []Info{*lost}}},
		{"failing over", FailoverDecision{Verdict: VerdictNone}, SyncSetting{}, &Failover{Step: StepCatchUp, Lost: "node-p", Promote: "node-b"},
			ServiceHealth{Status: HealthDegraded, Conditions: []Info{{Code: CodePrimaryLost, Message: "failing over from node-p to node-b: step catch-up"}}}},
		{"cannot fail over", FailoverDecision{Verdict: VerdictCannot, Why: cannot}, SyncSetting{Condition: lost}, nil,
			ServiceHealth{Status: HealthFailed, Conditions: []Info{*cannot, *lost}}},
	} {
		if diff := cmp.Diff(tc.want, Health(tc.d, tc.sync, tc.live, nil)); diff != "" {
			t.Errorf("%s: Health (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestFailoverPolicyCheck: the default timings are coherent, and each
// incoherent combination is refused naming the field to change.
func TestFailoverPolicyCheck(t *testing.T) {
	if err := DefaultFailoverPolicy().Check(); err != nil {
		t.Fatalf("DefaultFailoverPolicy().Check() = %v", err)
	}
	if err := policy.Check(); err != nil {
		t.Fatalf("the tests' policy: Check() = %v", err)
	}
	d := DefaultFailoverPolicy()
	if d.Lease+d.LeaseMargin >= d.HostTimeout || 3*d.HeartbeatInterval > d.Lease {
		t.Errorf("defaults %+v: want lease + margin < host timeout and three heartbeats within the lease", d)
	}
	with := func(f func(*FailoverPolicy)) FailoverPolicy {
		p := DefaultFailoverPolicy()
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name  string
		p     FailoverPolicy
		field string
	}{
		{"zero heartbeat", with(func(p *FailoverPolicy) { p.HeartbeatInterval = 0 }), "heartbeat_interval"},
		{"negative margin", with(func(p *FailoverPolicy) { p.LeaseMargin = -time.Second }), "lease_margin"},
		{"zero grace", with(func(p *FailoverPolicy) { p.Grace = 0 }), "grace"},
		{"sub-second lease", with(func(p *FailoverPolicy) { p.Lease, p.HeartbeatInterval = 900*time.Millisecond, 100*time.Millisecond }), "lease"},
		{"heartbeat too slow for the lease", with(func(p *FailoverPolicy) { p.HeartbeatInterval = 2 * time.Second }), "heartbeat_interval"},
		{"lease + margin = timeout", with(func(p *FailoverPolicy) { p.HostTimeout = p.Lease + p.LeaseMargin }), "host_timeout"},
		{"lease outlives timeout", with(func(p *FailoverPolicy) { p.Lease, p.HostTimeout = 10*time.Second, 5*time.Second }), "host_timeout"},
		{"report timeout under host timeout", with(func(p *FailoverPolicy) { p.HostTimeout, p.ReportTimeout = 20*time.Second, 15*time.Second }), "report_timeout"},
		{"report timeout under replication reports", with(func(p *FailoverPolicy) { p.ReportTimeout = 6 * time.Second }), "report_timeout"},
	} {
		err := tc.p.Check()
		e := AsError(err)
		if e == nil || e.Field != tc.field || e.Code != CodeInvalidTiming || e.Hint == "" {
			t.Errorf("%s: Check(%+v) = %v, want an invalid_timing error on %s with a hint", tc.name, tc.p, err, tc.field)
		}
	}
}

// TestListening: the control plane counts silences from since while it
// hears a host; from now while it hears none of two or more live hosts.
func TestListening(t *testing.T) {
	p := DefaultFailoverPolicy()
	since := t0
	now := t0.Add(time.Minute)
	host := func(state string, beat time.Time) *Host {
		return &Host{Meta: Meta{State: state}, LastHeartbeatAt: beat}
	}
	for _, tc := range []struct {
		name  string
		hosts []*Host
		want  time.Time
	}{
		{"one heard", []*Host{host(StateActive, now.Add(-time.Second)), host(StateActive, now.Add(-time.Hour))}, since},
		{"none heard", []*Host{host(StateActive, now.Add(-3*time.Second)), host(StateDraining, now.Add(-time.Hour))}, now},
		{"none heard, one host", []*Host{host(StateActive, now.Add(-time.Hour))}, since},
		{"the live one heard, a down one not", []*Host{host(StateActive, now.Add(-time.Second)), host(StateDown, now.Add(-time.Hour)), host(StateActive, now.Add(-time.Hour))}, since},
		{"down hosts do not count", []*Host{host(StateDown, now), host(StateDown, now), host(StateActive, now.Add(-time.Hour))}, since},
		{"never heard", []*Host{host(StateActive, time.Time{}), host(StateActive, time.Time{})}, now},
	} {
		if got := Listening(tc.hosts, since, now, p); !got.Equal(tc.want) {
			t.Errorf("%s: Listening = %v, want %v", tc.name, got, tc.want)
		}
	}
}
