// Package provider defines how the control plane realises the machines and
// networks of its objects: a Provider places a service's node on a host
// (with its own network namespace or instance and address) and removes it.
// Implementations: local (network namespaces on this machine); aws later.
// Imported by the reconcilers and the wiring in internal/cli.
package provider

import (
	"context"
	"net/netip"
)

// NodeRequest asks for a dedicated machine for one node.
type NodeRequest struct {
	NodeID    string
	ServiceID string
	AZ        string
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

// Provider realises nodes. Every method is idempotent: calling it again
// after a crash finishes or repeats the work without harm.
type Provider interface {
	PlaceNode(ctx context.Context, req NodeRequest) (Placement, error)
	// RemoveNode destroys the node's machine; its volume was wiped by the
	// agent. Removing an absent node is not an error.
	RemoveNode(ctx context.Context, nodeID string) error
}
