package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/testenv"
)

// The apply's ordering invariants (see node.apply), on fakes: no root,
// no PostgreSQL. The root tier (agent_test.go) checks the same on real
// namespaces, nftables and servers.

const fakeNS = "moat-fake"

// fakeNode returns a node of a new agent on a fake host.
func fakeNode(t *testing.T) (*node, *fakeHost) {
	t.Helper()
	h := newFakeHost()
	dir := t.TempDir()
	a := newAgent(Config{Host: "h", Source: newFakeSource("h"), DataDir: dir, NoSync: true}, h.platform())
	if err := mkdir0711(a.nodesDir); err != nil {
		t.Fatal(err)
	}
	return newNode(a, "nod-1"), h
}

func fakeDesired() apitype.NodeDesired {
	return apitype.NodeDesired{
		NodeID: "nod-1", ServiceID: "svc-1", Role: apitype.RolePrimary, State: stateCreating,
		Namespace: fakeNS, Address: "198.18.0.1", Port: 5432,
		TLS:     apitype.NodeTLS{CertPEM: "cert", KeyPEM: "key"},
		AllowV4: []string{"192.0.2.1/32"}, AllowlistRevision: 1, AdminVerifier: "verifier",
	}
}

// applyOps applies want and returns the operations it did, in order.
func applyOps(t *testing.T, n *node, h *fakeHost, want apitype.NodeDesired) ([]string, error) {
	t.Helper()
	h.take()
	err := n.apply(context.Background(), want, n.rev+1)
	n.rev++
	return h.take(), err
}

func mustApply(t *testing.T, n *node, h *fakeHost, want apitype.NodeDesired, wantOps ...string) {
	t.Helper()
	ops, err := applyOps(t, n, h, want)
	if err != nil {
		t.Fatalf("apply: %v (operations %v)", err, ops)
	}
	if !slices.Equal(ops, wantOps) {
		t.Fatalf("apply did %v, want %v", ops, wantOps)
	}
}

// before fails t unless a comes before b in ops, both present.
func before(t *testing.T, ops []string, a, b string) {
	t.Helper()
	i, j := slices.Index(ops, a), slices.Index(ops, b)
	if i < 0 || j < 0 || i > j {
		t.Errorf("operations %v: want %s before %s", ops, a, b)
	}
}

var errFake = errors.New("injected failure")

// A new node: the firewall enforces the allowlist before anything of
// PostgreSQL happens, so the server first starts behind it.
func TestApplyNewNodeFirewallFirst(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	ops, err := applyOps(t, n, h, fakeDesired())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword}
	if !slices.Equal(ops, want) {
		t.Fatalf("new node: apply did %v, want %v", ops, want)
	}
	before(t, ops, opFirewall, opStart)
	if got := h.allowed[fakeNS]; len(got) != 1 || got[0] != netip.MustParsePrefix("192.0.2.1/32") {
		t.Errorf("firewall allows %v, want 192.0.2.1/32", got)
	}
	// The same desired state again (a new revision): every step sees its
	// input unchanged and does nothing.
	mustApply(t, n, h, fakeDesired())
}

// Narrowing the allowlist: the firewall first, then pg_hba, the reload,
// and only then are the revoked sessions cut.
func TestApplyNarrowAllowlist(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	want.State, want.AllowV4, want.AllowlistRevision = stateRunning, []string{"192.0.2.2/32"}, 2
	mustApply(t, n, h, want, opFirewall, opHBA, opReload, opTerminate)
}

// A detach or a move changes the node's address but may leave its
// allowed sources covering the old ones (0.0.0.0/0): the sessions are
// still cut to those on the new address.
func TestApplyAddressChangeCutsSessions(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.AllowV4 = []string{"0.0.0.0/0"}
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	want.State, want.Address = stateRunning, "198.18.0.9"
	ops, err := applyOps(t, n, h, want)
	if err != nil || !slices.Contains(ops, opTerminate) {
		t.Fatalf("address change: apply = %v doing %v, want sessions cut", err, ops)
	}
	h.mu.Lock()
	last := h.cut[len(h.cut)-1]
	h.mu.Unlock()
	if !slices.Equal(last.Local, []netip.Addr{netip.MustParseAddr("198.18.0.9")}) || !slices.Equal(last.Allowed, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}) {
		t.Errorf("sessions kept to %+v, want sources 0.0.0.0/0 to 198.18.0.9 only", last)
	}
}

// A failing firewall ends the apply: PostgreSQL is neither started nor
// given the new access, and the next apply tries the firewall again.
func TestApplyFirewallFailure(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()

	h.setFail(opFirewall, errFake)
	ops, err := applyOps(t, n, h, want)
	if !errors.Is(err, errFake) || !slices.Equal(ops, []string{opFirewall}) {
		t.Fatalf("new node, firewall failing: apply = %v doing %v, want the firewall's error doing only %s", err, ops, opFirewall)
	}
	if h.isRunning(n.dataDir()) {
		t.Fatalf("postgres runs though the firewall failed")
	}
	h.setFail(opFirewall, nil)
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)

	// On a running node: the new access reaches neither pg_hba nor the
	// server.
	old := want
	want.State, want.AllowV4, want.AllowlistRevision = stateRunning, []string{"192.0.2.0/24"}, 2
	h.setFail(opFirewall, errFake)
	ops, err = applyOps(t, n, h, want)
	if !errors.Is(err, errFake) || !slices.Equal(ops, []string{opFirewall}) {
		t.Fatalf("allowlist change, firewall failing: apply = %v doing %v, want the firewall's error doing only %s", err, ops, opFirewall)
	}
	// What the failed transaction left is unknown: going back to the old
	// policy writes the firewall again.
	h.setFail(opFirewall, nil)
	mustApply(t, n, h, old, opFirewall)
	mustApply(t, n, h, want, opFirewall, opHBA, opReload, opTerminate)
}

// A change that needs a restart stops the old server after the firewall
// enforces the new policy and before the new configuration is written;
// one that does not (a new certificate) reloads.
func TestApplyRestart(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	want.Port = 6432
	mustApply(t, n, h, want, opFirewall, opStop, opInit, opHBA, opStart, opTerminate, opBootstrap)
	want.TLS.CertPEM = "renewed"
	mustApply(t, n, h, want, opInit, opHBA, opReload, opTerminate, opBootstrap)
	// Each new instance replaced the last, closed.
	if k := h.openInstances(); k != 1 {
		t.Errorf("%d instances open, want the last one only", k)
	}
}

// A tenant's settings change on a running node: the configuration is
// written with the new value and the server reloads it, never restarts
// (not even for one that needs a restart: the control plane sends those
// only to new nodes). Moat's own settings win over a tenant's.
func TestApplyTenantSettingsReload(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	want.Settings = map[string]string{"work_mem": "8MB"}
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	want.State = stateRunning
	want.Settings = map[string]string{"work_mem": "8MB", "statement_timeout": "30s", "max_connections": "300"}
	mustApply(t, n, h, want, opInit, opHBA, opReload, opTerminate, opBootstrap)
	h.mu.Lock()
	got := h.written[n.dataDir()]
	h.mu.Unlock()
	for k, v := range want.Settings {
		if got[k] != v {
			t.Errorf("written %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	// The agent's no-sync settings (Moat's) win over a tenant's value.
	if got["fsync"] != "off" {
		t.Errorf("written fsync = %q, want Moat's off", got["fsync"])
	}
	want.Settings = map[string]string{"fsync": "on", "statement_timeout": "30s"}
	mustApply(t, n, h, want, opInit, opHBA, opReload, opTerminate, opBootstrap)
	h.mu.Lock()
	got = h.written[n.dataDir()]
	h.mu.Unlock()
	if got["fsync"] != "off" || got["work_mem"] != "" {
		t.Errorf("written %v, want fsync off (Moat's) and work_mem removed", got)
	}
}

// A namespace recreated under the same name: the firewall is written in
// the new one before PostgreSQL restarts inside it.
func TestApplyNamespaceRecreated(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	want := fakeDesired()
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	h.recreate(fakeNS)
	if !n.nsChanged() {
		t.Fatalf("nsChanged() = false after the namespace was recreated")
	}
	// The old namespace's firewall is closed before the new one's is
	// written.
	mustApply(t, n, h, want, opCloseNet, opFirewall, opStop, opInit, opHBA, opStart, opTerminate, opBootstrap)
	if n.nsChanged() {
		t.Errorf("nsChanged() = true after the node was applied in the new namespace")
	}
	if k := h.openNetworks(); k != 1 {
		t.Errorf("%d networks open, want the new one only", k)
	}
}

// A failed step is redone by the next apply, with the steps after it, and
// none before it.
func TestApplyRetriesFailedStep(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fail  string
		first []string // operations of the failing apply
		retry []string // of the next one
	}{
		{opReload, []string{opFirewall, opHBA, opReload}, []string{opReload, opTerminate}},
		{opTerminate, []string{opFirewall, opHBA, opReload, opTerminate}, []string{opTerminate}},
		{opHBA, []string{opFirewall, opHBA}, []string{opHBA, opReload, opTerminate}},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			n, h := fakeNode(t)
			want := fakeDesired()
			mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
			want.AllowV4 = []string{"192.0.2.9/32"}
			h.setFail(tc.fail, errFake)
			ops, err := applyOps(t, n, h, want)
			if !errors.Is(err, errFake) || !slices.Equal(ops, tc.first) {
				t.Fatalf("%s failing: apply = %v doing %v, want the error doing %v", tc.fail, err, ops, tc.first)
			}
			h.setFail(tc.fail, nil)
			mustApply(t, n, h, want, tc.retry...)
		})
	}
}

// A wipe cancels the node's tasks and waits for them, then stops
// PostgreSQL, then removes its files, then closes the firewall, leaving
// its table in force (the provider deletes the namespace). Applied again, the node is created
// from scratch, firewall first.
func TestWipeOrder(t *testing.T) {
	testenv.CheckGoroutines(t)
	n, h := fakeNode(t)
	want := fakeDesired()
	want.Tasks = []apitype.NodeTask{{ID: "tsk-1", Type: apitype.TaskBaseBackup}}
	mustApply(t, n, h, want, opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.startTasks(ctx, want)
	select {
	case <-h.taskStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not start")
	}
	h.take()
	if err := n.wipe(ctx); err != nil {
		t.Fatal(err)
	}
	ops := h.take()
	if want := []string{opTaskCancel, opStop, opWipe, opCloseNet}; !slices.Equal(ops, want) {
		t.Fatalf("wipe did %v, want %v", ops, want)
	}
	if k, l := h.openNetworks(), h.openInstances(); k != 0 || l != 0 {
		t.Errorf("%d networks and %d instances open after the wipe, want none", k, l)
	}
	if _, err := os.Stat(n.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node directory after the wipe: %v, want it gone", err)
	}
	if len(h.allowed[fakeNS]) == 0 {
		t.Errorf("the wipe removed the firewall's policy")
	}
	if rep, _ := n.currentReport(); len(rep.Tasks) != 0 {
		t.Errorf("a cancelled task reported: %+v", rep.Tasks)
	}
	mustApply(t, n, h, fakeDesired(), opFirewall, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
}

// A restore is done (its marker written, its keys dropped) only after the
// checkpoint on the new timeline succeeded: a server still in recovery,
// one that does not answer and a failing checkpoint all leave it
// undone, and the next try checkpoints again.
func TestPromotedCheckpoints(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	if err := os.MkdirAll(n.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	n.sock.restore = &archive.Config{Service: "svc-source"} // the restore's keys, served to wal-fetch
	hasKeys := func() bool {
		n.sock.mu.Lock()
		defer n.sock.mu.Unlock()
		return n.sock.restore != nil
	}
	inst, err := n.bareInstance()
	if err != nil {
		t.Fatal(err)
	}
	n.inst = inst
	h.running[n.dataDir()] = true
	marker := filepath.Join(n.dir, restoredMarker)
	undone := func(what string, err error, wantWaiting bool) {
		t.Helper()
		if err == nil || errors.Is(err, errWaiting) != wantWaiting {
			t.Errorf("%s: promoted() = %v, want an error (waiting: %v)", what, err, wantWaiting)
		}
		if exists(marker) {
			t.Fatalf("%s: the restore is marked done", what)
		}
		if !hasKeys() {
			t.Fatalf("%s: the restore's keys were dropped", what)
		}
	}

	h.recovering = true
	undone("in recovery", n.promoted(context.Background()), true)
	h.recovering = false
	h.setFail(opInRecovery, errFake)
	undone("no connection", n.promoted(context.Background()), true)
	h.setFail(opInRecovery, nil)
	h.setFail(opCheckpoint, errFake)
	h.take()
	undone("checkpoint failing", n.promoted(context.Background()), false)
	h.setFail(opCheckpoint, nil)
	if err := n.promoted(context.Background()); err != nil {
		t.Fatalf("promoted() = %v, want nil once the checkpoint succeeds", err)
	}
	if ops := h.take(); !slices.Equal(ops, []string{opCheckpoint, opCheckpoint}) {
		t.Errorf("operations %v, want the failed checkpoint then another", ops)
	}
	if !exists(marker) || hasKeys() {
		t.Errorf("after the checkpoint: marker %v, restore keys %v; want the marker and no keys", exists(marker), hasKeys())
	}
}

// runFakeAgent runs an agent on h, following src, until the returned stop
// function is called (or t ends); stop returns once Run returned.
func runFakeAgent(t *testing.T, h *fakeHost, src *fakeSource) (stop func()) {
	t.Helper()
	return runFakeAgentIn(t, h, src, t.TempDir())
}

// runFakeAgentIn is runFakeAgent with its data directory dir.
func runFakeAgentIn(t *testing.T, h *fakeHost, src *fakeSource, dir string) (stop func()) {
	t.Helper()
	a := newAgent(Config{Host: "h", Source: src, DataDir: dir, NoSync: true, Logger: testLogger(t)}, h.platform())
	if err := mkdir0711(a.nodesDir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10s after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// startTaskNode runs a node with a long task on a fake agent and waits
// until the task runs.
func startTaskNode(t *testing.T) (*fakeHost, *fakeSource, func()) {
	t.Helper()
	h, src := newFakeHost(), newFakeSource("h")
	want := fakeDesired()
	want.Tasks = []apitype.NodeTask{{ID: "tsk-1", Type: apitype.TaskBaseBackup}}
	src.update(func(d *apitype.HostDesired) { d.Nodes = []apitype.NodeDesired{want} })
	stop := runFakeAgent(t, h, src)
	src.waitReport(t, want.NodeID, 10*time.Second, running(want.AllowlistRevision))
	select {
	case <-h.taskStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not start")
	}
	return h, src, stop
}

// A node deleted while its base backup runs: the backup is cancelled
// before the server stops, and the node is wiped.
func TestAgentWipeCancelsTasks(t *testing.T) {
	testenv.CheckGoroutines(t)
	h, src, stop := startTaskNode(t)
	h.take()
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateDeleting })
	src.waitReport(t, "nod-1", 10*time.Second, func(r apitype.NodeReport) bool {
		return r.State == apitype.NodeReportWiped && r.Revision == rev
	})
	ops := h.take()
	before(t, ops, opTaskCancel, opStop)
	before(t, ops, opStop, opWipe)
	before(t, ops, opWipe, opCloseNet)
	stop()
	if k, l := h.openNetworks(), h.openInstances(); k != 0 || l != 0 {
		t.Errorf("%d networks and %d instances open after the agent stopped, want none", k, l)
	}
}

// An agent that stops cancels its nodes' tasks and closes their
// firewalls, and Run returns once they returned (leaving the server
// running and the firewall's table in force: fail-static).
func TestAgentStopCancelsTasks(t *testing.T) {
	testenv.CheckGoroutines(t)
	h, _, stop := startTaskNode(t)
	h.take()
	stop()
	if ops, want := h.take(), []string{opTaskCancel, opCloseNet}; !slices.Equal(ops, want) {
		t.Errorf("agent stopped: operations %v, want %v", ops, want)
	}
	if k, l := h.openNetworks(), h.openInstances(); k != 0 || l != 0 {
		t.Errorf("%d networks and %d instances open after the agent stopped, want none", k, l)
	}
	if len(h.allowed[fakeNS]) == 0 {
		t.Errorf("the agent's stop removed the firewall's policy")
	}
	for dir, up := range h.running {
		if !up {
			t.Errorf("the agent's stop stopped the server of %s", dir)
		}
	}
}

// fakeVolumeNode returns a node of a new agent, on a fake host, that
// gives nodes volumes.
func fakeVolumeNode(t *testing.T) (*node, *fakeHost) {
	t.Helper()
	n, h := fakeNode(t)
	n.a.cfg.VolumeSize = 1 << 30
	return n, h
}

// With volumes, a new node's volume is made after the firewall and
// before any file of PostgreSQL is written or its server started; an
// apply of the same node adopts it; a wipe destroys it after the server
// stopped and its files were removed.
func TestApplyVolumeOrder(t *testing.T) {
	t.Parallel()
	n, h := fakeVolumeNode(t)
	want := fakeDesired()
	ops, err := applyOps(t, n, h, want)
	if err != nil {
		t.Fatal(err)
	}
	if w := []string{opFirewall, opVolume, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword}; !slices.Equal(ops, w) {
		t.Fatalf("new node with a volume: apply did %v, want %v", ops, w)
	}
	before(t, ops, opFirewall, opVolume)
	before(t, ops, opVolume, opInit)
	before(t, ops, opVolume, opStart)
	if got, w := n.dataDir(), filepath.Join(n.a.volumesDir, "nod-1", "pgdata"); got != w {
		t.Errorf("data directory %s, want %s (on the volume)", got, w)
	}
	mustApply(t, n, h, want)

	// A restarted agent's node finds its volume served: adopted, not made
	// again; the rest of the apply is that of an existing node.
	n2 := newNode(n.a, "nod-1")
	h.running[n.dataDir()] = true
	mustApply(t, n2, h, want, opFirewall, opInit, opHBA, opReload, opTerminate, opBootstrap, opPassword)

	h.take()
	if err := n2.wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, w := h.take(), []string{opStop, opWipe, opDestroyVol, opCloseNet}; !slices.Equal(got, w) {
		t.Fatalf("wipe did %v, want %v", got, w)
	}
}

// A failing volume ends the apply before PostgreSQL: nothing is
// written or started.
func TestApplyVolumeFailure(t *testing.T) {
	t.Parallel()
	n, h := fakeVolumeNode(t)
	h.setFail(opVolume, errFake)
	ops, err := applyOps(t, n, h, fakeDesired())
	if !errors.Is(err, errFake) {
		t.Fatalf("apply: %v, want the volume's failure", err)
	}
	if w := []string{opFirewall, opVolume}; !slices.Equal(ops, w) {
		t.Fatalf("apply did %v, want %v", ops, w)
	}
	h.setFail(opVolume, nil)
	mustApply(t, n, h, fakeDesired(), opVolume, opInit, opHBA, opStart, opTerminate, opBootstrap, opPassword)
}

// A node whose volume's server is gone has lost its key: it is reported
// failed at once, saying so, even while being created; nothing of
// PostgreSQL is tried. A full volume is reported as the node's state.
func TestVolumeLostAndFull(t *testing.T) {
	t.Parallel()
	n, h := fakeVolumeNode(t)
	want := fakeDesired()
	n.set(want, 1, false)
	n.applyAndReport(context.Background(), want, 1)
	rep, ok := n.currentReport()
	if !ok || rep.State != apitype.NodeReportRunning {
		t.Fatalf("report %+v, want running", rep)
	}
	if rep.Volume == nil || rep.Volume.Format != "LUKS2" || rep.Volume.Size != 1<<30 {
		t.Errorf("report's volume %+v, want the volume's", rep.Volume)
	}

	h.setFull(true)
	n.supervise(context.Background(), want, 1)
	if rep, _ := n.currentReport(); rep.State != apitype.NodeReportFailed || rep.Message != volumeFullMessage || !rep.Volume.Full {
		t.Errorf("full volume: report %+v (volume %+v), want failed, %q", rep, rep.Volume, volumeFullMessage)
	}
	h.setFull(false)
	n.supervise(context.Background(), want, 1)
	if rep, _ := n.currentReport(); rep.State != apitype.NodeReportRunning {
		t.Errorf("volume no longer full: report %+v, want running", rep)
	}

	h.killVolumeServers()
	h.take()
	n.supervise(context.Background(), want, 1)
	rep, _ = n.currentReport()
	if rep.State != apitype.NodeReportFailed || rep.Message != errVolumeLost.Error() || rep.Volume == nil || !rep.Volume.Lost {
		t.Errorf("volume server gone: report %+v (volume %+v), want failed: %v, the volume lost", rep, rep.Volume, errVolumeLost)
	}
	for _, op := range h.take() {
		if op != opFirewall {
			t.Errorf("volume lost: the apply did %s", op)
		}
	}
	// A new node on a lost volume (the agent restarted): failed at once.
	n2 := newNode(n.a, "nod-1")
	n2.set(want, 2, false)
	n2.applyAndReport(context.Background(), want, 2)
	if rep, _ := n2.currentReport(); rep.State != apitype.NodeReportFailed || rep.Volume == nil || !rep.Volume.Lost {
		t.Errorf("creating node on a lost volume: report %+v (volume %+v), want failed at once, the volume lost", rep, rep.Volume)
	}
	h.take()
	if err := n2.wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Wiping it kills what runs on the volume (a PostgreSQL that
	// Stop cannot find) and destroys the volume.
	if ops := h.take(); !slices.Contains(ops, opDestroyVol) || !slices.Contains(ops, opKillUsers) {
		t.Errorf("wipe of a lost volume's node did %v, want the processes on it killed and the volume destroyed", ops)
	}
}

// An agent whose desired state leaves out its nodes without naming them
// deleted (a wrong --host, an empty answer) wipes nothing: the node keeps
// running, an unknown node directory stays. Named deleted, both go.
func TestAgentKeepsNodesNotNamedDeleted(t *testing.T) {
	testenv.CheckGoroutines(t)
	h, src := newFakeHost(), newFakeSource("h")
	dir := t.TempDir()
	stray := filepath.Join(dir, "nodes", "nod-stray")
	if err := os.MkdirAll(filepath.Join(stray, "pgdata"), 0o700); err != nil {
		t.Fatal(err)
	}
	want := fakeDesired()
	src.update(func(d *apitype.HostDesired) { d.Nodes = []apitype.NodeDesired{want} })
	stop := runFakeAgentIn(t, h, src, dir)
	src.waitReport(t, want.NodeID, 10*time.Second, running(want.AllowlistRevision))
	h.take()

	// The desired state says nothing of either node, then names another.
	src.update(func(d *apitype.HostDesired) { d.Nodes = nil })
	other := fakeDesired()
	other.NodeID, other.Namespace = "nod-2", "moat-fake-2"
	src.update(func(d *apitype.HostDesired) { d.Nodes = []apitype.NodeDesired{other} })
	src.waitReport(t, other.NodeID, 10*time.Second, running(other.AllowlistRevision))
	for _, op := range h.take() {
		if op == opStop || op == opWipe {
			t.Errorf("a node not named deleted was stopped or wiped (%s)", op)
		}
	}
	nodeDir := filepath.Join(dir, "nodes", want.NodeID)
	if !exists(nodeDir) || !exists(stray) {
		t.Fatalf("node directories after a desired state without them: %s %v, %s %v; want both kept", nodeDir, exists(nodeDir), stray, exists(stray))
	}

	// A kept node's server that dies is started again; nothing is applied.
	pgdata := filepath.Join(nodeDir, "pgdata")
	h.mu.Lock()
	h.running[pgdata] = false
	h.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for !h.isRunning(pgdata) {
		if time.Now().After(deadline) {
			t.Fatal("the kept node's server was not restarted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ops := h.take(); !slices.Equal(ops, []string{opStart}) {
		t.Errorf("kept node whose server died: operations %v, want only %s", ops, opStart)
	}

	// Named deleted: both are wiped; the other node runs on.
	rev := src.update(func(d *apitype.HostDesired) { d.Deleted = []string{want.NodeID, "nod-stray"} })
	deadline = time.Now().Add(10 * time.Second)
	for exists(nodeDir) || exists(stray) {
		if time.Now().After(deadline) {
			t.Fatalf("nodes named deleted at revision %d not wiped: %s %v, %s %v", rev, nodeDir, exists(nodeDir), stray, exists(stray))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h.users.has(domain.NodeUser(want.NodeID)) || !h.users.has(domain.NodeUser(other.NodeID)) {
		t.Errorf("users after the wipe: %s %v, %s %v; want only the running node's",
			want.NodeID, h.users.has(domain.NodeUser(want.NodeID)), other.NodeID, h.users.has(domain.NodeUser(other.NodeID)))
	}
	stop()
}

// A node whose volume's server does not answer is lost: the supervision
// kills the server and reports the volume lost; a wipe does the same
// before it stops PostgreSQL (whose I/O would hang).
func TestVolumeHung(t *testing.T) {
	t.Parallel()
	for _, wipe := range []bool{false, true} {
		n, h := fakeVolumeNode(t)
		want := fakeDesired()
		n.set(want, 1, false)
		n.applyAndReport(context.Background(), want, 1)
		if rep, _ := n.currentReport(); rep.State != apitype.NodeReportRunning {
			t.Fatalf("report %+v, want running", rep)
		}
		file := n.volumeFile()
		h.mu.Lock()
		h.hung[file] = true
		h.mu.Unlock()
		if wipe {
			if err := n.wipe(context.Background()); err != nil {
				t.Fatalf("wipe with a hung volume server: %v", err)
			}
		} else {
			n.supervise(context.Background(), want, 1)
			if rep, _ := n.currentReport(); rep.State != apitype.NodeReportFailed || rep.Volume == nil || !rep.Volume.Lost {
				t.Errorf("hung volume server: report %+v (volume %+v), want failed, the volume lost", rep, rep.Volume)
			}
		}
		h.mu.Lock()
		served, hung := h.volumes[file], h.hung[file]
		h.mu.Unlock()
		if served || hung {
			t.Errorf("wipe %v: volume served %v, hung %v after the check; want its server killed", wipe, served, hung)
		}
	}
}
