package e2e

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
)

// TestMoveBetweenVPCs: attaching an attached service to another VPC moves
// its node from one VPC to the other; it never gains an internet interface
// on the way, and its old address is held with a pointer to the new name.
func TestMoveBetweenVPCs(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	ctx := e.ctx()
	a, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "a", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "b", Region: "us-east-1", CIDR: "10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitVPC(a.ID, "active")
	e.waitVPC(b.ID, "active")
	svc, _ := e.createService("moving", 1)
	svc = e.attach(svc.ID, a.ID)
	inA := svc.Connection.Address
	if !netip.MustParsePrefix("10.0.0.0/17").Contains(netip.MustParseAddr(inA)) {
		t.Fatalf("attached to A at %s", inA)
	}
	svc = e.attach(svc.ID, b.ID)
	if svc.VPCID != b.ID || !netip.MustParsePrefix("10.1.0.0/16").Contains(netip.MustParseAddr(svc.Connection.Address)) {
		t.Fatalf("after the move: vpc %s address %s, want %s in 10.1.0.0/16", svc.VPCID, svc.Connection.Address, b.ID)
	}
	hosts, err := e.stack.Cloud.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := strings.TrimPrefix(svc.NodeList[0].ID, "node-")
	for _, h := range hosts {
		if !strings.Contains(h.Name, node) {
			continue
		}
		for _, ifc := range h.Interfaces {
			if ifc.Net.VPC != b.ID {
				t.Errorf("node %s still has an interface on %s (%s)", h.Name, ifc.Net, ifc.Addr)
			}
		}
	}
	// A's VPC can be deleted now that nothing is attached to it: the held
	// old address is released and the router goes.
	if _, err := e.op.DeleteVPC(ctx, e.project, a.ID); err != nil {
		t.Fatalf("delete VPC A after the move: %v", err)
	}
	e.waitVPC(a.ID, "deleted")
}
