package domain

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// ID prefixes, one per object type.
const (
	PrefixProject   = "proj-"
	PrefixToken     = "tok-"
	PrefixVPC       = "vpc-"
	PrefixPeering   = "pcx-"
	PrefixService   = "svc-"
	PrefixNode      = "node-"
	PrefixOperation = "op-"
)

// NewID returns a fresh random ID with prefix: the prefix and 16 characters
// of lower-case base32 (80 random bits). The alphabet includes letters past
// f, so an ID is never mistaken for an AWS hex ID such as vpc-0a1b2c3d.
func NewID(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:16])
}

var idBody = regexp.MustCompile(`^[a-z2-7]{16}$`)

// ValidID reports whether s is an ID of the given prefix as NewID makes them.
func ValidID(prefix, s string) bool {
	body, ok := strings.CutPrefix(s, prefix)
	return ok && idBody.MatchString(body)
}

// Meta holds what every stored object has. Revision is maintained by the
// store: it is 0 for an object never stored and grows on every write.
type Meta struct {
	ID        string    `json:"id"`
	ProjectID string    `json:"project_id,omitempty"`
	Name      string    `json:"name,omitempty"`
	State     string    `json:"state"`
	StateInfo *Info     `json:"state_info,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Revision  int64     `json:"-"`
	// Seq is the store's creation order (the pagination cursor).
	Seq int64 `json:"-"`
}

// Base returns m itself; every object type embeds Meta and so has Base.
func (m *Meta) Base() *Meta { return m }

// Info explains a state (a failure's code and message). Code and Message
// are public: written for the tenant, stable enough to branch on. Cause is
// the internal cause (a command's stderr, a path, an errno): it goes to the
// server's log and to operators, never to a tenant (the API renders it only
// for operator tokens).
type Info struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Cause   string `json:"cause,omitempty"`
}

// CodeWiped is the state info code of a deleting node its agent stopped
// and wiped.
const CodeWiped = "wiped"

// Object is what the store persists. Kind names the table of objects it
// belongs to; Parent is the ID the store indexes it under besides its
// project (a peering's VPC, a service's VPC, a node's service, an
// operation's target), or "".
type Object interface {
	Base() *Meta
	Kind() string
	Parent() string
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateName checks a human name: 1 to 63 characters of lower-case
// letters, digits and hyphens, starting with a letter.
func ValidateName(field, name string) error {
	if name == "" {
		return Invalidf(CodeRequired, field, "give a name such as my-db", "a name is required")
	}
	if !nameRE.MatchString(name) || strings.HasSuffix(name, "-") {
		return Invalidf(CodeInvalidName, field,
			"use 1 to 63 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen",
			"%q is not a valid name", name)
	}
	return nil
}

// Project is the tenant boundary.
type Project struct {
	Meta
	// VPCQuota is the number of live VPCs the project may hold.
	VPCQuota int `json:"vpc_quota"`
	// ServiceQuota and NodeQuota, when set by an operator, replace the
	// platform's defaults (Quotas) for the project's live services and
	// their nodes.
	ServiceQuota *int `json:"service_quota,omitempty"`
	NodeQuota    *int `json:"node_quota,omitempty"`
	// CACertPEM is the project CA that signs its services' server
	// certificates; CAKeySealed is its key, sealed with the master key.
	CACertPEM   string `json:"ca_cert_pem,omitempty"`
	CAKeySealed []byte `json:"ca_key_sealed,omitempty"`
}

// DefaultVPCQuota is a new project's VPC quota.
const DefaultVPCQuota = 3

// MaxVPCQuota bounds what an operator may set, to catch typos.
const MaxVPCQuota = 1000

// Quotas are the platform's default service and node quotas of a project
// (a setting of the control plane).
type Quotas struct {
	Services int
	Nodes    int
}

// DefaultQuotas are the defaults when the control plane sets none.
var DefaultQuotas = Quotas{Services: 10, Nodes: 30}

// Limits returns the project's service and node quotas: its own where an
// operator set them, def's otherwise.
func (p *Project) Limits(def Quotas) Quotas {
	q := def
	if p.ServiceQuota != nil {
		q.Services = *p.ServiceQuota
	}
	if p.NodeQuota != nil {
		q.Nodes = *p.NodeQuota
	}
	return q
}

// CheckServiceQuota refuses a new service of nodes nodes in p when the
// project's live services (others) already reach its service quota, or
// their nodes and the new ones would pass its node quota.
func CheckServiceQuota(p *Project, def Quotas, others []*Service, nodes int) error {
	q := p.Limits(def)
	live, liveNodes := 0, 0
	for _, o := range others {
		if !Gone(o.State) {
			live++
			liveNodes += o.NodeCount
		}
	}
	if live >= q.Services {
		return Conflictf(CodeQuotaExceeded, "", fmt.Sprintf(`delete a service, or ask an operator for more: moat support request --services N (POST /v1/projects/%s/support-requests, or the console's Support page)`, p.ID),
			"service quota: the project already has %d of its %d services", live, q.Services)
	}
	if liveNodes+nodes > q.Nodes {
		return Conflictf(CodeQuotaExceeded, "nodes", fmt.Sprintf(`use fewer nodes, delete a service, or ask an operator for more: moat support request --nodes N (POST /v1/projects/%s/support-requests, or the console's Support page)`, p.ID),
			"node quota: the project's services have %d of its %d nodes, and this one needs %d more", liveNodes, q.Nodes, nodes)
	}
	return nil
}

func (*Project) Kind() string   { return "project" }
func (*Project) Parent() string { return "" }

// Role is an API token's role within its project.
type Role string

const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
	// RoleOperator is the platform operator: all projects, quotas, audit.
	RoleOperator Role = "operator"
	// RoleAgent is a host agent: it reads its host's desired state and
	// reports what it applied, nothing else.
	RoleAgent Role = "agent"
)

// ParseRole validates a project role (operator tokens are not created
// through the API).
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleMember, RoleViewer:
		return r, nil
	}
	return "", Invalidf(CodeInvalidRole, "role", "use admin, member or viewer", "%q is not a role", s)
}

// CanWrite reports whether the role may mutate project objects.
func (r Role) CanWrite() bool { return r == RoleAdmin || r == RoleMember || r == RoleOperator }

// CanAdmin reports whether the role may manage tokens and secrets.
func (r Role) CanAdmin() bool { return r == RoleAdmin || r == RoleOperator }

// Token is an API credential. The secret is never stored: Hash is its
// SHA-256. ProjectID is empty for operator tokens.
type Token struct {
	Meta
	Role Role   `json:"role"`
	Hash string `json:"hash"`
	// Host, on an agent token, is the one agent host it may read the
	// desired state of and report for ("" on tokens made before: any).
	Host string `json:"host,omitempty"`
}

func (*Token) Kind() string   { return "token" }
func (*Token) Parent() string { return "" }

// VPC is a provider-side private network.
type VPC struct {
	Meta
	Region     string `json:"region"`
	CIDR       string `json:"cidr"`
	CloudVPCID string `json:"cloud_vpc_id,omitempty"`
}

func (*VPC) Kind() string   { return "vpc" }
func (*VPC) Parent() string { return "" }

// Peering is a peering connection from a VPC to a peer network.
type Peering struct {
	Meta
	VPCID          string    `json:"vpc_id"`
	PeerAccountID  string    `json:"peer_account_id"`
	PeerVPCID      string    `json:"peer_vpc_id"`
	PeerRegion     string    `json:"peer_region"`
	PeerCIDRs      []string  `json:"peer_cidrs"`
	CloudPeeringID string    `json:"cloud_peering_id,omitempty"`
	ExpiresAt      time.Time `json:"expires_at"`
}

func (*Peering) Kind() string     { return "peering" }
func (p *Peering) Parent() string { return p.VPCID }

// PeeringAcceptWindow is how long a peering request waits for acceptance.
const PeeringAcceptWindow = 7 * 24 * time.Hour

// Service is a PostgreSQL database service.
type Service struct {
	Meta
	Region     string       `json:"region"`
	NodeCount  int          `json:"node_count"`
	VPCID      string       `json:"vpc_id,omitempty"`
	AllowedIPs []AllowEntry `json:"allowed_ips"`
	// AllowlistRevision grows on every allowlist change; it is the
	// allowlist's ETag.
	AllowlistRevision int64 `json:"allowlist_revision"`
	// AppliedAllowlistRevision is the revision every node enforces.
	AppliedAllowlistRevision int64 `json:"applied_allowlist_revision"`
	// OperationID is the running attach/detach operation, if any.
	OperationID string `json:"operation_id,omitempty"`
	// AdminVerifier is the SCRAM-SHA-256 verifier of the admin user's
	// password; the password itself is shown once and never stored.
	AdminVerifier string `json:"admin_verifier,omitempty"`
	// BackupPublicKeyPEM is the service's RSA-3072 backup key (PKIX PEM),
	// the only part its nodes get; BackupKeySealed is the private key,
	// sealed with the master key, opened only by a restore.
	BackupPublicKeyPEM string `json:"backup_public_key_pem,omitempty"`
	BackupKeySealed    []byte `json:"backup_key_sealed,omitempty"`
	// LastBackupAt is when the newest base backup ended (scheduling);
	// PrunedAt when retention last ran.
	LastBackupAt time.Time `json:"last_backup_at,omitzero"`
	PrunedAt     time.Time `json:"pruned_at,omitzero"`
	// RestoreFrom is the service this one was restored from, if any, to
	// RestoreToTime (zero: to the end of its archive) from the base
	// backup RestoreBackup.
	RestoreFrom   string    `json:"restore_from,omitempty"`
	RestoreToTime time.Time `json:"restore_to_time,omitzero"`
	RestoreBackup string    `json:"restore_backup,omitempty"`
	// PrimaryID is the node that holds the service's primary role (its
	// DNS name); "" on services made before it existed: the index-0 node
	// (IsPrimary). A failover moves it (MovePrimary).
	PrimaryID string `json:"primary_id,omitempty"`
	// Replication is the primary's synchronous replication setting and
	// Health the service's health, as the reconciler last derived them
	// from its nodes' reports (ApplyReplication).
	Replication *SyncSetting   `json:"replication,omitempty"`
	Health      *ServiceHealth `json:"health,omitempty"`
	// Settings are the tenant's PostgreSQL settings (the catalog's names,
	// values written canonically; ChangeSettings). NodeSettings are the
	// ones that need a restart as the service's nodes run them: a new
	// node starts with them, but an upgrade's, which start with Settings
	// (PendingRestart is the difference).
	Settings     map[string]string `json:"settings,omitempty"`
	NodeSettings map[string]string `json:"node_settings,omitempty"`
	// SettingsRevision is the desired-state revision of the last
	// settings change: a node that applied it runs the settings
	// (SettingsApplying).
	SettingsRevision int64 `json:"settings_revision,omitempty"`
}

func (*Service) Kind() string     { return "service" }
func (s *Service) Parent() string { return s.VPCID }

// Node is one dedicated machine of a service.
type Node struct {
	Meta
	ServiceID string `json:"service_id"`
	Index     int    `json:"index"`
	AZ        string `json:"az"`
	// Placement, set by the provider: the agent host that runs the node,
	// its network namespace there, and its address.
	Host      string `json:"host,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Address   string `json:"address,omitempty"`
	// NextAddress is the node's address on the network an attach or
	// detach is moving it to, until the switch.
	NextAddress string `json:"next_address,omitempty"`
	// OldAddress is the address the node left in its last move (on the
	// internet, or in OldVPCID); the provider keeps it answering with an
	// error that names the service's new host.
	OldAddress string `json:"old_address,omitempty"`
	OldVPCID   string `json:"old_vpc_id,omitempty"`
	// CertPEM is the node's server certificate (project CA); ReplCertPEM
	// its replication client certificate (internal CA). Keys are sealed.
	CertPEM        string    `json:"cert_pem,omitempty"`
	KeySealed      []byte    `json:"key_sealed,omitempty"`
	ReplCertPEM    string    `json:"repl_cert_pem,omitempty"`
	ReplKeySealed  []byte    `json:"repl_key_sealed,omitempty"`
	CertNotAfterAt time.Time `json:"cert_not_after,omitzero"`
	// Archive is the node's WAL archiving as its agent last reported it.
	Archive *ArchiveStatus `json:"archive,omitempty"`
	// Volume is the node's encrypted volume as its agent last reported it.
	Volume *NodeVolume `json:"volume,omitempty"`
	// What the agent last reported applying.
	AppliedRevision          int64     `json:"applied_revision,omitempty"`
	AppliedAllowlistRevision int64     `json:"applied_allowlist_revision,omitempty"`
	ReportedAt               time.Time `json:"reported_at,omitzero"`
	// Replication is the agent's last replication report on the node
	// (At: when the control plane received it).
	Replication *ReplicationReport `json:"replication,omitempty"`
	// Departure: a replica that left its service (replaced, or moved off
	// a draining host) while it may have acknowledged commits; what
	// bounds them (ReplaceReplica, RecordAckBounds, DecideFailover).
	Departure *Departure `json:"departure,omitempty"`
	// Settings are the tenant settings that need a restart the node
	// started with, fixed for its life (NodeSettings).
	Settings map[string]string `json:"settings,omitempty"`
}

// NodeVolume is a node's encrypted volume: its format and cipher, the
// engine serving it (dm-crypt or userspace), its size and the bytes used
// in its file system; Full when PostgreSQL has no room left to write.
type NodeVolume struct {
	Format string `json:"format"`
	Cipher string `json:"cipher"`
	Engine string `json:"engine,omitempty"`
	Size   int64  `json:"size"`
	Used   int64  `json:"used"`
	Full   bool   `json:"full,omitempty"`
	Lost   bool   `json:"lost,omitempty"`
}

// ArchiveStatus is a node's WAL archiving (PostgreSQL's pg_stat_archiver):
// Failing when its last attempt failed.
type ArchiveStatus struct {
	LastArchivedWAL string    `json:"last_archived_wal,omitempty"`
	LastArchivedAt  time.Time `json:"last_archived_at,omitzero"`
	LastFailedWAL   string    `json:"last_failed_wal,omitempty"`
	LastFailedAt    time.Time `json:"last_failed_at,omitzero"`
	Failing         bool      `json:"failing"`
}

func (*Node) Kind() string     { return "node" }
func (n *Node) Parent() string { return n.ServiceID }

// Operation kinds.
const (
	OpServiceAttach = "service.attach"
	OpServiceDetach = "service.detach"
	// OpServiceBackup takes a base backup of the target's primary.
	OpServiceBackup = "service.backup"
	// OpServiceSwitchWAL makes the target's primary archive its current
	// WAL segment (the first step of a restore from it).
	OpServiceSwitchWAL = "service.switch_wal"
	// OpServiceRestore fills the target, a new service, from SourceID's
	// backups.
	OpServiceRestore = "service.restore"
)

// Operation is an asynchronous job on a target object.
type Operation struct {
	Meta
	Type     string `json:"type"`
	TargetID string `json:"target_id"`
	// VPCID is the destination VPC of an attach.
	VPCID string `json:"vpc_id,omitempty"`
	Error *Info  `json:"error,omitempty"`
	// Progress of an attach or detach: the network the service leaves
	// ("" for the internet), the step reached, and the desired-state
	// revision of the switch that agents must apply before the old
	// network is removed.
	FromVPCID      string `json:"from_vpc_id,omitempty"`
	Step           string `json:"step,omitempty"`
	SwitchRevision int64  `json:"switch_revision,omitempty"`
	// SourceID is a restore's source service; WaitID the operation (a
	// WAL switch of the source) it waits for before restoring.
	SourceID string `json:"source_id,omitempty"`
	WaitID   string `json:"wait_id,omitempty"`
	// BackupLabel is the base backup a backup operation took, or a
	// restore starts from.
	BackupLabel string `json:"backup_label,omitempty"`
	// Failover is a service.failover operation's progress.
	Failover *Failover `json:"failover,omitempty"`
	// Roll is a service.resize, service.upgrade or service.replace
	// operation's progress (roll.go).
	Roll *Roll `json:"roll,omitempty"`
}

// Steps of an attach or detach operation.
const (
	StepAddNetwork    = "add-network"
	StepSwitch        = "switch"
	StepRemoveNetwork = "remove-network"
	// A restore waits for the source's WAL switch, then restores.
	StepSwitchWAL = "switch-wal"
	StepRestore   = "restore"
)

func (*Operation) Kind() string     { return "operation" }
func (o *Operation) Parent() string { return o.TargetID }
