package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// A replica whose desired role becomes primary is promoted in place:
// configuration reloaded (no restart), then promoted, then bootstrapped
// as a primary.
func TestApplyPromotesInPlace(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.Role, want.Upstream, want.PrimaryAddress, want.PrimaryName = apitype.RoleReplica, "nod-0", "198.18.0.9", "nod-0.svc"
	want.TLS.ReplCertPEM, want.TLS.ReplKeyPEM, want.TLS.ProjectCAPEM = "rc", "rk", "ca"
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.recovering = true
	h.mu.Unlock()
	want.Role, want.Upstream, want.PrimaryAddress, want.PrimaryName = apitype.RolePrimary, "", "", ""
	want.SyncStandbyNames = `ANY 1 ("nod-2")`
	ops, err := applyOps(t, n, h, want)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ops, opStop) || slices.Contains(ops, opStart) {
		t.Errorf("promotion did %v: want no restart", ops)
	}
	before(t, ops, opReload, opPromote)
	before(t, ops, opPromote, opBootstrap)
}

// A fenced node: its firewall admits no one, then its server stops, and
// the worker never restarts it; its report says fenced.
func TestFencedNodeStaysDown(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	want.Role = apitype.RoleFenced
	n.set(want, n.rev+1, false)
	h.take()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.run(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, _ := n.currentReport()
		if rep.Replication != nil && rep.Replication.Fenced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fenced report: %+v", rep)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * superviseEvery) // a supervise tick would restart it
	cancel()
	<-done
	ops := h.take()
	before(t, ops, opFirewall, opStop)
	if slices.Contains(ops, opStart) {
		t.Errorf("fenced node operations %v: want no start", ops)
	}
	h.mu.Lock()
	allowed, refused := h.allowed[fakeNS], h.refused[fakeNS]
	h.mu.Unlock()
	if len(allowed) != 0 || !refused {
		t.Errorf("fenced firewall admits %v, refuses %v; want no one, refusing", allowed, refused)
	}
	if rep, _ := n.currentReport(); rep.State != apitype.NodeReportFailed || rep.Replication.Up {
		t.Errorf("fenced report = %+v, want failed and down", rep)
	}
}

// A primary under a lease that ran out has its firewall closed (its
// server keeps running); when the control plane answers again the node
// is applied again and its firewall re-opened.
func TestLeaseFencesPrimary(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.LeaseMillis, want.LeaseSeconds = 1500, 1
	n.a.contact.Store(time.Now().Add(-1200 * time.Millisecond).UnixNano())
	if n.leaseExpired(want) {
		t.Fatal("lease of 1.5 s expired 1.2 s after the last report (lease_ms must win over lease_seconds)")
	}
	n.a.contact.Store(time.Now().Add(-2 * time.Second).UnixNano())
	if !n.leaseExpired(want) {
		t.Fatal("lease not expired 2 s after the last report")
	}
	if err := n.fence(context.Background(), want, 1, false); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(h.take(), opStop) {
		t.Error("a lease fence stopped the server")
	}
	h.mu.Lock()
	allowed, refused := h.allowed[fakeNS], h.refused[fakeNS]
	h.mu.Unlock()
	if len(allowed) != 0 || !refused {
		t.Errorf("lease fence: firewall admits %v, refuses %v; want no one, refusing", allowed, refused)
	}
	n.a.renew(time.Now())
	if n.leaseExpired(want) {
		t.Error("lease expired right after a report")
	}
	n.a.renew(time.Now().Add(-time.Hour))
	if n.leaseExpired(want) {
		t.Error("an older report's answer took the lease back")
	}
	want.Role = apitype.RoleReplica
	if n.leaseExpired(want) {
		t.Error("a replica has no lease")
	}
	want.Role, want.LeaseMillis = apitype.RolePrimary, 0
	n.a.contact.Store(time.Now().Add(-1500 * time.Millisecond).UnixNano())
	if !n.leaseExpired(want) {
		t.Error("an agent given lease_seconds alone ignored it")
	}
}

// The worker fences a primary as its lease runs out, not at its next
// supervise tick (the control plane counts only the lease's margin, 0.4 s
// by default, for the agent's delay), and re-opens it once a report is
// acknowledged again.
func TestLeaseFencesOnTime(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.LeaseMillis = 1300
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	open := func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.allowed[fakeNS]) > 0
	}
	if !open() {
		t.Fatal("firewall closed after the apply")
	}
	n.set(want, n.rev, false)
	// The lease runs out 0.3 s after the first supervise tick: a worker
	// that fenced on ticks would be 0.7 s late.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done
	}()
	renewed := time.Now()
	n.a.renew(renewed)
	go func() {
		defer close(done)
		n.run(ctx)
	}()
	for open() {
		if time.Since(renewed) > 5*time.Second {
			t.Fatal("lease of 1.3s: firewall still open after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if late := time.Since(renewed) - 1300*time.Millisecond; late < 0 || late > 300*time.Millisecond {
		t.Errorf("firewall closed %v after the lease ran out, want at once", late)
	}
	n.a.renew(time.Now())
	n.wake()
	for !open() {
		if time.Since(renewed) > 10*time.Second {
			t.Fatal("firewall not re-opened after the lease was renewed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.mu.Lock()
	refused := h.refused[fakeNS]
	h.mu.Unlock()
	if refused {
		t.Error("the re-opened firewall refuses: an allowlist drops what it does not admit")
	}
}

// A fenced node whose volume lost its key: its PostgreSQL, which Stop
// cannot find (postmaster.pid is on the dead volume), is killed with
// everything else running on the volume, after the firewall closed.
func TestFenceOnLostVolume(t *testing.T) {
	t.Parallel()
	n, h := fakeVolumeNode(t)
	want := fakeDesired()
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	h.killVolumeServers()
	h.take()
	want.Role = apitype.RoleFenced
	if err := n.fence(context.Background(), want, 2, true); err != nil {
		t.Fatal(err)
	}
	ops := h.take()
	before(t, ops, opFirewall, opKillUsers)
	if slices.Contains(ops, opStart) {
		t.Errorf("fence on a lost volume did %v: want no start", ops)
	}
	// Every supervision fences again; nothing starts on the volume, so
	// its processes are killed once.
	if err := n.fence(context.Background(), want, 2, true); err != nil {
		t.Fatal(err)
	}
	if ops := h.take(); slices.Contains(ops, opKillUsers) || slices.Contains(ops, opStart) {
		t.Errorf("fence again on a lost volume did %v: want neither a kill nor a start", ops)
	}
}

// A switchover's demoted primary: its server stops (a fast shutdown,
// firewall left as it is) and stays stopped; its report says fenced and
// down with the shutdown checkpoint as its position; when the role goes
// back to primary (the switchover re-opened) the server starts again.
func TestDemotedNodeStopsAndReopens(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	allowedBefore := slices.Clone(h.allowed[fakeNS])
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.run(ctx)
	}()
	defer func() { cancel(); <-done }()
	waitReport := func(what string, ok func(apitype.NodeReport) bool) apitype.NodeReport {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rep, _ := n.currentReport()
			if ok(rep) {
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s report: %+v (replication %+v)", what, rep, rep.Replication)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	want.Role, want.Switchover = apitype.RoleDemoted, true
	h.take()
	n.set(want, n.rev+1, false)
	rep := waitReport("demoted", func(r apitype.NodeReport) bool { return r.Replication != nil && r.Replication.Fenced })
	if rep.Replication.Up || rep.Replication.ReceivedLSN != "0/3000100" || rep.State != apitype.NodeReportRunning {
		t.Errorf("demoted report = %+v (replication %+v), want running, down, at the shutdown checkpoint 0/3000100", rep, rep.Replication)
	}
	time.Sleep(2 * superviseEvery) // a supervise tick would restart it
	ops := h.take()
	if !slices.Contains(ops, opStop) || slices.Contains(ops, opStart) {
		t.Errorf("demoted node operations %v: want a stop and no start", ops)
	}
	h.mu.Lock()
	allowed := slices.Clone(h.allowed[fakeNS])
	h.mu.Unlock()
	if !slices.Equal(allowed, allowedBefore) {
		t.Errorf("demoted node's firewall admits %v, want %v as before", allowed, allowedBefore)
	}
	want.Role, want.Switchover = apitype.RolePrimary, false
	n.set(want, n.rev+1, false)
	waitReport("re-opened", func(r apitype.NodeReport) bool {
		return r.Replication != nil && r.Replication.Up && !r.Replication.Fenced
	})
	if !slices.Contains(h.take(), opStart) {
		t.Error("re-opened primary not started")
	}
}

// A replica reports streaming only once the same WAL receiver was seen
// streaming twice: one that cannot follow its upstream restarts every
// 5 s and fails at once, and a sample of it between start and failure is
// no stream (the control plane would count a replica that never follows).
func TestStreamingNeedsASteadyReceiver(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.Role, want.Upstream, want.PrimaryAddress, want.PrimaryName = apitype.RoleReplica, "nod-0", "198.18.0.9", "nod-0.svc"
	want.TLS.ReplCertPEM, want.TLS.ReplKeyPEM, want.TLS.ProjectCAPEM = "rc", "rk", "ca"
	h.mu.Lock()
	h.recovering = true
	h.mu.Unlock()
	if _, err := applyOps(t, n, h, want); err != nil {
		t.Fatal(err)
	}
	n.upstream = want.Upstream // as applyAndReport records it
	streaming := func(pid int) bool {
		h.mu.Lock()
		h.receiverPID, h.streaming = pid, pid != 0
		h.mu.Unlock()
		n.observe(context.Background(), false)
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.repl == nil {
			t.Fatal("no replication observed")
		}
		return n.repl.Streaming
	}
	// A receiver restarted at every sample never streams.
	for pid := 100; pid < 105; pid++ {
		if streaming(pid) {
			t.Fatalf("receiver %d seen once reported streaming", pid)
		}
	}
	// Meanwhile it is reported not streaming since the first sample.
	n.mu.Lock()
	since := n.repl.NotStreamingSince
	n.mu.Unlock()
	if since == nil || time.Since(*since) > time.Minute {
		t.Errorf("not_streaming_since = %v after five samples without a stream, want the first's time", since)
	}
	// The same one twice does.
	if !streaming(104) {
		t.Error("receiver 104 seen streaming twice: not reported streaming")
	}
	n.mu.Lock()
	if n.repl.NotStreamingSince != nil {
		t.Errorf("not_streaming_since = %v while it streams, want none", n.repl.NotStreamingSince)
	}
	n.mu.Unlock()
	if streaming(0) {
		t.Error("no receiver: reported streaming")
	}
}
