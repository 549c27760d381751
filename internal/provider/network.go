package provider

import (
	"context"
	"crypto/tls"
	"net/netip"
)

// Networker moves a node between networks without replacing it: the
// attach, detach and move of a service. Providers that cannot do this in
// place do not implement it (the reconciler then fails the operation).
type Networker interface {
	// AddNodeInterface gives the node an interface on the VPC vpcID ("" for
	// the internet) and returns its address there. Idempotent.
	AddNodeInterface(ctx context.Context, nodeID, vpcID string) (netip.Addr, error)
	// UseNetwork makes vpcID ("" for the internet) the node's default
	// route, so replies to new clients leave through it.
	UseNetwork(ctx context.Context, nodeID, vpcID string) error
	// RemoveNodeInterface removes the node's interface on vpcID ("" for
	// the internet). Removing an absent interface is not an error.
	RemoveNodeInterface(ctx context.Context, nodeID, vpcID string) error
	// HoldAddress keeps an address a node left answering connection
	// attempts with an error carrying message (where the service went).
	// Idempotent; the reconciler calls it again after a restart.
	// cert, when set, is presented to clients that ask for TLS so a
	// verify-full client can trust the message.
	HoldAddress(ctx context.Context, addr netip.Addr, vpcID, message string, cert *tls.Certificate) error
	// ReleaseAddress frees a held address.
	ReleaseAddress(ctx context.Context, addr netip.Addr) error
}
