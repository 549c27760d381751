package local

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/moatdb/moat/internal/localcloud"
)

func netRef(vpcID string) localcloud.NetRef {
	if vpcID == "" {
		return localcloud.Internet(localcloud.PublicPool)
	}
	return localcloud.InVPC(vpcID)
}

// AddNodeInterface attaches the node's namespace to the VPC's bridge (or
// the internet's) and returns its address there.
func (p *Provider) AddNodeInterface(ctx context.Context, nodeID, vpcID string) (netip.Addr, error) {
	ns := p.cloud.HostNS(hostName(nodeID))
	ref := netRef(vpcID)
	ifc, err := p.cloud.AttachInterface(ctx, ns, ref)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("attach node %s to %s: %w", nodeID, ref, err)
	}
	return ifc.Addr.Addr(), nil
}

// UseNetwork points the node's default route at the network.
func (p *Provider) UseNetwork(ctx context.Context, nodeID, vpcID string) error {
	return p.cloud.SetDefaultRoute(ctx, p.cloud.HostNS(hostName(nodeID)), netRef(vpcID))
}

// RemoveNodeInterface detaches the node's namespace from the network.
func (p *Provider) RemoveNodeInterface(ctx context.Context, nodeID, vpcID string) error {
	err := p.cloud.DetachInterface(ctx, p.cloud.HostNS(hostName(nodeID)), netRef(vpcID))
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}
