// Package local is the local provider: every node is a network namespace
// on this machine, with an address on the simulated internet (198.18.0.0/16)
// or in its VPC, built on the local cloud substrate (internal/localcloud).
// The agent on the same machine runs the node's PostgreSQL inside that
// namespace. A VPC is a localcloud VPC named by Moat's VPC ID (its router
// namespace "<prefix>r-<vpc id>" is the cloud_vpc_id); a peering is a
// localcloud peering request whose pcx- ID is the cloud_peering_id, seen by
// the simulated customer cloud on the same substrate. A node's old address
// can be held after it moved (HoldAddress): a namespace keeps it and a
// responder tells clients where the service went.
//
// Lifecycle (caddy's Provision/Cleanup): New makes a provider, Run runs it
// until its context ends, Close stops its responders (the namespaces stay
// in the kernel). Wired by internal/up for moat up; needs root.
package local

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/provider"
)

// Provider places nodes in namespaces of one local cloud. Every host of
// the fleet is a process on this machine, so all of them share the one
// substrate: a node's namespace and address are the same whichever host
// runs it, and its host's agent is the one that realises it.
type Provider struct {
	cloud *localcloud.Cloud
	moved movedHosts
}

var _ provider.Provider = (*Provider)(nil)

// New returns a provider on cloud.
func New(cloud *localcloud.Cloud) *Provider { return &Provider{cloud: cloud} }

// hostName is the local cloud host of a node: "n-" and the node ID's body.
func hostName(nodeID string) string { return "n-" + strings.TrimPrefix(nodeID, "node-") }

// NodeNamespace is the namespace of node nodeID in cloud (the simulator's
// failure injection cuts its links).
func NodeNamespace(cloud *localcloud.Cloud, nodeID string) string {
	return cloud.HostNS(hostName(nodeID))
}

// PlaceNode creates (or finds) the node's namespace and address for the
// agent of req.Host.
func (p *Provider) PlaceNode(ctx context.Context, req provider.NodeRequest) (provider.Placement, error) {
	if req.Host == "" {
		return provider.Placement{}, fmt.Errorf("place node %s: no host chosen", req.NodeID)
	}
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
	return provider.Placement{Host: req.Host, Namespace: h.NS, Address: addr}, nil
}

// RemoveNode deletes the node's namespace.
func (p *Provider) RemoveNode(ctx context.Context, nodeID string) error {
	err := p.cloud.RemoveHost(ctx, hostName(nodeID))
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}

// EnsureVPC creates (or finds) the VPC's router namespace and bridge. Its
// cloud ID is the router namespace's name: unique on the machine, and where
// an operator looks (ip netns exec <cloud_vpc_id> ip route).
func (p *Provider) EnsureVPC(ctx context.Context, req provider.VPCRequest) (provider.VPCPlacement, error) {
	v, err := p.cloud.EnsureVPC(ctx, req.ID, req.CIDR)
	if errors.Is(err, localcloud.ErrExists) {
		return provider.VPCPlacement{}, fmt.Errorf("%w: %w", provider.ErrRefused, err)
	}
	if err != nil {
		return provider.VPCPlacement{}, err
	}
	return provider.VPCPlacement{CloudVPCID: v.NS}, nil
}

// RemoveVPC deletes the VPC's router namespace with its peering links.
func (p *Provider) RemoveVPC(ctx context.Context, vpcID string) error {
	return p.cloud.RemoveVPC(ctx, vpcID)
}

// NewPeeringID returns a fresh localcloud peering ID (pcx- and 17 hex).
func (p *Provider) NewPeeringID() string { return localcloud.NewPeeringID() }

// RequestPeering sends peering request req.CloudID to the peer account
// through the local cloud's registry (idempotent by ID).
func (p *Provider) RequestPeering(ctx context.Context, req provider.PeeringRequest) (provider.PeeringStatus, error) {
	if req.CloudID == "" {
		return provider.PeeringStatus{}, fmt.Errorf("request peering %s: no cloud ID reserved", req.ID)
	}
	pc, err := p.cloud.RequestPeering(ctx, localcloud.PeeringRequest{
		ID:              req.CloudID,
		RequesterVPC:    req.VPCID,
		AccepterAccount: req.PeerAccountID,
		AccepterVPC:     req.PeerVPCID,
		AccepterRegion:  req.PeerRegion,
		DeclaredCIDRs:   req.PeerCIDRs,
	})
	if errors.Is(err, localcloud.ErrExists) {
		return provider.PeeringStatus{}, fmt.Errorf("%w: %w", provider.ErrRefused, err)
	}
	if err != nil {
		return provider.PeeringStatus{}, err
	}
	return status(pc), nil
}

// PeeringStatus reads the request's state by the cloud's clock.
func (p *Provider) PeeringStatus(ctx context.Context, cloudID string) (provider.PeeringStatus, error) {
	pc, err := p.cloud.PeeringStatus(ctx, cloudID)
	if errors.Is(err, localcloud.ErrNotFound) {
		return provider.PeeringStatus{}, fmt.Errorf("%w: %w", provider.ErrNotFound, err)
	}
	if err != nil {
		return provider.PeeringStatus{}, err
	}
	return status(pc), nil
}

// AddPeeringRoutes routes cidrs from the VPC's router via the accepter's
// end of the peering link.
func (p *Provider) AddPeeringRoutes(ctx context.Context, vpcID, cloudID string, cidrs []netip.Prefix) error {
	pc, err := p.cloud.PeeringStatus(ctx, cloudID)
	if err != nil {
		return fmt.Errorf("add peering routes: %w", err)
	}
	if pc.RequesterVPC != vpcID {
		return fmt.Errorf("add peering routes: %s belongs to %s, not %s", cloudID, pc.RequesterVPC, vpcID)
	}
	if pc.State != localcloud.PeeringActive || !pc.AccepterAddr.IsValid() {
		return fmt.Errorf("add peering routes: %s is %s without a link", cloudID, pc.State)
	}
	for _, c := range cidrs {
		if err := p.cloud.AddRoute(ctx, p.cloud.RouterNS(vpcID), c, pc.AccepterAddr); err != nil {
			return fmt.Errorf("add peering routes: %w", err)
		}
	}
	return nil
}

// DeletePeering deletes the request; the kernel drops its link and the
// routes through it in both routers at once.
func (p *Provider) DeletePeering(ctx context.Context, cloudID string) error {
	_, err := p.cloud.DeletePeering(ctx, cloudID)
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}

// status converts the local cloud's view of a peering, classifying its
// reason into a stable code.
func status(pc localcloud.Peering) provider.PeeringStatus {
	st := provider.PeeringStatus{CloudID: pc.ID, State: string(pc.State), Reason: pc.Reason,
		ExpiresAt: pc.ExpiresAt, AccepterAddr: pc.AccepterAddr}
	switch pc.State {
	case localcloud.PeeringRejected:
		st.Code = "rejected"
	case localcloud.PeeringExpired:
		st.Code = "expired"
	case localcloud.PeeringDeleted:
		st.Code = "deleted_by_peer"
		if st.Reason == "" {
			st.Reason = "the peering connection was deleted"
		}
	case localcloud.PeeringFailed:
		st.Code = failureCode(pc.Reason)
	}
	return st
}

// failureCode maps the local cloud's failure reasons (localcloud's
// RequestPeering and AcceptPeering) to codes.
func failureCode(reason string) string {
	switch {
	case strings.HasPrefix(reason, "overlapping CIDRs"):
		return "overlapping_cidrs"
	case strings.HasPrefix(reason, "declared peer CIDRs"):
		return "peer_cidrs_mismatch"
	case strings.Contains(reason, "does not exist in account"):
		return "peer_vpc_not_found"
	case strings.Contains(reason, " is in region "):
		return "peer_region_mismatch"
	}
	return "peering_failed"
}
