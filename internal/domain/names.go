package domain

// Names: the DNS names of services and nodes, the connection parameters
// every node shares, and the labels (AEAD associated data) that bind each
// sealed key to the object that holds it. This is their one home: the
// desired state, the DNS server, the reconcilers and the API all use these.

import (
	"crypto/sha256"
	"encoding/hex"
)

// Connection parameters every node uses.
const (
	PostgresPort    = 5432
	Database        = "defaultdb"
	AdminUser       = "moatadmin"
	ReplicationUser = "moat_replication"
)

// ServiceName is a service's DNS name in zone: public, or private when
// attached to a VPC.
func ServiceName(svc *Service, zone string) string {
	if svc.VPCID != "" {
		return PrivateName(svc, zone)
	}
	return PublicName(svc, zone)
}

// PublicName is <svc>.<proj>.<zone>.
func PublicName(svc *Service, zone string) string {
	return svc.ID + "." + svc.ProjectID + "." + zone
}

// PrivateName is <svc>.<proj>.vpc.<zone>.
func PrivateName(svc *Service, zone string) string {
	return svc.ID + "." + svc.ProjectID + ".vpc." + zone
}

// ReadOnlyName is the name that resolves to a service's replicas:
// ro.<ServiceName>.
func ReadOnlyName(svc *Service, zone string) string { return "ro." + ServiceName(svc, zone) }

// NodeName is a node's own DNS name, used between nodes.
func NodeName(n *Node, svc *Service, zone string) string {
	return n.ID + "." + svc.ID + "." + svc.ProjectID + "." + zone
}

// CertNames are the DNS names and addresses a node's server certificate
// carries: the service's public and private names and their read-only
// names (any node may become a replica or the primary), the node's own,
// and its address.
func CertNames(n *Node, svc *Service, zone string) []string {
	names := []string{PublicName(svc, zone), PrivateName(svc, zone), "ro." + PublicName(svc, zone), "ro." + PrivateName(svc, zone), NodeName(n, svc, zone)}
	if n.Address != "" {
		names = append(names, n.Address)
	}
	return names
}

// Associated data of sealed keys: each binds a sealed key to its object,
// so a sealed value moved to another record does not open.

// ProjectCAKeyAD binds a sealed project CA key to its project.
func ProjectCAKeyAD(projectID string) []byte { return []byte("project-ca-key:" + projectID) }

// BackupKeyAD binds a sealed backup private key to its service.
func BackupKeyAD(serviceID string) []byte { return []byte("service-backup-key:" + serviceID) }

// NodeKeyAD binds a node's sealed server key to the node.
func NodeKeyAD(nodeID string) []byte { return []byte("node-key:" + nodeID) }

// ReplKeyAD binds a node's sealed replication client key to the node.
func ReplKeyAD(nodeID string) []byte { return []byte("node-repl-key:" + nodeID) }

// ReplCertName is the common name of n's replication client
// certificate: its ID. A primary accepts it only from n's address, for
// the replication role (pg_ident maps the name to the role).
func ReplCertName(n *Node) string { return n.ID }

// NodeUserPrefix starts the name of every node's operating-system user.
const NodeUserPrefix = "moat-n-"

// NodeUser is the operating-system user (and group) a node's PostgreSQL
// runs as on its host: one per node, so that no node's files are readable
// by another's. A node ID as NewID makes them gives moat-n-<its 16
// characters>; any other ID (tests) gives moat-n-x-<16 hex digits of its
// SHA-256>, so two IDs never share a user. Either is a valid user name
// (lowercase, at most 32 bytes).
func NodeUser(nodeID string) string {
	if ValidID(PrefixNode, nodeID) {
		return NodeUserPrefix + nodeID[len(PrefixNode):]
	}
	sum := sha256.Sum256([]byte(nodeID))
	return NodeUserPrefix + "x-" + hex.EncodeToString(sum[:8])
}
