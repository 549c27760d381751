package reconcile_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/reconcile"
)

// TestFailoverSteps drives a failover through every step with reports
// written as the agents would, a new reconciler (a restarted control
// plane) for each pass: the progress is the stored operation's.
func TestFailoverSteps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	policy := domain.DefaultFailoverPolicy()
	policy.Grace = 2 * time.Second
	f := newFixture(t, 0)
	pass := func() {
		t.Helper()
		rec, err := reconcile.New(reconcile.Config{Store: f.store, Provider: f.cloud, Keys: f.keys, InternalCA: f.ca, Failover: policy, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		_ = rec.Once(t.Context()) // the fake cloud places no node: its error is expected
	}
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 3, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	node := func(idx int, r *domain.ReplicationReport) *domain.Node {
		return f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
			ServiceID: svc.ID, Index: idx, AZ: "us-east-1" + string(rune('a'+idx)), Host: "local", Namespace: "ns", Address: "198.18.0.1",
			ReportedAt: now, Replication: r}).(*domain.Node)
	}
	p := node(0, &domain.ReplicationReport{At: now, DownSince: now.Add(-3 * time.Second)})
	a := node(1, &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 300})
	b := node(2, &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 400})
	// The primary's last report before it went down listed both replicas
	// as quorum standbys.
	p.Replication.Standbys = []domain.StandbyStatus{{Name: a.ID, SyncState: domain.SyncStateQuorum}, {Name: b.ID, SyncState: domain.SyncStateQuorum}}
	f.put(p)

	step := func(want string) *domain.Operation {
		t.Helper()
		for _, o := range f.ops(svc.ID) {
			if o.Type == domain.OpServiceFailover {
				if o.Step != want {
					t.Fatalf("failover step = %s (state %s), want %s", o.Step, o.State, want)
				}
				return o
			}
		}
		t.Fatalf("no failover operation, want step %s", want)
		return nil
	}
	pass()
	op := step(domain.StepFence)
	if s := get[domain.Service](f, svc.ID); s.State != domain.StateDegraded || s.OperationID != op.ID || s.Health == nil || s.Health.Status != domain.HealthDegraded {
		t.Fatalf("service during failover: %s op %q health %+v", s.State, s.OperationID, s.Health)
	}
	pass()
	step(domain.StepFence) // the old primary's agent has not fenced it yet
	f.edit(p, func() { p.Replication.Fenced = true })
	pass()
	step(domain.StepDetach) // the replicas still follow the old primary
	for _, n := range []*domain.Node{a, b} {
		f.edit(n, func() { n.Replication.Upstream, n.Replication.Streaming = "", false })
	}
	pass()
	if op = step(domain.StepPromote); op.Failover.Promote != b.ID {
		t.Fatalf("promote %s, want %s (most WAL)", op.Failover.Promote, b.ID)
	}
	f.edit(b, func() { b.Replication.InRecovery = false })
	pass()
	step(domain.StepRepoint)
	if s := get[domain.Service](f, svc.ID); s.PrimaryID != b.ID {
		t.Fatalf("primary = %q, want %s", s.PrimaryID, b.ID)
	}
	f.edit(a, func() { a.Replication.Upstream, a.Replication.Streaming = b.ID, true })
	pass()
	op = step(domain.StepReplace) // the replacement placed with the step; the next pass waits for it
	repl := get[domain.Node](f, op.Failover.Replacement)
	if repl.State != domain.StateCreating || repl.AZ != p.AZ || get[domain.Node](f, p.ID).State != domain.StateDeleting {
		t.Fatalf("replacement %+v, lost node %s", repl, get[domain.Node](f, p.ID).State)
	}
	if d := get[domain.Node](f, p.ID).Departure; d != nil {
		t.Errorf("the failed-over old primary recorded a replica's departure %+v: the promoted node holds its commits", d)
	}
	pass()
	step(domain.StepCatchUp)
	repl = get[domain.Node](f, repl.ID)
	f.edit(b, func() { b.Replication.ReceivedLSN = 500 })
	f.edit(repl, func() {
		repl.Replication = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: b.ID, Streaming: true, ReceivedLSN: 500}
		repl.Host, repl.ReportedAt = "local", now
	})
	pass()
	var done *domain.Operation
	for _, o := range f.ops(svc.ID) {
		if o.Type == domain.OpServiceFailover {
			done = o
		}
	}
	if done.State != domain.StateSucceeded {
		t.Fatalf("failover %s at %s, want succeeded", done.State, done.Step)
	}
	if s := get[domain.Service](f, svc.ID); s.OperationID != "" {
		t.Errorf("service still under operation %s", s.OperationID)
	}
}

// TestHostDownLosesItsNodes: a registered host marked down loses its
// nodes at once (no grace): its primary is failed over.
func TestHostDownLosesItsNodes(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Now = func() time.Time { return now } })
	f.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: "h1", State: domain.StateDown}, Region: "us-east-1", AZ: "us-east-1a", LastHeartbeatAt: now})
	f.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: "h2", State: domain.StateActive}, Region: "us-east-1", AZ: "us-east-1b", LastHeartbeatAt: now})
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 2, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	p := f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
		ServiceID: svc.ID, Index: 0, Host: "h1", ReportedAt: now}).(*domain.Node)
	r := f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
		ServiceID: svc.ID, Index: 1, Host: "h2", ReportedAt: now,
		Replication: &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true}}).(*domain.Node)
	f.edit(p, func() {
		p.Replication = &domain.ReplicationReport{At: now, Up: true, Standbys: []domain.StandbyStatus{{Name: r.ID, SyncState: domain.SyncStateSync}}}
	})
	_ = f.rec.Once(t.Context())
	var op *domain.Operation
	for _, o := range f.ops(svc.ID) {
		if o.Type == domain.OpServiceFailover {
			op = o
		}
	}
	if op == nil || op.Failover.Lost != p.ID || op.Failover.Promote != r.ID {
		t.Fatalf("failover = %+v, want %s promoted in place of %s", op, r.ID, p.ID)
	}
}

// TestDrainMovesNodes: the nodes of a draining host move one at a time —
// a replica replaced by a new node, then the primary by a roll-forward
// (a service.replace operation: a new node in its AZ, a switchover) —
// while the service is whole.
func TestDrainMovesNodes(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Now = func() time.Time { return now } })
	for i, az := range []string{"us-east-1a", "us-east-1b", "us-east-1c"} {
		state := domain.StateActive
		if i < 2 {
			state = domain.StateDraining
		}
		f.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: "h" + az[len(az)-1:], State: state}, Region: "us-east-1", AZ: az, LastHeartbeatAt: now})
	}
	// The primary's AZ has another host, where its successor goes.
	f.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: "ha2", State: domain.StateActive}, Region: "us-east-1", AZ: "us-east-1a", Capacity: 8, LastHeartbeatAt: now})
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 3, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	node := func(idx int, host string) *domain.Node {
		return f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
			ServiceID: svc.ID, Index: idx, AZ: "us-east-1" + host[1:], Host: host, Namespace: "ns", Address: "198.18.0.1", ReportedAt: now}).(*domain.Node)
	}
	p, a, b := node(0, "ha"), node(1, "hb"), node(2, "hc")
	for _, n := range []*domain.Node{a, b} {
		f.edit(n, func() {
			n.Replication = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 500}
		})
	}
	f.edit(p, func() {
		p.Replication = &domain.ReplicationReport{At: now, Up: true, ReceivedLSN: 500,
			Standbys: []domain.StandbyStatus{{Name: a.ID, SyncState: domain.SyncStateQuorum}, {Name: b.ID, SyncState: domain.SyncStateQuorum}}}
	})
	_ = f.rec.Once(t.Context()) // the fake cloud places no node: its error is expected
	if got := get[domain.Node](f, a.ID); got.State != domain.StateDeleting || got.Departure == nil || !got.Departure.LeftAt.Equal(now) {
		t.Fatalf("replica on the draining host: %s, departure %+v; want deleting (replaced), its departure recorded", got.State, got.Departure)
	}
	if got := get[domain.Node](f, p.ID); got.State != domain.StateRunning {
		t.Fatalf("primary moved (%s) with its replica: want one node at a time", got.State)
	}
	for _, o := range f.ops(svc.ID) {
		if o.Type == domain.OpServiceFailover {
			t.Fatalf("failover %+v started with a replica moving", o)
		}
	}
	var repl *domain.Node
	for _, n := range f.nodes(svc.ID) {
		if n.Index == a.Index && n.ID != a.ID {
			repl = n
		}
	}
	if repl == nil || repl.State != domain.StateCreating || repl.Host == "ha" || repl.Host == "hb" {
		t.Fatalf("replacement of %s = %+v, want a new node off the draining hosts", a.ID, repl)
	}
	// One replica short until the replacement streams: degraded, saying so.
	// (The fake cloud placed it nowhere: no host named.)
	want := "node " + a.ID + " on host hb left the service; its replacement " + repl.ID + " is being created (cloned from the primary)"
	if s := get[domain.Service](f, svc.ID); s.State != domain.StateDegraded || s.StateInfo == nil || s.StateInfo.Code != domain.CodeNodeReplacing || s.StateInfo.Message != want {
		t.Errorf("service while %s replaces %s: %s %+v, want degraded: %s", repl.ID, a.ID, s.State, s.StateInfo, want)
	}

	// The replacement streams and the old replica is gone: the primary
	// moves next, by a failover.
	f.edit(repl, func() {
		repl.Host, repl.Namespace, repl.Address = "hc", "ns", "198.18.0.2"
		if _, err := repl.ApplyReport(domain.NodeReport{State: domain.NodeReportRunning,
			Replication: &domain.ReplicationReport{Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 500}}, now); err != nil {
			t.Fatal(err)
		}
	})
	old := get[domain.Node](f, a.ID)
	f.edit(old, func() {
		if err := old.MarkDeleted(now); err != nil {
			t.Fatal(err)
		}
	})
	p = get[domain.Node](f, p.ID)
	f.edit(p, func() {
		p.Replication.Standbys = []domain.StandbyStatus{{Name: repl.ID, SyncState: domain.SyncStateQuorum}, {Name: b.ID, SyncState: domain.SyncStateQuorum}}
	})
	// A pass finds the service whole and running again, the next moves
	// the primary (the first pass's change wakes the next at once).
	_ = f.rec.Once(t.Context())
	if s := get[domain.Service](f, svc.ID); s.State != domain.StateRunning {
		t.Errorf("service with the replacement streaming: %s %+v, want running", s.State, s.StateInfo)
	}
	_ = f.rec.Once(t.Context())
	var op *domain.Operation
	for _, o := range f.ops(svc.ID) {
		if o.Type == domain.OpServiceFailover {
			t.Fatalf("the draining primary moves by a failover: %+v", o)
		}
		if o.Type == domain.OpServiceReplace {
			op = o
		}
	}
	if op == nil || op.Roll == nil || !op.Roll.Plan.Switchover || len(op.Roll.Plan.Retire) != 1 || op.Roll.Plan.Retire[0] != p.ID ||
		len(op.Roll.Plan.Add) != 1 || op.Roll.Plan.Add[0].Host != "ha2" {
		t.Fatalf("replace = %+v, want the draining primary %s replaced on ha2 by a switchover", op, p.ID)
	}
	if s := get[domain.Service](f, svc.ID); s.OperationID != op.ID || s.NodeCount != 3 {
		t.Errorf("service under the replace: operation %q, %d nodes", s.OperationID, s.NodeCount)
	}
}

// TestDepartedReplicaBoundsFailover: a replica lost and replaced, then the
// primary (issue 11 audit, gap 1). The primary's reports after the
// replacement bound what the departed replica may have acknowledged; the
// primary then lost, the other replica, behind that bound, is not
// promoted until it reports past it. A new reconciler for each pass (a
// restarted control plane): the departure is the stored node's.
func TestDepartedReplicaBoundsFailover(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := start
	f := newFixture(t, 0)
	pass := func() {
		t.Helper()
		rec, err := reconcile.New(reconcile.Config{Store: f.store, Provider: f.cloud, Keys: f.keys, InternalCA: f.ca,
			Failover: domain.DefaultFailoverPolicy(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		_ = rec.Once(t.Context()) // the fake cloud places no node: its error is expected
	}
	hosts := map[string]*domain.Host{}
	for _, az := range []string{"a", "b", "c"} {
		hosts[az] = f.put(&domain.Host{Meta: domain.Meta{ID: domain.NewID(domain.PrefixHost), Name: "h" + az, State: domain.StateActive},
			Region: "us-east-1", AZ: "us-east-1" + az, Capacity: 8, LastHeartbeatAt: now}).(*domain.Host)
	}
	down := func(az string) {
		h := get[domain.Host](f, hosts[az].ID)
		f.edit(h, func() {
			if err := h.MarkDown(now); err != nil {
				t.Fatal(err)
			}
		})
	}
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 3, BackupPublicKeyPEM: "PUB"}).(*domain.Service)
	node := func(idx int, az string, r *domain.ReplicationReport) *domain.Node {
		return f.put(&domain.Node{Meta: domain.Meta{ID: domain.NewID(domain.PrefixNode), ProjectID: "proj-test", State: domain.StateRunning},
			ServiceID: svc.ID, Index: idx, AZ: "us-east-1" + az, Host: "h" + az, Namespace: "ns", Address: "198.18.0.1",
			ReportedAt: now, Replication: r}).(*domain.Node)
	}
	p := node(0, "a", nil)
	// node-a lags (its receiver stalled); node-b acknowledged up to 500.
	a := node(1, "b", &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 300})
	b := node(2, "c", &domain.ReplicationReport{At: now, Up: true, InRecovery: true, Upstream: p.ID, Streaming: true, ReceivedLSN: 500})
	primaryReports := func(flush domain.LSN, standbys ...*domain.Node) {
		t.Helper()
		p = get[domain.Node](f, p.ID)
		f.edit(p, func() {
			p.Replication = &domain.ReplicationReport{At: now, Up: true, ReceivedLSN: flush}
			for _, n := range standbys {
				p.Replication.Standbys = append(p.Replication.Standbys, domain.StandbyStatus{Name: n.ID, SyncState: domain.SyncStateQuorum, FlushLSN: n.Replication.ReceivedLSN})
			}
			p.ReportedAt = now
		})
	}
	primaryReports(500, a, b)
	departure := func() domain.Departure {
		t.Helper()
		got := get[domain.Node](f, b.ID)
		if got.Departure == nil {
			t.Fatalf("node-b (%s) has no departure", got.State)
		}
		return *got.Departure
	}
	failovers := func() []*domain.Operation {
		var out []*domain.Operation
		for _, o := range f.ops(svc.ID) {
			if o.Type == domain.OpServiceFailover {
				out = append(out, o)
			}
		}
		return out
	}

	// node-b's host is lost: node-b is replaced and leaves the standbys.
	down("c")
	pass()
	if got := get[domain.Node](f, b.ID); got.State != domain.StateDeleting {
		t.Fatalf("lost replica node-b: %s, want deleting (replaced)", got.State)
	}
	if diff := cmp.Diff(domain.Departure{LeftAt: start}, departure()); diff != "" {
		t.Fatalf("node-b's departure (-want +got):\n%s", diff)
	}
	// The primary's next report no longer lists it: released. The one
	// after bounds what it may have acknowledged.
	now = start.Add(time.Second)
	primaryReports(510, a)
	pass()
	if diff := cmp.Diff(domain.Departure{LeftAt: start, ReleasedAt: now}, departure()); diff != "" {
		t.Fatalf("after the release (-want +got):\n%s", diff)
	}
	now = start.Add(2 * time.Second)
	primaryReports(520, a)
	pass()
	if diff := cmp.Diff(domain.Departure{LeftAt: start, ReleasedAt: start.Add(time.Second), AckBound: 520}, departure()); diff != "" {
		t.Fatalf("after the bound (-want +got):\n%s", diff)
	}

	// node-b's host comes back and its agent wipes it: it stays deleting
	// (seen by the failover decision) while node-a is below its bound.
	b = get[domain.Node](f, b.ID)
	f.edit(b, func() {
		if _, err := b.ApplyReport(domain.NodeReport{State: domain.NodeReportWiped}, now); err != nil {
			t.Fatal(err)
		}
	})
	pass()
	if got := get[domain.Node](f, b.ID); got.State != domain.StateDeleting || !got.Wiped() {
		t.Fatalf("wiped node-b: %s (wiped %v), want kept deleting while node-a is below its bound", got.State, got.Wiped())
	}

	// The primary's host is lost too, node-a still at 300: no failover.
	now = start.Add(3 * time.Second)
	down("a")
	a = get[domain.Node](f, a.ID)
	f.edit(a, func() { a.Replication.At, a.ReportedAt = now, now })
	pass()
	if ops := failovers(); len(ops) != 0 {
		t.Fatalf("failover %+v started with node-a (300) below node-b's bound (520)", ops[0].Failover)
	}
	s := get[domain.Service](f, svc.ID)
	if s.Health == nil || s.Health.Status != domain.HealthFailed || len(s.Health.Conditions) == 0 || s.Health.Conditions[0].Code != domain.CodeDoubleFailure {
		t.Fatalf("service health = %+v, want failed with double_failure", s.Health)
	}
	for _, want := range []string{b.ID, "0/208", a.ID, "0/12C"} {
		if msg := s.Health.Conditions[0].Message; !strings.Contains(msg, want) {
			t.Errorf("reason %q does not name %s", msg, want)
		}
	}

	// node-a reports past the bound (the old primary's WAL reached it):
	// it is promoted.
	now = start.Add(4 * time.Second)
	f.edit(a, func() { a.Replication.At, a.Replication.ReceivedLSN, a.ReportedAt = now, 520, now })
	pass()
	ops := failovers()
	if len(ops) != 1 || ops[0].Failover.Lost != p.ID || ops[0].Failover.Promote != a.ID {
		t.Fatalf("failovers %v, want %s promoted in place of %s", ops, a.ID, p.ID)
	}
	if got := get[domain.Node](f, b.ID); got.State != domain.StateDeleting {
		t.Fatalf("node-b %s while its replacement has not reported", got.State)
	}
	// Once every live node has received past the bound (the replacement
	// too), node-b no longer matters and goes.
	for _, n := range f.nodes(svc.ID) {
		if n.State == domain.StateCreating {
			f.edit(n, func() {
				n.Replication = &domain.ReplicationReport{At: now, Up: true, InRecovery: true, ReceivedLSN: 520}
			})
		}
	}
	pass()
	if got := get[domain.Node](f, b.ID); got.State != domain.StateDeleted {
		t.Fatalf("node-b %s, want deleted once every node received past its bound", got.State)
	}
}
