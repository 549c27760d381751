package domain

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReplacements: a node replacing one that left the service says what
// happened and where the replacement stands until it streams from the
// primary (however far behind); nothing else does.
func TestReplacements(t *testing.T) {
	p := member("node-p", true, true, primaryReport(100<<20))
	withIndex := func(m Member, i int, state string) Member {
		m.Node.Index, m.Node.State = i, state
		return m
	}
	lostB := withIndex(member("node-b", false, false, replicaReport("node-p", true, 99<<20)), 2, StateDeleting)
	drainedB := withIndex(member("node-b", false, true, nil), 2, StateDeleting)
	creating := withIndex(member("node-c", false, true, nil), 2, StateCreating)
	unplaced := withIndex(member("node-c", false, true, nil), 2, StateCreating)
	unplaced.Node.Host = ""
	starting := withIndex(member("node-c", false, true, &ReplicationReport{At: t1}), 2, StateRunning)
	notStreaming := withIndex(member("node-c", false, true, replicaReport("node-p", false, 40<<20)), 2, StateRunning)
	behind := withIndex(member("node-c", false, true, replicaReport("node-p", true, 60<<20)), 2, StateRunning)
	caughtUp := withIndex(member("node-c", false, true, replicaReport("node-p", true, 100<<20-1000)), 2, StateRunning)
	otherReplica := withIndex(member("node-a", false, true, replicaReport("node-p", false, 90<<20)), 1, StateRunning)
	joining := withIndex(member("node-j", false, true, nil), 5, StateCreating)
	joining.Joining = true
	const lostWhat = "node node-b on host host-of-node-b was lost (its host stopped sending heartbeats); its replacement node-c on host host-of-node-c "
	for _, tc := range []struct {
		name    string
		members []Member
		want    []string
	}{
		{"being created", []Member{p, otherReplica, lostB, creating}, []string{lostWhat + "is being created (cloned from the primary)"}},
		{"not placed yet", []Member{p, lostB, unplaced}, []string{"node node-b on host host-of-node-b was lost (its host stopped sending heartbeats); its replacement node-c is being created (cloned from the primary)"}},
		{"starting", []Member{p, lostB, starting}, []string{lostWhat + "is starting"}},
		{"not streaming", []Member{p, lostB, notStreaming}, []string{lostWhat + "is catching up (lag 62914560 bytes), not streaming yet"}},
		{"streaming, behind", []Member{p, lostB, behind}, nil},
		{"caught up", []Member{p, otherReplica, lostB, caughtUp}, nil},
		{"moved off a healthy host", []Member{p, drainedB, notStreaming}, []string{"node node-b on host host-of-node-b left the service; its replacement node-c on host host-of-node-c is catching up (lag 62914560 bytes), not streaming yet"}},
		{"predecessor wiped, still created", []Member{p, creating}, []string{"node node-c on host host-of-node-c replaces a node that left the service; it is being created (cloned from the primary)"}},
		{"predecessor wiped, running", []Member{p, notStreaming}, nil},
		{"a replica reconnecting", []Member{p, otherReplica}, nil},
		{"a roll's new node", []Member{p, joining}, nil},
		{"no primary", []Member{withIndex(member("node-p", true, false, nil), 0, StateDeleting), lostB, creating}, nil},
	} {
		var got []string
		for _, c := range Replacements(tc.members) {
			if c.Code != CodeNodeReplacing {
				t.Errorf("%s: code %s, want %s", tc.name, c.Code, CodeNodeReplacing)
			}
			got = append(got, c.Message)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: Replacements (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestHealthOfAReplacement: a lost replica's replacement keeps the
// service degraded, with the condition, until it streams; a live
// failover says it instead.
func TestHealthOfAReplacement(t *testing.T) {
	p := member("node-p", true, true, primaryReport(100<<20))
	a := member("node-a", false, true, replicaReport("node-p", true, 100<<20))
	a.Node.Index = 1
	lost := member("node-b", false, false, nil)
	lost.Node.Index, lost.Node.State = 2, StateDeleting
	repl := member("node-c", false, true, replicaReport("node-p", false, 10<<20))
	repl.Node.Index = 2
	members := []Member{p, a, lost, repl}
	nodes := []*Node{p.Node, a.Node, lost.Node, repl.Node}
	none := FailoverDecision{Verdict: VerdictNone}
	quorum := SyncSetting{StandbyNames: `ANY 1 ("node-a", "node-c")`, Mode: ReplQuorum}

	h := Health(none, quorum, nil, members)
	if h.Status != HealthDegraded || len(h.Conditions) != 1 || h.Conditions[0].Code != CodeNodeReplacing {
		t.Fatalf("Health with a replacement catching up = %+v, want degraded by %s", h, CodeNodeReplacing)
	}
	svc := svcN(3)
	svc.ApplyReplication(quorum, h, nodes, t1)
	if svc.State != StateDegraded || svc.StateInfo == nil || svc.StateInfo.Code != CodeNodeReplacing {
		t.Errorf("service with a replacement catching up: %s %+v, want degraded by %s", svc.State, svc.StateInfo, CodeNodeReplacing)
	}
	v := Explain(ExplainInput{Service: svc})
	if want := "service svc-1 is degraded: node node-b on host host-of-node-b was lost (its host stopped sending heartbeats); its replacement node-c on host host-of-node-c is catching up (lag 94371840 bytes), not streaming yet"; v.Health != want {
		t.Errorf("Explain(...).Health = %q, want %q", v.Health, want)
	}

	// The pass that replaces the lost replica says it once, with the
	// replacement.
	replace := FailoverDecision{Verdict: VerdictReplace, Lost: "node-b", Why: &Info{Code: CodeNodeLost, Message: "replica node-b is lost: its host stopped sending heartbeats"}}
	if got := Health(replace, quorum, nil, members); len(got.Conditions) != 1 || got.Conditions[0].Code != CodeNodeReplacing {
		t.Errorf("Health on the pass that replaces node-b = %+v, want its replacement's condition alone", got)
	}
	if got := Health(replace, quorum, nil, []Member{p, a, lost}); len(got.Conditions) != 1 || got.Conditions[0].Code != CodeNodeLost {
		t.Errorf("Health with node-b lost and no replacement = %+v, want the decision's condition", got)
	}

	f := &Failover{Step: StepCatchUp, Lost: "node-b", Promote: "node-p", Replacement: "node-c"}
	if h := Health(none, quorum, f, members); len(h.Conditions) != 1 || h.Conditions[0].Code != CodePrimaryLost {
		t.Errorf("Health during a failover = %+v, want the failover's condition alone", h)
	}

	repl.Report = replicaReport("node-p", true, 10<<20)
	members[3] = repl
	h = Health(none, quorum, nil, members)
	if h.Status != HealthHealthy || len(h.Conditions) != 0 {
		t.Errorf("Health with the replacement streaming = %+v, want healthy", h)
	}
	svc.ApplyReplication(quorum, h, nodes, t1)
	if svc.State != StateRunning {
		t.Errorf("service with the replacement streaming: %s, want running", svc.State)
	}
}
