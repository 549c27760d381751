package agent

import (
	"os/exec"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
)

// TestNamespaceGoneNothingApplied: a node's namespace deleted behind the
// agent's back (its PostgreSQL runs on inside it, unreachable) makes the
// node failed, and no report ever says an allowlist change made since is
// applied: applied means enforced.
func TestNamespaceGoneNothingApplied(t *testing.T) {
	t.Parallel()
	requirePostgres(t)
	ns := netnstest.New(t)
	dir := dataDir(t)
	cs := newCerts(t)
	const host, nodeID = "host-gone", "nod-gone"
	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{{
			NodeID: nodeID, ServiceID: "svc-gone", ProjectID: "prj-1", Role: apitype.RolePrimary, State: stateCreating,
			Namespace: ns.Name, Address: "198.18.0.1", Port: 5432,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS:     cs.node(t, nodeID, "gone.svc.test", "198.18.0.1"),
			AllowV4: []string{"192.0.2.1/32"}, AllowlistRevision: 1,
		}}
	})
	startAgent(t, Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true}, nil)
	src.waitReport(t, nodeID, 60*time.Second, running(1))
	// The control plane marks it running, as on its first report.
	rev := src.update(func(d *apitype.HostDesired) { d.Nodes[0].State = stateRunning })
	src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool { return r.Revision == rev && r.State == apitype.NodeReportRunning })

	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
	// The supervisor notices without a new desired state.
	src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool { return r.State == apitype.NodeReportFailed })

	// An allowlist change nothing can enforce.
	rev = src.update(func(d *apitype.HostDesired) {
		d.Nodes[0].AllowV4, d.Nodes[0].AllowlistRevision = []string{"192.0.2.2/32"}, 2
	})
	last := src.waitReport(t, nodeID, 30*time.Second, func(r apitype.NodeReport) bool {
		return r.Revision == rev && r.State == apitype.NodeReportFailed
	})
	if last.AllowlistRevision != 1 {
		t.Errorf("failed report claims allowlist revision %d, want 1 (the last enforced)", last.AllowlistRevision)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, r := range src.history[nodeID] {
		if r.AllowlistRevision >= 2 {
			t.Errorf("report %+v says allowlist revision 2 applied; its namespace is gone", r)
		}
	}
}
