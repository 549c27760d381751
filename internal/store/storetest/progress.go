package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// testOperationProgress: an operation's stored progress (a failover's, a
// roll-forward's) reads back as it was put, so a restarted control plane
// resumes from it.
func testOperationProgress(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fo := domain.NewOperation("proj-a", domain.OpServiceFailover, "svc-a", now)
	ro := domain.NewOperation("proj-a", domain.OpServiceUpgrade, "svc-a", now)
	for _, o := range []*domain.Operation{fo, ro} {
		if err := o.Start(domain.StepSwitchover, now); err != nil {
			t.Fatal(err)
		}
	}
	fo.Failover = &domain.Failover{Step: domain.StepPromote, Lost: "node-a", LostHost: "h1", LostAZ: "us-east-1a", Promote: "node-b", Forced: true}
	ro.Roll = &domain.Roll{Plan: domain.RollPlan{Type: domain.OpServiceUpgrade, Target: 2, Add: []domain.Slot{{Host: "h2", AZ: "us-east-1b"}, {Host: "h3", AZ: "us-east-1c"}},
		Switchover: true, SwitchTo: 1, Retire: []string{"node-a", "node-b"},
		Steps: []string{domain.StepAddNodes, domain.StepCatchUp, domain.StepSwitchover, domain.StepRelease, domain.StepWipe}},
		Step: domain.StepSwitchover, From: "node-a", Before: 2, Added: []string{"node-c", "node-d"},
		Phase: domain.PhaseDemote, DemotedAt: now, Attempts: 2, RetryAt: now.Add(-time.Second), Solo: true, ReleaseLSN: 0x3000060, ReopenedAt: now.Add(-2 * time.Second)}
	update(t, s, func(tx store.Tx) error {
		if err := store.Put(ctx, tx, fo); err != nil {
			return err
		}
		return store.Put(ctx, tx, ro)
	})
	for _, want := range []*domain.Operation{fo, ro} {
		var got *domain.Operation
		view(t, s, func(tx store.Tx) (err error) {
			got, err = store.Get[domain.Operation](ctx, tx, want.ID)
			return err
		})
		if diff := cmp.Diff(want.Failover, got.Failover); diff != "" {
			t.Errorf("%s: failover progress (-put +got):\n%s", want.ID, diff)
		}
		if diff := cmp.Diff(want.Roll, got.Roll); diff != "" {
			t.Errorf("%s: roll progress (-put +got):\n%s", want.ID, diff)
		}
	}
}

// testNodeDeparture: a departed replica's bound (domain.Departure) reads
// back as it was put, so a restarted control plane still refuses to
// promote a replica below it.
func testNodeDeparture(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	want := domain.NewNode(&domain.Service{Meta: domain.Meta{ID: "svc-a", ProjectID: "proj-a"}}, 2, "us-east-1c", now)
	if _, err := want.BeginDelete(now); err != nil {
		t.Fatal(err)
	}
	want.Host, want.Departure = "h3", &domain.Departure{LeftAt: now, ReleasedAt: now.Add(time.Second), AckBound: 0x3000060}
	update(t, s, func(tx store.Tx) error { return store.Put(ctx, tx, want) })
	var got *domain.Node
	view(t, s, func(tx store.Tx) (err error) {
		got, err = store.Get[domain.Node](ctx, tx, want.ID)
		return err
	})
	if diff := cmp.Diff(want.Departure, got.Departure); diff != "" {
		t.Errorf("node departure (-put +got):\n%s", diff)
	}
}
