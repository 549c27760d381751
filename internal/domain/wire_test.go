package domain

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests of what the adapters call to wire replication and failover:
// the primary role, members, roles, replacement, the service's health
// and state, and a tenant's failover request.

func TestPrimaryRole(t *testing.T) {
	svc := svcN(3)
	a := &Node{Meta: Meta{ID: "node-a", State: StateRunning}, ServiceID: "svc-1", Index: 0}
	b := &Node{Meta: Meta{ID: "node-b", State: StateRunning}, ServiceID: "svc-1", Index: 1}
	if !svc.IsPrimary(a) || svc.IsPrimary(b) || svc.PrimaryNode([]*Node{b, a}) != a {
		t.Errorf("without PrimaryID the index-0 node is the primary")
	}
	if !svc.MovePrimary("node-b", t1) || svc.MovePrimary("node-b", t1) {
		t.Errorf("MovePrimary twice = changed, then unchanged")
	}
	if svc.IsPrimary(a) || !svc.IsPrimary(b) || svc.PrimaryNode([]*Node{a, b}) != b {
		t.Errorf("after MovePrimary node-b is the primary")
	}
	b.State = StateDeleting
	if svc.PrimaryNode([]*Node{a, b}) != nil {
		t.Errorf("a deleting primary is no primary")
	}
}

func TestRolesOf(t *testing.T) {
	svc := svcN(3)
	p := member("node-p", true, true, nil)
	a := member("node-a", false, true, nil)
	gone := member("node-g", false, true, nil)
	gone.Node.State = StateDeleting
	got := RolesOf(svc, []Member{p, a, gone}, nil)
	want := map[string]NodeRole{"node-p": {Role: NodeRolePrimary}, "node-a": {Role: NodeRoleReplica, Upstream: "node-p"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RolesOf without failover (-want +got):\n%s", diff)
	}
	f := &Failover{Step: StepDetach, Lost: "node-p", Promote: "node-a"}
	got = RolesOf(svc, []Member{p, a}, f)
	want = map[string]NodeRole{"node-p": {Role: NodeRoleFenced}, "node-a": {Role: NodeRoleReplica}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RolesOf in the detach step (-want +got):\n%s", diff)
	}
}

func TestReplaceNode(t *testing.T) {
	svc := svcN(3)
	lost := &Node{Meta: Meta{ID: "node-l", ProjectID: "proj-1", State: StateFailed}, ServiceID: "svc-1", Index: 2, AZ: "us-east-1c"}
	n, err := ReplaceNode(svc, lost, "us-east-1c", t1)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID == lost.ID || !ValidID(PrefixNode, n.ID) || n.State != StateCreating || n.Index != 2 || n.AZ != "us-east-1c" || n.CertPEM != "" {
		t.Errorf("ReplaceNode = %+v, want a new creating node with no certificate", n)
	}
	if lost.State != StateDeleting {
		t.Errorf("lost node is %s, want deleting", lost.State)
	}
}

func TestMembers(t *testing.T) {
	svc := svcN(2)
	r := replicaReport("node-a", true, 10)
	nodes := []*Node{
		{Meta: Meta{ID: "node-a", State: StateRunning}, ServiceID: "svc-1", Index: 0, Host: "h1"},
		{Meta: Meta{ID: "node-b", State: StateRunning}, ServiceID: "svc-1", Index: 1, Host: "h2", Replication: r},
		{Meta: Meta{ID: "node-x", State: StateRunning}, ServiceID: "svc-2", Host: "h1"},
		{Meta: Meta{ID: "node-d", State: StateDeleted}, ServiceID: "svc-1", Host: "h1"},
	}
	got := Members(svc, nodes, func(h string) bool { return h == "h1" })
	if len(got) != 2 || !got[0].Primary || !got[0].HostHealthy || got[1].Primary || got[1].HostHealthy || got[1].Report != r {
		t.Errorf("Members = %+v", got)
	}
}

// TestApplyReplication: a running service is degraded by a lost node or
// a failover (with the reason), not by a replica catching up, and runs
// again once healthy with every node running and no operation.
func TestApplyReplication(t *testing.T) {
	svc := svcN(2)
	nodes := []*Node{{Meta: Meta{ID: "node-a", State: StateRunning}, ServiceID: "svc-1"}, {Meta: Meta{ID: "node-b", State: StateRunning}, ServiceID: "svc-1"}}
	sync := SyncSetting{StandbyNames: `FIRST 1 ("node-b")`, Mode: ReplSync}
	if changed, bump := svc.ApplyReplication(sync, ServiceHealth{Status: HealthHealthy}, nodes, t1); !changed || !bump {
		t.Errorf("first ApplyReplication = %v, %v, want stored and bumped", changed, bump)
	}
	if changed, bump := svc.ApplyReplication(sync, ServiceHealth{Status: HealthHealthy}, nodes, t1); changed || bump {
		t.Errorf("same ApplyReplication = %v, %v, want nothing", changed, bump)
	}
	catching := SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp, Message: "catching up"}}
	svc.ApplyReplication(catching, Health(FailoverDecision{Verdict: VerdictNone}, catching, nil, nil), nodes, t1)
	if svc.State != StateRunning || svc.Replication.StandbyNames != "" {
		t.Errorf("catching up: %s %+v, want running and asynchronous", svc.State, svc.Replication)
	}
	lost := SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaLost, Message: "replication asynchronous: replica lost"}}
	svc.ApplyReplication(lost, Health(FailoverDecision{Verdict: VerdictNone}, lost, nil, nil), nodes, t1)
	if svc.State != StateDegraded || svc.StateInfo == nil || svc.StateInfo.Code != CodeReplicaLost {
		t.Errorf("replica lost: %s %+v, want degraded saying so", svc.State, svc.StateInfo)
	}
	if _, bump := svc.ApplyReplication(sync, ServiceHealth{Status: HealthHealthy}, nodes, t1.Add(time.Second)); svc.State != StateRunning || !bump {
		t.Errorf("healthy again: %s (bump %v), want running", svc.State, bump)
	}
}

func TestRequestFailover(t *testing.T) {
	now := t1
	p := member("node-p", true, true, primaryReport(500, StandbyStatus{Name: "node-a", SyncState: SyncStateQuorum}, StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum}))
	a := member("node-a", false, true, replicaReport("node-p", true, 300))
	b := member("node-b", false, true, replicaReport("node-p", true, 400))
	svc := svcN(3)
	op, started, err := RequestFailover(svc, []Member{p, a, b}, nil, policy, now)
	if err != nil || !started || op.Failover == nil || op.Failover.Lost != "node-p" || op.Failover.Promote != "node-b" || svc.OperationID != op.ID || svc.State != StateDegraded {
		t.Fatalf("RequestFailover = %+v %v %v (service %s %s), want node-b promoted in place of node-p", op, started, err, svc.State, svc.OperationID)
	}
	again, started, err := RequestFailover(svc, []Member{p, a, b}, []*Operation{op}, policy, now)
	if err != nil || started || again != op {
		t.Errorf("repeated request = %v %v %v, want the live operation", again, started, err)
	}
	if _, _, err := RequestFailover(svcN(1), []Member{p}, nil, policy, now); AsError(err) == nil || AsError(err).Code != CodeSingleNode {
		t.Errorf("1 node: %v, want single_node", err)
	}
	b.Report.At = now.Add(-time.Hour) // b stale: it may hold commits a lacks
	if _, _, err := RequestFailover(svcN(3), []Member{p, a, b}, nil, policy, now); AsError(err) == nil || AsError(err).Kind != Conflict {
		t.Errorf("a replica not reporting: %v, want 409", err)
	}
}

// TestApplyReportKeepsStandbys: a primary reported down keeps the
// standbys it last listed, so a 2-node service whose primary's server
// died still knows its replica was synchronous.
func TestApplyReportKeepsStandbys(t *testing.T) {
	n := &Node{Meta: Meta{ID: "node-p", State: StateRunning}}
	up := &ReplicationReport{Up: true, ReceivedLSN: 500, Standbys: []StandbyStatus{{Name: "node-r", SyncState: SyncStateSync}}}
	if _, err := n.ApplyReport(NodeReport{State: NodeReportRunning, Replication: up}, t1); err != nil {
		t.Fatal(err)
	}
	down := &ReplicationReport{DownSince: t1}
	if _, err := n.ApplyReport(NodeReport{State: NodeReportFailed, Replication: down}, t1.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	r := n.Replication
	if r.Up || r.At != t1.Add(time.Second) || len(r.Standbys) != 1 || r.Standbys[0].SyncState != SyncStateSync || r.ReceivedLSN != 500 {
		t.Errorf("down report = %+v, want down with the last standbys", r)
	}
	p := Member{Node: n, Primary: true, HostHealthy: true, Report: r}
	rep := member("node-r", false, true, replicaReport("node-p", false, 500))
	rep.Report.At = t1.Add(10 * time.Second)
	d := DecideFailover(svcN(2), []Member{p, rep}, policy, false, t1.Add(12*time.Second))
	if d.Verdict != VerdictPromote || d.Promote != "node-r" {
		t.Errorf("DecideFailover after the primary's server died = %+v, want node-r promoted", d)
	}
}

// TestExplainSaysHealth: explain of a service that lost a node says what
// happened and what Moat is doing about it, whatever the verdict.
func TestExplainSaysHealth(t *testing.T) {
	svc := &Service{Meta: Meta{ID: "svc-1", State: StateDegraded}, AllowedIPs: DefaultAllowlist(),
		Health: &ServiceHealth{Status: HealthDegraded, Conditions: []Info{{Code: CodePrimaryLost, Message: "failing over from node-a to node-b: step promote"}}}}
	v := Explain(ExplainInput{Service: svc, NodeAddrs: nil})
	if v.Health != "service svc-1 is degraded: failing over from node-a to node-b: step promote" {
		t.Errorf("Explain health = %q", v.Health)
	}
	svc.Health = &ServiceHealth{Status: HealthHealthy}
	if v := Explain(ExplainInput{Service: svc}); v.Health != "" {
		t.Errorf("healthy service: health %q, want none", v.Health)
	}
}

// TestDrainNext: a draining host's nodes move one at a time, replicas
// first, the primary by a failover, and only while the service is whole
// and healthy.
func TestDrainNext(t *testing.T) {
	mk := func() (*Service, []Member) {
		p := member("node-p", true, true, primaryReport(500))
		a := member("node-a", false, true, replicaReport("node-p", true, 500))
		b := member("node-b", false, true, replicaReport("node-p", true, 500))
		svc := svcN(3)
		svc.State = StateRunning
		return svc, []Member{p, a, b}
	}
	on := func(hosts ...string) func(string) bool {
		return func(h string) bool { return slices.Contains(hosts, h) }
	}
	for _, tc := range []struct {
		name     string
		draining func(string) bool
		edit     func(*Service, []Member) []Member
		want     string
		primary  bool
	}{
		{"nothing draining", on(), nil, "", false},
		{"a replica", on("host-of-node-a"), nil, "node-a", false},
		{"replicas before the primary", on("host-of-node-p", "host-of-node-b"), nil, "node-b", false},
		{"the primary", on("host-of-node-p"), nil, "node-p", true},
		{"under an operation", on("host-of-node-a"), func(s *Service, m []Member) []Member { s.OperationID = "op-1"; return m }, "", false},
		{"a replica not streaming", on("host-of-node-a"), func(_ *Service, m []Member) []Member { m[2].Report.Streaming = false; return m }, "", false},
		{"a host unhealthy", on("host-of-node-a"), func(_ *Service, m []Member) []Member { m[2].HostHealthy = false; return m }, "", false},
		{"a node missing", on("host-of-node-a"), func(_ *Service, m []Member) []Member { return m[:2] }, "", false},
		{"degraded", on("host-of-node-a"), func(s *Service, m []Member) []Member { s.State = StateDegraded; return m }, "", false},
		{"1 node: moved by a roll-forward", on("host-of-node-p"), func(s *Service, m []Member) []Member { s.NodeCount = 1; return m[:1] }, "node-p", true},
	} {
		svc, members := mk()
		if tc.edit != nil {
			members = tc.edit(svc, members)
		}
		n, primary := DrainNext(svc, members, tc.draining)
		got := ""
		if n != nil {
			got = n.ID
		}
		if got != tc.want || primary != tc.primary {
			t.Errorf("%s: DrainNext = %q primary=%v, want %q primary=%v", tc.name, got, primary, tc.want, tc.primary)
		}
	}
}
