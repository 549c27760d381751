// Package local is the local provider: every node is a network namespace
// on this machine, with an address on the simulated internet (198.18.0.0/16)
// or in its VPC, built on the local cloud substrate (internal/localcloud).
// The agent on the same machine runs the node's PostgreSQL inside that
// namespace. Wired by internal/cli; needs root.
package local

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/provider"
)

// Provider places nodes in namespaces of one local cloud.
type Provider struct {
	cloud *localcloud.Cloud
	host  string
}

// New returns a provider on cloud whose nodes are run by the agent of host.
func New(cloud *localcloud.Cloud, host string) *Provider { return &Provider{cloud: cloud, host: host} }

// hostName is the local cloud host of a node: "n-" and the node ID's body.
func hostName(nodeID string) string { return "n-" + strings.TrimPrefix(nodeID, "node-") }

// PlaceNode creates (or finds) the node's namespace and address.
func (p *Provider) PlaceNode(ctx context.Context, req provider.NodeRequest) (provider.Placement, error) {
	if req.VPCID != "" {
		return provider.Placement{}, fmt.Errorf("place node %s: VPC nodes are not supported yet", req.NodeID)
	}
	if err := p.cloud.EnsureInternet(ctx); err != nil {
		return provider.Placement{}, fmt.Errorf("place node %s: %w", req.NodeID, err)
	}
	ref := localcloud.Internet(localcloud.PublicPool)
	h, err := p.cloud.AddHost(ctx, hostName(req.NodeID), ref)
	if err != nil {
		return provider.Placement{}, fmt.Errorf("place node %s: %w", req.NodeID, err)
	}
	addr, ok := h.Addr(ref)
	if !ok {
		return provider.Placement{}, fmt.Errorf("place node %s: host %s has no internet address", req.NodeID, h.Name)
	}
	return provider.Placement{Host: p.host, Namespace: h.NS, Address: addr}, nil
}

// RemoveNode deletes the node's namespace.
func (p *Provider) RemoveNode(ctx context.Context, nodeID string) error {
	err := p.cloud.RemoveHost(ctx, hostName(nodeID))
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}
