package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/postgres"
)

// TestCutWhateverRemovedAccess follows each way a source loses its access
// from the control plane's records (desired.Compile, as the API serves a
// host) to the agent's session cut: an allowlist narrowed, the peering
// deleted, the peering lost in the cloud (active → failed), a detach and a
// move. After each, the sessions kept are only those the new access
// admits: the removed source, or the node's old address, is not among
// them. (TestTerminateSessionsByLocalAddress and TestNarrowAllowlist in
// internal/postgres check, on a real server, that TerminateSessions ends
// exactly the sessions its Access does not admit; TestDetachCutsSessions
// is the e2e of the detach.)
func TestCutWhateverRemovedAccess(t *testing.T) {
	t.Parallel()
	const peerClient, vpcClient = "172.31.4.4", "10.0.0.9"
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	type world struct {
		svc  *domain.Service
		vpcs map[string]*domain.VPC
		pcx  *domain.Peering
		addr string
	}
	start := func() world {
		return world{
			svc: &domain.Service{Meta: domain.Meta{ID: "svc-1", ProjectID: "proj-a", State: domain.StateRunning}, VPCID: "vpc-a",
				AllowedIPs: domain.DefaultAllowlist(), AllowlistRevision: 1},
			vpcs: map[string]*domain.VPC{
				"vpc-a": {Meta: domain.Meta{ID: "vpc-a", State: domain.StateActive}, CIDR: "10.0.0.0/17"},
				"vpc-b": {Meta: domain.Meta{ID: "vpc-b", State: domain.StateActive}, CIDR: "10.1.0.0/17"},
			},
			pcx: &domain.Peering{Meta: domain.Meta{ID: "pcx-1", ProjectID: "proj-a", State: domain.StateActive}, VPCID: "vpc-a",
				PeerCIDRs: []string{"172.31.0.0/16"}},
			addr: "10.0.0.5",
		}
	}
	compile := func(t *testing.T, w world) apitype.NodeDesired {
		t.Helper()
		n := &domain.Node{Meta: domain.Meta{ID: "nod-1", ProjectID: "proj-a", State: domain.StateRunning}, ServiceID: w.svc.ID,
			Host: "h", Namespace: fakeNS, Address: w.addr, CertPEM: "cert", KeySealed: []byte("k"), ReplCertPEM: "rcert", ReplKeySealed: []byte("r")}
		hd, err := desired.Compile(desired.Input{
			Host: "h", Revision: 1, Zone: "moat.test", Nodes: []*domain.Node{n},
			Services: map[string]*domain.Service{w.svc.ID: w.svc},
			Projects: map[string]*domain.Project{"proj-a": {Meta: domain.Meta{ID: "proj-a"}, CACertPEM: "ca"}},
			VPCs:     w.vpcs, Peerings: []*domain.Peering{w.pcx},
			Open: func(sealed, ad []byte) ([]byte, error) { return append([]byte("key:"), ad...), nil },
			Now:  now,
		})
		if err != nil || len(hd.Nodes) != 1 {
			t.Fatalf("desired.Compile = %+v, %v, want the node", hd, err)
		}
		return hd.Nodes[0]
	}
	admits := func(acc postgres.Access, src, local string) bool {
		s, l := netip.MustParseAddr(src), netip.MustParseAddr(local)
		return slices.ContainsFunc(acc.Allowed, func(p netip.Prefix) bool { return p.Contains(s) }) &&
			(len(acc.Local) == 0 || slices.Contains(acc.Local, l))
	}
	for _, tc := range []struct {
		name string
		// change removes the access of src to the node's address local.
		change     func(t *testing.T, w *world)
		src, local string
		// kept is a session the change leaves (source, local address).
		keptSrc, keptLocal string
	}{
		{"allowlist narrowed", func(t *testing.T, w *world) {
			w.svc.AllowedIPs = []domain.AllowEntry{{CIDR: "10.0.0.0/24"}}
			w.svc.AllowlistRevision++
		}, peerClient, "10.0.0.5", vpcClient, "10.0.0.5"},
		{"peering deleted", func(t *testing.T, w *world) {
			if _, err := w.pcx.BeginDelete(now); err != nil {
				t.Fatal(err)
			}
		}, peerClient, "10.0.0.5", vpcClient, "10.0.0.5"},
		{"peering lost (customer CIDR gone)", func(t *testing.T, w *world) {
			if err := w.pcx.Transition(domain.StateFailed, &domain.Info{Code: "peering_lost", Message: "gone"}, now); err != nil {
				t.Fatal(err)
			}
		}, peerClient, "10.0.0.5", vpcClient, "10.0.0.5"},
		{"detach", func(t *testing.T, w *world) {
			w.svc.VPCID, w.addr = "", "198.18.0.9"
		}, vpcClient, "10.0.0.5", "198.19.0.1", "198.18.0.9"},
		{"move", func(t *testing.T, w *world) {
			w.svc.VPCID, w.addr = "vpc-b", "10.1.0.5"
		}, vpcClient, "10.0.0.5", "10.1.0.7", "10.1.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, h := fakeNode(t)
			w := start()
			before := compile(t, w)
			if _, err := applyOps(t, n, h, before); err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			first := h.cut[len(h.cut)-1]
			h.mu.Unlock()
			if !admits(first, tc.src, tc.local) {
				t.Fatalf("before the change the node keeps %+v, which does not admit %s to %s: the test proves nothing", first, tc.src, tc.local)
			}
			tc.change(t, &w)
			ops, err := applyOps(t, n, h, compile(t, w))
			if err != nil || !slices.Contains(ops, opTerminate) {
				t.Fatalf("apply after the change = %v doing %v, want sessions cut", err, ops)
			}
			if i, j := slices.Index(ops, opFirewall), slices.Index(ops, opTerminate); i < 0 || i > j {
				t.Errorf("apply did %v: the firewall must enforce the new access before sessions are cut", ops)
			}
			h.mu.Lock()
			last := h.cut[len(h.cut)-1]
			h.mu.Unlock()
			if admits(last, tc.src, tc.local) {
				t.Errorf("sessions kept to %+v still admit %s to %s", last, tc.src, tc.local)
			}
			if !admits(last, tc.keptSrc, tc.keptLocal) {
				t.Errorf("sessions kept to %+v do not admit %s to %s, which the new access allows", last, tc.keptSrc, tc.keptLocal)
			}
		})
	}
}
