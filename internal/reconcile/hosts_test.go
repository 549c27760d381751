package reconcile_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
	"github.com/moatdb/moat/internal/reconcile"
)

// TestMarkLateHosts: a pass marks down the active and draining hosts whose
// heartbeats are older than domain.DefaultHostTimeout (or that never
// heartbeat since their registration), and leaves the others.
func TestMarkLateHosts(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	started := now.Add(-time.Hour) // the reconciler listens for heartbeats from then
	clock.Store(&started)
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Now = func() time.Time { return *clock.Load() } })
	clock.Store(&now)
	cat := domain.DefaultCatalog()
	host := func(name string, registered, beat time.Time, drain bool) *domain.Host {
		h, err := domain.NewHost(cat, name, "us-east-1", "us-east-1a", 0, nil, registered)
		if err != nil {
			t.Fatal(err)
		}
		if !beat.IsZero() {
			if _, err := h.Heartbeat("v1", beat); err != nil {
				t.Fatal(err)
			}
		}
		if drain {
			if err := h.Drain(registered); err != nil {
				t.Fatal(err)
			}
		}
		return f.put(h).(*domain.Host)
	}
	late := host("late", now.Add(-time.Hour), now.Add(-domain.DefaultHostTimeout-time.Second), false)
	fresh := host("fresh", now.Add(-time.Hour), now.Add(-domain.DefaultHostTimeout+time.Second), false)
	silent := host("silent", now.Add(-time.Minute), time.Time{}, false)
	newcomer := host("newcomer", now.Add(-time.Second), time.Time{}, false)
	drained := host("drained", now.Add(-time.Hour), now.Add(-time.Minute), true)
	host("recent", now.Add(-time.Hour), now.Add(-500*time.Millisecond), false) // the control plane hears hosts
	f.mustOnce()
	for _, tc := range []struct {
		h     *domain.Host
		state string
	}{{late, domain.StateDown}, {fresh, domain.StateActive}, {silent, domain.StateDown}, {newcomer, domain.StateActive}, {drained, domain.StateDown}} {
		got := get[domain.Host](f, tc.h.ID)
		if got.State != tc.state {
			t.Errorf("host %s = %s, want %s", got.Name, got.State, tc.state)
		}
		if tc.state == domain.StateDown && (got.StateInfo == nil || got.StateInfo.Code != domain.CodeHeartbeatLost) {
			t.Errorf("host %s state info = %+v, want %s", got.Name, got.StateInfo, domain.CodeHeartbeatLost)
		}
	}
	if got := get[domain.Host](f, drained.ID); !got.Cordoned {
		t.Error("a drained host marked down lost its cordon: it would come back active")
	}
}

// TestRestartBlamesNoHost: a reconciler that just started (a control
// plane back after a while) marks no host down for the silence before it
// listened; it does once the timeout passed since its start.
func TestRestartBlamesNoHost(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&start)
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Now = func() time.Time { return *clock.Load() } })
	h, err := domain.NewHost(domain.DefaultCatalog(), "h1", "us-east-1", "us-east-1a", 0, nil, start.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Heartbeat("v1", start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.put(h)
	f.mustOnce()
	if got := get[domain.Host](f, h.ID); got.State != domain.StateActive {
		t.Errorf("host an hour silent, at the reconciler's start = %s, want active", got.State)
	}
	later := start.Add(domain.DefaultHostTimeout + time.Second)
	clock.Store(&later)
	f.mustOnce()
	if got := get[domain.Host](f, h.ID); got.State != domain.StateDown {
		t.Errorf("host silent for the timeout since the reconciler's start = %s, want down", got.State)
	}
}

// TestPlaceNodeWithoutHost: a node created without a host (before hosts
// were first-class) is placed by the reconciler through domain.Place; with
// no healthy host the node says why and nothing reaches the provider.
func TestPlaceNodeWithoutHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateCreating}, Region: "us-east-1", NodeCount: 1}).(*domain.Service)
	n := f.put(domain.NewNode(svc, 0, "us-east-1b", time.Now())).(*domain.Node)
	f.once()
	if got := get[domain.Node](f, n.ID); got.StateInfo == nil || !strings.Contains(got.StateInfo.Cause, "us-east-1 has 0 healthy AZs; a 1-node service needs 1") {
		t.Errorf("node without a healthy host: state info = %+v, want the placement's reason", got.StateInfo)
	}
	if err := fleettest.Register(t.Context(), f.store, domain.Catalog{}, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.once()
	// The fake provider refuses every node: reaching it means a host was
	// chosen.
	if got := get[domain.Node](f, n.ID); got.StateInfo == nil || !strings.Contains(got.StateInfo.Cause, "no nodes here") {
		t.Errorf("node with hosts registered: state info = %+v, want the provider's refusal", got.StateInfo)
	}
}

// TestLateHostMarkedOnTime: a running reconciler marks a silent host
// down as its heartbeat turns late, not at its next resync (a minute
// here): detection costs the host timeout, not the timeout plus a
// resync period.
func TestLateHostMarkedOnTime(t *testing.T) {
	t.Parallel()
	p := domain.DefaultFailoverPolicy()
	p.HeartbeatInterval, p.Lease, p.LeaseMargin, p.HostTimeout = 300*time.Millisecond, time.Second, 100*time.Millisecond, 1200*time.Millisecond
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Failover, c.Resync = p, time.Minute })
	h, err := domain.NewHost(domain.DefaultCatalog(), "h1", "us-east-1", "us-east-1a", 0, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	beat := time.Now()
	if _, err := h.Heartbeat("v1", beat); err != nil {
		t.Fatal(err)
	}
	f.put(h)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- f.rec.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for get[domain.Host](f, h.ID).State != domain.StateDown {
		if time.Since(beat) > 20*time.Second {
			t.Fatal("silent host not marked down within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(beat); took < p.HostTimeout || took > p.HostTimeout+time.Second {
		t.Errorf("host marked down %v after its last heartbeat, want just past the host timeout %v", took, p.HostTimeout)
	}
}

// TestDeafControlPlaneBlamesNoHost: when the control plane hears no host
// at all (its own stall, its store blocking the heartbeats' writes), no
// host is marked down; once heartbeats arrive again, a host still silent
// is marked down a whole host timeout after the deafness ended, not at
// once.
func TestDeafControlPlaneBlamesNoHost(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&start)
	at := func(d time.Duration) { t := start.Add(d); clock.Store(&t) }
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Now = func() time.Time { return *clock.Load() } })
	p := domain.DefaultFailoverPolicy()
	var hs []*domain.Host
	for _, name := range []string{"h1", "h2", "h3"} {
		h, err := domain.NewHost(domain.DefaultCatalog(), name, "us-east-1", "us-east-1a", 0, nil, start.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Heartbeat("v1", start); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, f.put(h).(*domain.Host))
	}
	beat := func(h *domain.Host, d time.Duration) {
		cur := get[domain.Host](f, h.ID)
		if _, err := cur.Heartbeat("v1", start.Add(d)); err != nil {
			t.Fatal(err)
		}
		f.put(cur)
	}
	state := func(h *domain.Host) string { return get[domain.Host](f, h.ID).State }
	// Nobody heard for 10 s (every host past the timeout): deaf, no host down.
	at(10 * time.Second)
	f.mustOnce()
	for _, h := range hs {
		if state(h) != domain.StateActive {
			t.Errorf("%s = %s after the control plane heard no host for 10 s, want active", h.Name, state(h))
		}
	}
	// h1 and h2 are heard again; h3 stays silent: down only a host timeout
	// after the deafness ended.
	beat(hs[0], 10500*time.Millisecond)
	beat(hs[1], 10500*time.Millisecond)
	at(11 * time.Second)
	f.mustOnce()
	if state(hs[2]) != domain.StateActive {
		t.Errorf("h3 = %s right after the deafness, want active", state(hs[2]))
	}
	beat(hs[0], 11*time.Second+p.HostTimeout)
	beat(hs[1], 11*time.Second+p.HostTimeout)
	at(11*time.Second + p.HostTimeout + time.Millisecond)
	f.mustOnce()
	if state(hs[2]) != domain.StateDown || state(hs[0]) != domain.StateActive {
		t.Errorf("h1 %s, h3 %s a host timeout after the deafness, want active and down", state(hs[0]), state(hs[2]))
	}
}
