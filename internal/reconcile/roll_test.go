package reconcile_test

import (
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/reconcile"
)

// TestRollUpgradeSteps drives an upgrade of a 1-node service (a new node,
// a switchover, the old node wiped) with reports written as the agents
// would, a new reconciler (a restarted control plane) for each pass: the
// progress is the stored operation's.
func TestRollUpgradeSteps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	f := newFixture(t, 0)
	pass := func() {
		t.Helper()
		rec, err := reconcile.New(reconcile.Config{Store: f.store, Provider: f.cloud, Keys: f.keys, InternalCA: f.ca, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		_ = rec.Once(t.Context()) // the fake cloud places no node: its error is expected
	}
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 1, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	p := f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
		ServiceID: svc.ID, Index: 0, AZ: "us-east-1a", Host: "local", Namespace: "ns", Address: "198.18.0.1", ReportedAt: now,
		Replication: &domain.ReplicationReport{At: now, Up: true, ReceivedLSN: 100}}).(*domain.Node)
	members := domain.Members(svc, []*domain.Node{p}, func(string) bool { return true })
	plan := &domain.RollPlan{Type: domain.OpServiceUpgrade, Target: 1, Add: []domain.Slot{{Host: "local", AZ: "us-east-1b"}}, Switchover: true,
		Retire: []string{p.ID}, Steps: []string{domain.StepAddNodes, domain.StepCatchUp, domain.StepSwitchover, domain.StepRelease, domain.StepWipe}}
	op, err := domain.StartRoll(svc, members, plan, now)
	if err != nil {
		t.Fatal(err)
	}
	f.put(op)
	f.put(svc)

	roll := func(step, phase string) *domain.Operation {
		t.Helper()
		o := get[domain.Operation](f, op.ID)
		if o.Step != step || o.Roll.Step != step || o.Roll.Phase != phase {
			t.Fatalf("roll at %s/%s (%s/%q, %s), want %s/%q", o.Step, o.Roll.Step, o.Roll.Step, o.Roll.Phase, o.State, step, phase)
		}
		return o
	}
	pass()
	o := roll(domain.StepAddNodes, "")
	if len(o.Roll.Added) != 1 {
		t.Fatalf("added %v, want one node", o.Roll.Added)
	}
	n := get[domain.Node](f, o.Roll.Added[0])
	if n.ID == p.ID || n.Index != 1 || n.Host != "local" || n.AZ != "us-east-1b" || n.State != domain.StateCreating {
		t.Fatalf("new node %+v", n)
	}
	pass()
	roll(domain.StepCatchUp, "")
	// The new node fails before it caught up (its volume lost, say): a
	// node with a new ID takes its slot.
	n = get[domain.Node](f, n.ID)
	f.edit(n, func() {
		if _, err := n.ApplyReport(domain.NodeReport{State: domain.NodeReportFailed, Message: "volume lost"}, now); err != nil {
			t.Fatal(err)
		}
	})
	pass()
	o = roll(domain.StepCatchUp, "")
	if o.Roll.Added[0] == n.ID || o.Roll.Replaced != 1 || get[domain.Node](f, n.ID).State != domain.StateDeleting {
		t.Fatalf("failed new node %s: added %v (replaced %d), its state %s", n.ID, o.Roll.Added, o.Roll.Replaced, get[domain.Node](f, n.ID).State)
	}
	n = get[domain.Node](f, o.Roll.Added[0])
	if n.Host != "local" || n.AZ != "us-east-1b" || n.State != domain.StateCreating {
		t.Fatalf("replacement of the failed new node %+v", n)
	}
	f.edit(n, func() {
		n.Namespace, n.Address = "ns2", "198.18.0.2"
		if _, err := n.ApplyReport(domain.NodeReport{State: domain.NodeReportRunning, Replication: &domain.ReplicationReport{
			Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 100}}, now); err != nil {
			t.Fatal(err)
		}
	})
	pass()
	roll(domain.StepSwitchover, domain.PhaseDemote)
	roles := func() map[string]domain.NodeRole {
		s := get[domain.Service](f, svc.ID)
		nodes := f.nodes(svc.ID)
		return domain.ServiceRoles(s, domain.Members(s, nodes, func(string) bool { return true }), f.ops(svc.ID))
	}
	if r := roles()[p.ID]; r.Role != domain.NodeRoleDemoted {
		t.Fatalf("old primary's role = %+v, want demoted", r)
	}
	// The old primary stopped cleanly at 200; the new node received past it.
	now = now.Add(300 * time.Millisecond)
	p = get[domain.Node](f, p.ID)
	f.edit(p, func() {
		p.Replication = &domain.ReplicationReport{At: now, Fenced: true, ReceivedLSN: 200, DownSince: now}
	})
	n = get[domain.Node](f, n.ID)
	n = get[domain.Node](f, n.ID)
	f.edit(n, func() { n.Replication.Streaming, n.Replication.ReceivedLSN = false, 300 })
	pass()
	roll(domain.StepSwitchover, domain.PhasePromote)
	if r := roles()[n.ID]; r.Role != domain.NodeRolePrimary {
		t.Fatalf("new node's role = %+v, want primary", r)
	}
	n = get[domain.Node](f, n.ID)
	n = get[domain.Node](f, n.ID)
	f.edit(n, func() { n.Replication.InRecovery, n.Replication.Upstream = false, "" })
	pass()
	if s := get[domain.Service](f, svc.ID); s.PrimaryID != n.ID {
		t.Fatalf("primary = %s, want %s", s.PrimaryID, n.ID)
	}
	pass()
	roll(domain.StepWipe, "")
	if got := get[domain.Node](f, p.ID); got.State != domain.StateDeleting {
		t.Fatalf("old primary %s, want deleting", got.State)
	}
	p = get[domain.Node](f, p.ID)
	f.edit(p, func() {
		if err := p.MarkDeleted(now); err != nil {
			t.Fatal(err)
		}
	})
	pass()
	o = get[domain.Operation](f, op.ID)
	if o.State != domain.StateSucceeded {
		t.Fatalf("roll %s at %s, want succeeded", o.State, o.Step)
	}
	if s := get[domain.Service](f, svc.ID); s.OperationID != "" || s.NodeCount != 1 || s.PrimaryID != n.ID {
		t.Errorf("service after the upgrade: operation %q, %d nodes, primary %s", s.OperationID, s.NodeCount, s.PrimaryID)
	}
}
