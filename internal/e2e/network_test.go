package e2e

import (
	"errors"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/sim"
)

// pcxRE is the form of a cloud peering ID, AWS's.
var pcxRE = regexp.MustCompile(`^pcx-[0-9a-f]{17}$`)

// TestVPCAndPeerings drives a VPC and its peerings with the simulated
// customer cloud through every state on real namespaces: the VPC's router,
// the quota, a request in the customer's inbox under the same pcx- ID,
// acceptance with the provider-side route in the router, rejection, the
// 7-day expiry by the cloud's clock, declared CIDRs that are not the
// customer's, an unknown peer VPC, deletion withdrawing the route, and the
// VPC's deletion removing its router.
func TestVPCAndPeerings(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("net")
	ctx := e.ctx()

	vpc, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "main", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	if err != nil {
		t.Fatal(err)
	}
	vpc = e.waitVPC(vpc.ID, "active")
	router := e.stack.Cloud.RouterNS(vpc.ID)
	if vpc.CloudVPCID != router {
		t.Errorf("cloud_vpc_id = %q, want the router namespace %q", vpc.CloudVPCID, router)
	}
	if vs, err := e.stack.Cloud.VPCs(ctx); err != nil || !slices.ContainsFunc(vs, func(v localcloud.VPC) bool {
		return v.ID == vpc.ID && v.CIDR == netip.MustParsePrefix("10.0.0.0/17")
	}) {
		t.Errorf("local cloud VPCs = %+v, %v; want %s with 10.0.0.0/17", vs, err, vpc.ID)
	}
	for i, cidr := range []string{"10.0.128.0/17", "10.1.0.0/16"} {
		if _, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "more-" + string(rune('a'+i)), Region: "us-east-1", CIDR: cidr}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "fourth", Region: "us-east-1", CIDR: "10.2.0.0/16"})
	if ae := (*client.Error)(nil); !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != "quota_exceeded" {
		t.Errorf("4th VPC: %v, want 409 quota_exceeded", err)
	}

	// The customer: an account, a VPC 172.31.0.0/16 with a host in it.
	acct, err := e.stack.Sim.CreateAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cvpc := e.customerVPC(acct.ID, "172.31.0.0/16")
	if _, err := e.stack.Sim.CreateHost(ctx, "app", cvpc.ID); err != nil {
		t.Fatal(err)
	}
	peer := func(cv sim.VPC, cidrs ...string) apitype.Peering {
		t.Helper()
		p, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: vpc.ID, PeerAccountID: cv.Account,
			PeerVPCID: cv.ID, PeerRegion: cv.Region, PeerCIDRs: cidrs})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Requested: pending, in the customer's inbox under the same ID.
	p1 := e.waitPeering(peer(cvpc, "172.31.0.0/16").ID, "pending-acceptance")
	if !pcxRE.MatchString(p1.CloudPeeringID) {
		t.Errorf("cloud_peering_id = %q, want pcx- and 17 hex digits", p1.CloudPeeringID)
	}
	inbox, err := e.stack.Sim.Peerings(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != p1.CloudPeeringID || inbox[0].State != localcloud.PeeringPendingAcceptance ||
		inbox[0].AccepterVPC != cvpc.ID || inbox[0].RequesterVPC != vpc.ID {
		t.Errorf("inbox = %+v, want one pending request %s from %s to %s", inbox, p1.CloudPeeringID, vpc.ID, cvpc.ID)
	}
	if r := e.routeTo(router, "172.31.0.0/16"); r != nil {
		t.Errorf("route to the peer while pending: %+v", r)
	}

	// Accepted: active, with the provider-side route over the link.
	start := time.Now()
	acc, err := e.stack.Sim.Accept(ctx, p1.CloudPeeringID)
	if err != nil || acc.State != localcloud.PeeringActive {
		t.Fatalf("accept: %+v, %v", acc, err)
	}
	e.waitPeering(p1.ID, "active")
	t.Logf("acceptance noticed in %v", time.Since(start))
	if r := e.routeTo(router, "172.31.0.0/16"); r == nil || r.Via != acc.AccepterAddr {
		t.Errorf("route to 172.31.0.0/16 in %s = %+v, want via the link's far end %v", router, r, acc.AccepterAddr)
	}

	// Rejected.
	p2 := e.waitPeering(peer(e.customerVPC(acct.ID, "172.30.0.0/16"), "172.30.0.0/16").ID, "pending-acceptance")
	if _, err := e.stack.Sim.Reject(ctx, p2.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	if p := e.waitPeering(p2.ID, "rejected"); p.StateInfo == nil || p.StateInfo.Code != "rejected" {
		t.Errorf("rejected peering's state_info = %+v, want code rejected", p.StateInfo)
	}

	// Declared CIDRs that are not the customer VPC's: failed on acceptance.
	p4 := e.waitPeering(peer(e.customerVPC(acct.ID, "172.28.0.0/16"), "172.27.0.0/16").ID, "pending-acceptance")
	if got, err := e.stack.Sim.Accept(ctx, p4.CloudPeeringID); err != nil || got.State != localcloud.PeeringFailed {
		t.Errorf("accept with mismatched CIDRs: %+v, %v; want failed", got, err)
	}
	if p := e.waitPeering(p4.ID, "failed"); p.StateInfo == nil || p.StateInfo.Code != "peer_cidrs_mismatch" || p.StateInfo.Message == "" {
		t.Errorf("mismatched peering's state_info = %+v, want code peer_cidrs_mismatch with a message", p.StateInfo)
	}
	if r := e.routeTo(router, "172.27.0.0/16"); r != nil {
		t.Errorf("route to a failed peering's CIDR: %+v", r)
	}

	// A peer VPC that is not in the named account: failed at once.
	other, err := e.stack.Sim.CreateAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stranger := e.customerVPC(other.ID, "172.26.0.0/16")
	stranger.Account = acct.ID
	if p := e.waitPeering(peer(stranger, "172.26.0.0/16").ID, "failed"); p.StateInfo == nil || p.StateInfo.Code != "peer_vpc_not_found" {
		t.Errorf("peering to a VPC of another account: state_info %+v, want peer_vpc_not_found", p.StateInfo)
	}

	// Expired: not accepted within 7 days by the cloud's clock.
	p3 := e.waitPeering(peer(e.customerVPC(acct.ID, "172.29.0.0/16"), "172.29.0.0/16").ID, "pending-acceptance")
	if _, err := e.stack.Sim.Advance(ctx, 8*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if p := e.waitPeering(p3.ID, "expired"); p.StateInfo == nil || p.StateInfo.Code != "expired" {
		t.Errorf("expired peering's state_info = %+v, want code expired", p.StateInfo)
	}
	if p := e.getPeering(p1.ID); p.State != "active" {
		t.Errorf("the accepted peering after the clock moved: %s, want active", p.State)
	}

	// Deleted: the link and the route go at once.
	if _, err := e.op.DeletePeering(ctx, e.project, p1.ID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(p1.ID, "deleted")
	if r := e.routeTo(router, "172.31.0.0/16"); r != nil {
		t.Errorf("route to 172.31.0.0/16 after delete: %+v", r)
	}
	inbox, err = e.stack.Sim.Peerings(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(inbox, func(p localcloud.Peering) bool { return p.ID == p1.CloudPeeringID }); i < 0 || inbox[i].State != localcloud.PeeringDeleted {
		t.Errorf("inbox after delete = %+v, want %s deleted", inbox, p1.CloudPeeringID)
	}

	// No live peering is left: the VPC can go, and its router with it.
	if _, err := e.op.DeleteVPC(ctx, e.project, vpc.ID); err != nil {
		t.Fatal(err)
	}
	e.waitVPC(vpc.ID, "deleted")
	if vs, err := e.stack.Cloud.VPCs(ctx); err != nil || slices.ContainsFunc(vs, func(v localcloud.VPC) bool { return v.ID == vpc.ID }) {
		t.Errorf("local cloud VPCs after delete = %+v, %v; want no %s", vs, err, vpc.ID)
	}
}

// customerVPC creates a customer VPC in account, in eu-west-1.
func (e *env) customerVPC(account, cidr string) sim.VPC {
	e.t.Helper()
	v, err := e.stack.Sim.CreateVPC(e.ctx(), account, "eu-west-1", cidr)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitVPC waits until VPC id is in state.
func (e *env) waitVPC(id, state string) apitype.VPC {
	e.t.Helper()
	var v apitype.VPC
	e.waitState("VPC "+id, state, func() (string, error) {
		var err error
		v, err = e.op.GetVPC(e.ctx(), e.project, id)
		return v.State, err
	})
	return v
}

func (e *env) getPeering(id string) apitype.Peering {
	e.t.Helper()
	p, err := e.op.GetPeering(e.ctx(), e.project, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// waitPeering waits until peering id is in state.
func (e *env) waitPeering(id, state string) apitype.Peering {
	e.t.Helper()
	var p apitype.Peering
	e.waitState("peering "+id, state, func() (string, error) {
		var err error
		p, err = e.op.GetPeering(e.ctx(), e.project, id)
		return p.State, err
	})
	return p
}

func (e *env) waitState(what, want string, get func() (string, error)) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := get()
		if err != nil {
			e.t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s is %s after 10s, want %s", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// routeTo returns ns's gateway route to dst, or nil.
func (e *env) routeTo(ns, dst string) *localcloud.Route {
	e.t.Helper()
	rs, err := e.stack.Cloud.Routes(e.ctx(), ns)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst == netip.MustParsePrefix(dst) {
			return &r
		}
	}
	return nil
}
