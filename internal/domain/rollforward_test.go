package domain

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanResizeUpgradeReplace(t *testing.T) {
	hosts := []*Host{host("a1", "us-east-1a", 4), host("a2", "us-east-1a", 4), host("b1", "us-east-1b", 4), host("c1", "us-east-1c", 4)}
	fleet := Fleet{Hosts: hosts, Load: map[string]int{"a1": 1, "b1": 1, "c1": 1}, Now: t0, HeartbeatTimeout: hbTimeout}
	on := func(m Member, h, az string, index int) Member {
		m.Node.Host, m.Node.AZ, m.Node.Index = h, az, index
		return m
	}
	p := on(member("node-p", true, true, nil), "a1", "us-east-1a", 0)
	b := on(member("node-b", false, true, nil), "b1", "us-east-1b", 1)
	c := on(member("node-c", false, true, nil), "c1", "us-east-1c", 2)
	cLost := c
	cLost.HostHealthy = false
	migrating := svcN(1)
	migrating.State, migrating.OperationID = StateMigrating, "op-attach"
	two := []*Host{hosts[0], hosts[2]}
	for _, tc := range []struct {
		name    string
		plan    func() (*RollPlan, error)
		want    *RollPlan
		wantErr *errSummary
	}{
		{"1 → 3: two replicas in the free AZs", func() (*RollPlan, error) { return PlanResize(svcN(1), []Member{p}, 3, useast, fleet) },
			&RollPlan{Type: OpServiceResize, Target: 3, Add: []Slot{{"b1", "us-east-1b"}, {"c1", "us-east-1c"}}, Steps: []string{StepAddNodes, StepCatchUp}}, nil},
		{"3 → 1: the replicas retire, newest first", func() (*RollPlan, error) { return PlanResize(svcN(3), []Member{p, b, c}, 1, useast, fleet) },
			&RollPlan{Type: OpServiceResize, Target: 1, Retire: []string{"node-c", "node-b"}, Steps: []string{StepRelease, StepWipe}}, nil},
		{"3 → 2 drops the lost replica", func() (*RollPlan, error) { return PlanResize(svcN(3), []Member{p, cLost, b}, 2, useast, fleet) },
			&RollPlan{Type: OpServiceResize, Target: 2, Retire: []string{"node-c"}, Steps: []string{StepRelease, StepWipe}}, nil},
		{"2 → 3 with a lost replica: 409", func() (*RollPlan, error) { return PlanResize(svcN(2), []Member{p, cLost}, 3, useast, fleet) },
			nil, &errSummary{CodeNodeLost, "", "wait for the lost node's replacement, then try again"}},
		{"resize the region cannot place", func() (*RollPlan, error) {
			return PlanResize(svcN(1), []Member{p}, 3, useast, Fleet{Hosts: two, Now: t0, HeartbeatTimeout: hbTimeout})
		}, nil, &errSummary{CodeNotEnoughAZs, "nodes", "add hosts in other AZs of us-east-1 (moat host add NAME --region us-east-1 --az AZ), or ask for fewer nodes"}},
		{"during a migration: 409", func() (*RollPlan, error) { return PlanResize(migrating, []Member{p}, 2, useast, fleet) },
			nil, &errSummary{CodeOperationInProgress, "", "wait for operation op-attach to finish"}},
		{"out of range", func() (*RollPlan, error) { return PlanResize(svcN(1), []Member{p}, 4, useast, fleet) },
			nil, &errSummary{CodeInvalidNodes, "nodes", "a service has 1, 2 or 3 nodes"}},
		{"unchanged", func() (*RollPlan, error) { return PlanResize(svcN(1), []Member{p}, 1, useast, fleet) },
			nil, &errSummary{CodeInvalidNodes, "nodes", "give another node count: 1, 2 or 3"}},
		{"upgrade: all new nodes, a switchover, the old wiped", func() (*RollPlan, error) { return PlanUpgrade(svcN(2), []Member{p, b}, useast, fleet) },
			&RollPlan{Type: OpServiceUpgrade, Target: 2, Add: []Slot{{"a2", "us-east-1a"}, {"c1", "us-east-1c"}}, Switchover: true, Retire: []string{"node-p", "node-b"},
				Steps: []string{StepAddNodes, StepCatchUp, StepSwitchover, StepRelease, StepWipe}}, nil},
		{"upgrade with a lost node: 409", func() (*RollPlan, error) { return PlanUpgrade(svcN(3), []Member{p, b, cLost}, useast, fleet) },
			nil, &errSummary{CodeNodeLost, "", "wait for the lost node's replacement, then try again"}},
		{"drain the primary's host: a new node in its AZ, a switchover", func() (*RollPlan, error) { return PlanReplace(svcN(3), []Member{p, b, c}, "node-p", useast, fleet) },
			&RollPlan{Type: OpServiceReplace, Target: 3, Add: []Slot{{"a2", "us-east-1a"}}, Switchover: true, Retire: []string{"node-p"},
				Steps: []string{StepAddNodes, StepCatchUp, StepSwitchover, StepRelease, StepWipe}}, nil},
		{"replace a lost replica", func() (*RollPlan, error) { return PlanReplace(svcN(3), []Member{p, b, cLost}, "node-c", useast, fleet) },
			&RollPlan{Type: OpServiceReplace, Target: 3, Add: []Slot{{"c1", "us-east-1c"}}, Retire: []string{"node-c"},
				Steps: []string{StepAddNodes, StepCatchUp, StepRelease, StepWipe}}, nil},
		{"a lost primary is failed over, not replaced", func() (*RollPlan, error) {
			lp := p
			lp.HostHealthy = false
			return PlanReplace(svcN(2), []Member{lp, b}, "node-p", useast, fleet)
		}, nil, &errSummary{CodePrimaryLost, "", "the failover replaces it"}},
		{"replace an unknown node", func() (*RollPlan, error) { return PlanReplace(svcN(2), []Member{p, b}, "node-x", useast, fleet) },
			nil, &errSummary{CodeNotFound, "node_id", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.plan()
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if got == nil {
				return
			}
			if step := got.Next(""); step != got.Steps[0] {
				t.Errorf("Next(\"\") = %q", step)
			}
			if last := got.Steps[len(got.Steps)-1]; got.Next(last) != "" {
				t.Errorf("Next(%q) = %q, want the end", last, got.Next(last))
			}
		})
	}
}

func TestSwitchoverReady(t *testing.T) {
	old := member("node-p", true, true, primaryReport(500))
	next := member("node-n", false, true, replicaReport("node-p", true, 501))
	if SwitchoverReady(old, next) {
		t.Errorf("ready before the old primary is demoted")
	}
	// Demoted: stopped, its shutdown checkpoint at 500.
	old.Report = &ReplicationReport{At: t1, Fenced: true, ReceivedLSN: 500, DownSince: t1}
	if !SwitchoverReady(old, next) {
		t.Errorf("not ready with the old primary demoted and the WAL received past its shutdown checkpoint")
	}
	next.Report.ReceivedLSN = 500
	if SwitchoverReady(old, next) {
		t.Errorf("ready while the new primary lacks the shutdown checkpoint")
	}
	next.Report.ReceivedLSN = 900
	old.Report.ReceivedLSN = 0 // not a clean shutdown: no final position
	if SwitchoverReady(old, next) {
		t.Errorf("ready without the old primary's final position")
	}
}
