// Package apitype holds the JSON wire types of Moat's HTTP API (/v1), shared
// by the API server, the Go client, the CLI and the console. It has no
// behaviour; validation lives in package domain.
package apitype

import (
	"encoding/json"
	"reflect"
	"time"
)

// Problem is an RFC 9457 problem details body (application/problem+json).
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	Field     string `json:"field,omitempty"`
	Hint      string `json:"hint,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// List is one page of a collection. NextPageToken is empty on the last page.
type List[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// StateInfo explains a state.
type StateInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// InternalCause is the internal cause of a failure (a command's
	// output, a path): present only in answers to operator tokens.
	InternalCause string `json:"internal_cause,omitempty"`
}

// Region is a supported region.
type Region struct {
	Code string   `json:"code"`
	AZs  []string `json:"azs"`
}

// Project is a tenant.
type Project struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	State    string `json:"state"`
	VPCQuota int    `json:"vpc_quota"`
	// ServiceQuota and NodeQuota are the project's live services and
	// their nodes it may hold (the platform's defaults unless raised;
	// absent means 0).
	ServiceQuota int       `json:"service_quota,omitempty"`
	NodeQuota    int       `json:"node_quota,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// ProjectCreate creates a project (operator only).
type ProjectCreate struct {
	Name string `json:"name"`
}

// QuotaUpdate sets a project's quotas (operator only).
type QuotaUpdate struct {
	VPCs     *int `json:"vpcs,omitempty"`
	Services *int `json:"services,omitempty"`
	Nodes    *int `json:"nodes,omitempty"`
}

// Token is an API token; Secret is set only in the response that creates it.
type Token struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Role      string `json:"role"`
	// Host is the one host an agent token reads and reports for.
	Host      string    `json:"host,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Secret    string    `json:"secret,omitempty"`
	// SecretShownOnce replaces Secret in a replayed create (same
	// Idempotency-Key): the secret is not kept.
	SecretShownOnce string `json:"secret_shown_once,omitempty"`
}

// PlatformTokenCreate creates an operator token (name required) or a
// host's agent token (name optional: agent-<host>).
type PlatformTokenCreate struct {
	Name string `json:"name"`
}

// TokenCreate creates a project token.
type TokenCreate struct {
	Role string `json:"role"`
	Name string `json:"name,omitempty"`
}

// VPC is a provider-side private network.
type VPC struct {
	ID         string     `json:"id"`
	ProjectID  string     `json:"project_id"`
	Name       string     `json:"name"`
	Region     string     `json:"region"`
	CIDR       string     `json:"cidr"`
	CloudVPCID string     `json:"cloud_vpc_id,omitempty"`
	State      string     `json:"state"`
	StateInfo  *StateInfo `json:"state_info,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
}

// VPCCreate creates a VPC.
type VPCCreate struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	CIDR   string `json:"cidr"`
}

// Peering is a peering connection from a VPC to a peer network.
type Peering struct {
	ID             string     `json:"id"`
	ProjectID      string     `json:"project_id"`
	VPCID          string     `json:"vpc_id"`
	PeerAccountID  string     `json:"peer_account_id"`
	PeerVPCID      string     `json:"peer_vpc_id"`
	PeerRegion     string     `json:"peer_region"`
	PeerCIDRs      []string   `json:"peer_cidrs"`
	CloudPeeringID string     `json:"cloud_peering_id,omitempty"`
	State          string     `json:"state"`
	StateInfo      *StateInfo `json:"state_info,omitempty"`
	ExpiresAt      time.Time  `json:"expires_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

// PeeringCreate creates a peering connection.
type PeeringCreate struct {
	VPCID         string   `json:"vpc_id"`
	PeerAccountID string   `json:"peer_account_id"`
	PeerVPCID     string   `json:"peer_vpc_id"`
	PeerRegion    string   `json:"peer_region"`
	PeerCIDRs     []string `json:"peer_cidrs"`
}

// AllowEntry is one allowed source range.
type AllowEntry struct {
	CIDR        string `json:"cidr"`
	Description string `json:"description"`
}

// Service is a PostgreSQL service.
type Service struct {
	ID          string       `json:"id"`
	ProjectID   string       `json:"project_id"`
	Name        string       `json:"name"`
	Region      string       `json:"region"`
	Nodes       int          `json:"nodes"`
	VPCID       string       `json:"vpc_id,omitempty"`
	Public      bool         `json:"public"`
	AllowedIPs  []AllowEntry `json:"allowed_ips"`
	WideOpen    bool         `json:"wide_open"`
	State       string       `json:"state"`
	StateInfo   *StateInfo   `json:"state_info,omitempty"`
	OperationID string       `json:"operation_id,omitempty"`
	Connection  *Connection  `json:"connection,omitempty"`
	NodeList    []Node       `json:"node_list,omitempty"`
	// Replication is how commits are replicated: mode none (1 node),
	// quorum (ANY 1 of 2 replicas), synchronous, or asynchronous with the
	// condition that makes it so (a lost replica).
	Replication *Replication `json:"replication,omitempty"`
	// Health: healthy, degraded or failed, with what happened and what
	// Moat is doing about it (a lost node, a failover and its step).
	Health *ServiceHealth `json:"health,omitempty"`
	// Settings are the tenant's PostgreSQL settings; PendingRestart names
	// those that need a restart and are not yet in force on the nodes
	// (`moat service upgrade` applies them).
	Settings       map[string]string `json:"settings,omitempty"`
	PendingRestart []string          `json:"pending_restart,omitempty"`
	// SettingsApplying: a running node has not yet reloaded the last
	// settings change.
	SettingsApplying bool      `json:"settings_applying,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	// AdminPassword is set only in the response that creates the service.
	AdminPassword string `json:"admin_password,omitempty"`
	// SecretShownOnce replaces AdminPassword in a replayed create (same
	// Idempotency-Key): the password is not kept.
	SecretShownOnce string `json:"secret_shown_once,omitempty"`
}

// Connection tells a client how to reach a service.
type Connection struct {
	Host string `json:"host"`
	// Address is the primary's IP address (the host name resolves to it).
	Address  string `json:"address,omitempty"`
	Port     int    `json:"port"`
	Database string `json:"database"`
	User     string `json:"user"`
	SSLMode  string `json:"sslmode"`
	// ReadOnlyHost resolves to the service's replicas (services of more
	// than one node).
	ReadOnlyHost string `json:"read_only_host,omitempty"`
	// MultiHost is a libpq connection string listing every node with
	// target_session_attrs=read-write: a driver tries them in turn and
	// lands on the primary, without waiting for DNS after a failover.
	MultiHost string `json:"multi_host,omitempty"`
}

// Replication is a service's replication mode and why it is weaker than
// its node count promises, if it is.
type Replication struct {
	Mode      string     `json:"mode"`
	Condition *StateInfo `json:"condition,omitempty"`
}

// ServiceHealth is a service's health: status healthy, degraded or
// failed, and the conditions that explain it.
type ServiceHealth struct {
	Status     string      `json:"status"`
	Conditions []StateInfo `json:"conditions,omitempty"`
}

// Node is one machine of a service.
type Node struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	AZ      string `json:"az"`
	State   string `json:"state"`
	Address string `json:"address,omitempty"`
	// StateInfo explains the state: why a failed node failed
	// (volume_full when its encrypted volume is full).
	StateInfo *StateInfo `json:"state_info,omitempty"`
	// Host is the agent host that runs the node; Role primary, replica
	// or fenced (a lost primary kept from acknowledging anything).
	Host string `json:"host,omitempty"`
	Role string `json:"role,omitempty"`
	// Replication, on a replica: whether it streams from the primary, the
	// primary's view of it (sync_state: quorum, sync, async, potential)
	// and the WAL it has not replayed yet.
	Streaming bool   `json:"streaming,omitempty"`
	SyncState string `json:"sync_state,omitempty"`
	LagBytes  uint64 `json:"lag_bytes,omitempty"`
	// Archive is the node's WAL archiving as its agent last saw it (a
	// primary's; nil before the first report).
	Archive *ArchiveStatus `json:"archive,omitempty"`
	// Volume is the node's encrypted volume (format, cipher, size and
	// bytes used) as its agent last saw it; nil without one.
	Volume *NodeVolume `json:"volume,omitempty"`
}

// ArchiveStatus is a node's WAL archiving: PostgreSQL's pg_stat_archiver.
// Failing is true when the last attempt failed (PostgreSQL retries; WAL
// accumulates on the node and recent commits are not restorable).
type ArchiveStatus struct {
	LastArchivedWAL string    `json:"last_archived_wal,omitempty"`
	LastArchivedAt  time.Time `json:"last_archived_at,omitzero"`
	LastFailedWAL   string    `json:"last_failed_wal,omitempty"`
	LastFailedAt    time.Time `json:"last_failed_at,omitzero"`
	Failing         bool      `json:"failing"`
}

// ServiceCreate creates a service. AllowedIPs nil means the default
// (open to the internet).
// ServiceUpdate changes a service: Nodes resizes it (1 to 3) by rolling
// forward (new nodes are added and catch up, leaving nodes are wiped; no
// node is reused), and the answer is the service.resize operation (202).
// Settings changes its PostgreSQL settings (a value sets one, null
// removes it): those a reload applies are in force on its nodes at once;
// those that need a restart are pending (Service.PendingRestart) until
// `moat service upgrade` moves it to fresh nodes that start with them.
// Settings alone answer the service (200).
type ServiceUpdate struct {
	Nodes    *int                     `json:"nodes,omitempty"`
	Settings map[string]*SettingValue `json:"settings,omitempty"`
}

// SettingValue is a PostgreSQL setting's value: a JSON string ("30s",
// "256MB") or number (200).
type SettingValue string

// UnmarshalJSON takes a string or a number.
func (v *SettingValue) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = SettingValue(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return &json.UnmarshalTypeError{Value: jsonValueKind(b), Type: reflect.TypeFor[string]()}
	}
	*v = SettingValue(n.String())
	return nil
}

// jsonValueKind names the kind of the JSON value b.
func jsonValueKind(b []byte) string {
	switch {
	case len(b) == 0:
		return "nothing"
	case b[0] == '{':
		return "object"
	case b[0] == '[':
		return "array"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	}
	return "value"
}

type ServiceCreate struct {
	Name         string       `json:"name"`
	Region       string       `json:"region"`
	Nodes        int          `json:"nodes,omitempty"`
	AllowedIPs   []AllowEntry `json:"allowed_ips,omitempty"`
	ConfirmEmpty bool         `json:"confirm_empty,omitempty"`
	// RestoreFrom, when set, creates the service from another service's
	// backups (point-in-time recovery) instead of an empty database.
	// Region, Nodes and AllowedIPs default to the source's; the new
	// service is on the internet (attach it to a VPC afterwards).
	RestoreFrom *RestoreFrom `json:"restore_from,omitempty"`
}

// RestoreFrom names the backups a new service starts from.
type RestoreFrom struct {
	// ServiceID is the source service, in the same project.
	ServiceID string `json:"service_id"`
	// ToTime is the point in time to recover to; nil: everything
	// committed when the restore was requested.
	ToTime *time.Time `json:"to_time,omitempty"`
}

// Backup is a stored base backup of a service. A service can be restored
// to any time after the EndTime of one of its backups.
type Backup struct {
	Label          string    `json:"label"`
	Timeline       uint32    `json:"timeline"`
	StartLSN       string    `json:"start_lsn"`
	EndLSN         string    `json:"end_lsn,omitempty"`
	StartTime      time.Time `json:"start_time"`
	EndTime        time.Time `json:"end_time"`
	Size           int64     `json:"size"`
	StoredSize     int64     `json:"stored_size"`
	KeyFingerprint string    `json:"key_fingerprint"`
}

// Allowlist is a service's allowlist. Revision is also the ETag; Applied is
// true once every node enforces this revision.
type Allowlist struct {
	ServiceID       string       `json:"service_id"`
	AllowedIPs      []AllowEntry `json:"allowed_ips"`
	Revision        int64        `json:"revision"`
	AppliedRevision int64        `json:"applied_revision"`
	Applied         bool         `json:"applied"`
	WideOpen        bool         `json:"wide_open"`
	// Failed lists the service's nodes that failed before enforcing
	// Revision: the change will not be applied until they run again.
	// Waiting for Applied should stop and report them.
	Failed []NodeFailure `json:"failed,omitempty"`
}

// NodeFailure is a node that could not apply a change, and why.
type NodeFailure struct {
	NodeID string     `json:"node_id"`
	Reason *StateInfo `json:"reason"`
}

// AllowlistUpdate replaces a service's allowlist. An empty list needs
// ConfirmEmpty.
type AllowlistUpdate struct {
	AllowedIPs   []AllowEntry `json:"allowed_ips"`
	ConfirmEmpty bool         `json:"confirm_empty,omitempty"`
}

// AttachRequest attaches a service to a VPC (or moves it to another).
type AttachRequest struct {
	VPCID string `json:"vpc_id"`
}

// Operation is an asynchronous job.
type Operation struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	Type      string `json:"type"`
	TargetID  string `json:"target_id"`
	VPCID     string `json:"vpc_id,omitempty"`
	// SourceID is a restore's source service.
	SourceID string `json:"source_id,omitempty"`
	// BackupLabel is the base backup a backup operation took, or a
	// restore starts from.
	BackupLabel string `json:"backup_label,omitempty"`
	State       string `json:"state"`
	// Step is the step a multi-step operation has reached (a failover's,
	// a resize's or an upgrade's: add-nodes, catch-up, switchover, …).
	Step      string     `json:"step,omitempty"`
	Error     *StateInfo `json:"error,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// AuditEntry is one audit log row.
type AuditEntry struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	ProjectID string    `json:"project_id,omitempty"`
	Action    string    `json:"action"`
	Target    string    `json:"target,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Source    string    `json:"source,omitempty"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
	Hash      string    `json:"hash"`
}

// AuditVerify is the result of verifying the audit chain.
type AuditVerify struct {
	OK          bool   `json:"ok"`
	Entries     int64  `json:"entries"`
	Checkpoints int64  `json:"checkpoints"`
	FirstBad    int64  `json:"first_bad,omitempty"`
	Problem     string `json:"problem,omitempty"`
	// LastSeq is the newest entry; SignedThrough the newest entry a
	// checkpoint signs (entries after it are protected by the chain only).
	LastSeq       int64 `json:"last_seq,omitempty"`
	SignedThrough int64 `json:"signed_through,omitempty"`
	// ExternalCheckpoints is how many checkpoints the checkpoint file
	// outside the database holds.
	ExternalCheckpoints int64 `json:"external_checkpoints,omitempty"`
	// Message is the one-line summary: "signed through entry N of M".
	Message string `json:"message,omitempty"`
}

// Health is the server's liveness answer.
type Health struct {
	Status   string `json:"status"`
	Revision int64  `json:"revision"`
}

// Identity is what the API knows of the caller's token (GET /v1/whoami):
// its ID, role, project (project tokens) and name.
type Identity struct {
	TokenID   string `json:"token_id"`
	Role      string `json:"role"`
	ProjectID string `json:"project_id,omitempty"`
	Name      string `json:"name,omitempty"`
}

// ConsoleLink is a one-time console sign-in link (POST /v1/console/links):
// a URL holding a code that stands for the caller's operator token once,
// until ExpiresAt. The token itself is never in the URL.
type ConsoleLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SupportRequest is a tenant's request to the platform operator: today a
// quota increase (resource vpcs, services or nodes, from current to
// requested). State is open, approved or declined; reply is the
// operator's answer.
type SupportRequest struct {
	ID        string     `json:"id"`
	ProjectID string     `json:"project_id"`
	Type      string     `json:"type"`
	Resource  string     `json:"resource"`
	Requested int        `json:"requested"`
	Current   int        `json:"current"`
	Message   string     `json:"message"`
	Requester string     `json:"requester"`
	State     string     `json:"state"`
	Reply     string     `json:"reply,omitempty"`
	DecidedBy string     `json:"decided_by,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
}

// SupportRequestCreate files a support request. Type defaults to
// quota_increase.
type SupportRequestCreate struct {
	Type      string `json:"type,omitempty"`
	Resource  string `json:"resource"`
	Requested int    `json:"requested"`
	Message   string `json:"message"`
}

// SupportDecision approves or declines a support request (operator); a
// decline needs the reply.
type SupportDecision struct {
	Reply string `json:"reply,omitempty"`
}
