// Package provider defines how the control plane realises the machines and
// networks of its objects: a Provider places a service's node on a host
// (with its own network namespace or instance and address) and removes it,
// builds and removes VPCs, and sends, follows and deletes peering requests
// to tenants' networks.
// Implementations: local (network namespaces on this machine); aws later.
// Imported by the reconcilers, the control plane that hands them one, and
// its implementations.
package provider

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound: the cloud has no such object (a peering request it
	// never received or forgot, say after the local cloud's host
	// rebooted).
	ErrNotFound = errors.New("provider: not found")
	// ErrRefused: the cloud refuses the request as given (a VPC whose
	// network exists with another CIDR, say); repeating it will not help.
	ErrRefused = errors.New("provider: refused")
)

// NodeRequest asks for a dedicated machine for one node.
type NodeRequest struct {
	NodeID    string
	ServiceID string
	// Host is the agent host placement chose (domain.Place); AZ is its AZ.
	Host string
	AZ   string
	// VPCID is the VPC the node lives in; "" for a public node.
	VPCID string
}

// Placement is where a node runs.
type Placement struct {
	// Host is the agent host that manages the node.
	Host string
	// Namespace is the node's network namespace on that host.
	Namespace string
	// Address is the node's address (public, or in its VPC).
	Address netip.Addr
}

// VPCRequest asks for a provider-side private network.
type VPCRequest struct {
	// ID is Moat's VPC ID (vpc- and base32).
	ID     string
	CIDR   netip.Prefix
	Region string
}

// VPCPlacement is what the cloud made of a VPC.
type VPCPlacement struct {
	// CloudVPCID is the cloud's name for the network, shown to tenants
	// as cloud_vpc_id (local: the router namespace's name).
	CloudVPCID string
}

// PeeringRequest asks the cloud to send a peering request from a VPC to a
// tenant's network.
type PeeringRequest struct {
	// ID is Moat's peering ID (pcx- and base32).
	ID string
	// CloudID is the cloud's connection ID, reserved with NewPeeringID
	// and recorded before the request is sent, so that a request repeated
	// after a crash names the same connection.
	CloudID string
	// VPCID and VPCCIDR are the requesting VPC (Moat's ID).
	VPCID   string
	VPCCIDR netip.Prefix
	// PeerAccountID, PeerVPCID, PeerRegion and PeerCIDRs are the tenant's
	// side as the tenant declared it.
	PeerAccountID string
	PeerVPCID     string
	PeerRegion    string
	PeerCIDRs     []netip.Prefix
}

// Peering states as the cloud reports them; they are the domain's names
// (AWS's). A cloud may report any of them at any time: the tenant accepts,
// rejects or deletes on their side, and requests expire.
const (
	PeeringPendingAcceptance = "pending-acceptance"
	PeeringActive            = "active"
	PeeringRejected          = "rejected"
	PeeringExpired           = "expired"
	PeeringFailed            = "failed"
	PeeringDeleted           = "deleted"
)

// PeeringStatus is a peering connection as the cloud sees it.
type PeeringStatus struct {
	// CloudID is the connection's ID in the cloud (pcx-…).
	CloudID string
	// State is one of the Peering* states.
	State string
	// Code and Reason explain a failed, rejected, expired or deleted
	// connection: Code is a stable snake_case word (overlapping_cidrs,
	// peer_vpc_not_found, peer_region_mismatch, peer_cidrs_mismatch,
	// rejected, expired, deleted_by_peer, peering_failed), Reason is the
	// cloud's text, fit to show the tenant.
	Code   string
	Reason string
	// ExpiresAt is when a pending request expires, by the cloud's clock.
	ExpiresAt time.Time
	// AccepterAddr is the peer's end of the link while one exists (local
	// provider); invalid otherwise.
	AccepterAddr netip.Addr
}

// Provider realises nodes and networks. Every method is idempotent: calling
// it again after a crash finishes or repeats the work without harm.
type Provider interface {
	PlaceNode(ctx context.Context, req NodeRequest) (Placement, error)
	// RemoveNode destroys the node's machine; its volume was wiped by the
	// agent. Removing an absent node is not an error.
	RemoveNode(ctx context.Context, nodeID string) error

	// EnsureVPC creates (or finds) the VPC's network. A network of the
	// same ID with another CIDR is an ErrRefused error.
	EnsureVPC(ctx context.Context, req VPCRequest) (VPCPlacement, error)
	// RemoveVPC destroys the VPC's network, and with it every peering
	// link of it. It fails while nodes still have an interface on it.
	// Removing an absent VPC is not an error.
	RemoveVPC(ctx context.Context, vpcID string) error

	// NewPeeringID reserves a fresh cloud connection ID for a new request
	// (see PeeringRequest.CloudID).
	NewPeeringID() string
	// RequestPeering sends the request req.CloudID to the tenant's
	// account and returns its state: pending-acceptance, or failed with
	// the reason when the cloud refuses it at once (unknown account or
	// VPC, another region, overlapping ranges). Repeating a request
	// returns the recorded one.
	RequestPeering(ctx context.Context, req PeeringRequest) (PeeringStatus, error)
	// PeeringStatus returns the connection's state now; ErrNotFound if
	// the cloud has no such connection.
	PeeringStatus(ctx context.Context, cloudID string) (PeeringStatus, error)
	// AddPeeringRoutes routes cidrs from VPC vpcID over active connection
	// cloudID. The routes go with the connection.
	AddPeeringRoutes(ctx context.Context, vpcID, cloudID string, cidrs []netip.Prefix) error
	// DeletePeering deletes the connection from the provider's side: its
	// link and every route through it go at once. Deleting an absent or
	// finished connection is not an error.
	DeletePeering(ctx context.Context, cloudID string) error
}
