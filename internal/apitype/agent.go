package apitype

import "time"

// HostDesired is the desired state of one agent host at a revision: every
// node placed on it. Agents long-poll GET /v1/hosts/{host}/desired?after=N.
type HostDesired struct {
	Host     string        `json:"host"`
	Revision int64         `json:"revision"`
	Nodes    []NodeDesired `json:"nodes"`
}

// Node roles.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// NodeDesired is everything an agent needs to run one node.
type NodeDesired struct {
	NodeID    string `json:"node_id"`
	ServiceID string `json:"service_id"`
	ProjectID string `json:"project_id"`
	Index     int    `json:"index"`
	Role      string `json:"role"`
	// State is the node's state: creating and running nodes are to run;
	// deleting nodes are to be stopped and wiped.
	State     string `json:"state"`
	Namespace string `json:"namespace"`
	Address   string `json:"address"`
	Port      int    `json:"port"`
	// Primary is the primary's address and certificate name, for replicas.
	PrimaryAddress string `json:"primary_address,omitempty"`
	PrimaryName    string `json:"primary_name,omitempty"`

	Database        string `json:"database"`
	AdminUser       string `json:"admin_user"`
	AdminVerifier   string `json:"admin_verifier"`
	ReplicationUser string `json:"replication_user"`

	TLS NodeTLS `json:"tls"`

	// Access: the client sources admitted (already intersected with the
	// VPC and active peerings when attached) and the other nodes.
	AllowV4           []string `json:"allow_v4"`
	AllowV6           []string `json:"allow_v6"`
	Peers             []string `json:"peers"`
	AllowlistRevision int64    `json:"allowlist_revision"`

	// BackupPublicKeyPEM encrypts the node's backups (the private key
	// never leaves the control plane).
	BackupPublicKeyPEM string `json:"backup_public_key_pem,omitempty"`
}

// NodeTLS holds a node's certificates and keys (PEM).
type NodeTLS struct {
	CertPEM       string `json:"cert_pem"`
	KeyPEM        string `json:"key_pem"`
	ProjectCAPEM  string `json:"project_ca_pem"`
	InternalCAPEM string `json:"internal_ca_pem"`
	ReplCertPEM   string `json:"repl_cert_pem"`
	ReplKeyPEM    string `json:"repl_key_pem"`
}

// HostReport is what an agent applied.
type HostReport struct {
	Nodes []NodeReport `json:"nodes"`
}

// Node states an agent reports.
const (
	NodeReportRunning = "running"
	NodeReportFailed  = "failed"
	NodeReportWiped   = "wiped"
)

// NodeReport is one node's applied state.
type NodeReport struct {
	NodeID string `json:"node_id"`
	// Revision is the desired-state revision the node now enforces.
	Revision          int64     `json:"revision"`
	AllowlistRevision int64     `json:"allowlist_revision"`
	State             string    `json:"state"`
	Message           string    `json:"message,omitempty"`
	AppliedAt         time.Time `json:"applied_at"`
}

// PasswordReset is the response to a password reset: shown once.
type PasswordReset struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// CA is a project CA certificate.
type CA struct {
	ProjectID string `json:"project_id"`
	PEM       string `json:"pem"`
}
