package apitype

import (
	"time"

	"github.com/moatdb/moat/internal/metrics/pgstat"
)

// HostDesired is the desired state of one agent host at a revision: every
// node placed on it. Agents long-poll GET /v1/hosts/{host}/desired?after=N.
type HostDesired struct {
	Host string `json:"host"`
	// Revision is the host's own desired-state revision: the platform's
	// revision at the last change that affected this host (only those
	// answer its long poll).
	Revision int64         `json:"revision"`
	Nodes    []NodeDesired `json:"nodes"`
	// HeartbeatMillis is how often the control plane expects the host's
	// heartbeat (a report), in milliseconds (0: the agent's default).
	HeartbeatMillis int64 `json:"heartbeat_ms,omitempty"`
	// Deleted names the host's nodes that were deleted. An agent wipes a
	// node it has only when the desired state says so: the node's state
	// is deleting, or its ID is here. A node in neither (a wrong --host,
	// a control plane restored from an old backup) is kept.
	Deleted []string `json:"deleted,omitempty"`
}

// Node roles.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	// RoleFenced: a lost primary; the agent stops its PostgreSQL, closes
	// its firewall and never restarts it as it was.
	RoleFenced = "fenced"
	// RoleDemoted: a planned switchover's old primary; the agent stops
	// its PostgreSQL with a fast shutdown (the standbys receive its last
	// WAL), reports the position of its shutdown checkpoint, and starts
	// it again only when the role goes back to primary.
	RoleDemoted = "demoted"
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
	// Upstream is the node a replica follows (its PrimaryAddress); a
	// replica with none stays in recovery, following no one (a
	// failover's detach step). A primary in recovery is promoted.
	Upstream string `json:"upstream,omitempty"`
	// SyncStandbyNames, on a primary, is its synchronous_standby_names
	// (the replicas' application_name is their node ID).
	SyncStandbyNames string `json:"synchronous_standby_names,omitempty"`
	// Settings are the tenant's PostgreSQL settings for the node
	// (domain.NodeSettings: the catalog's names); Moat's own settings
	// win over them. A change is written and reloaded, never restarted:
	// those that need a restart reach a node only when it is created.
	Settings map[string]string `json:"settings,omitempty"`
	// LeaseMillis, on a primary of a replicated service, is how long the
	// agent keeps it writable without reaching the control plane, in
	// milliseconds, counted from the sending of the last report the
	// control plane acknowledged (0: forever). LeaseSeconds is the same
	// rounded down, for agents that predate LeaseMillis.
	LeaseMillis  int64 `json:"lease_ms,omitempty"`
	LeaseSeconds int   `json:"lease_seconds,omitempty"`
	// Switchover: the service's primary is being switched over; the agent
	// reads the node's replication every 50 ms (not every second), so
	// each hop of the switchover is reported at once.
	Switchover bool `json:"switchover,omitempty"`

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
	// PeerNodes name the other nodes: a primary accepts each one's
	// replication certificate (its common name is the node ID) only from
	// that node's address.
	PeerNodes []PeerNode `json:"peer_nodes,omitempty"`

	// BackupPublicKeyPEM encrypts the node's backups (the private key
	// never leaves the control plane).
	BackupPublicKeyPEM string `json:"backup_public_key_pem,omitempty"`
	// BackupAuthKey authenticates what the agent stores for the node's
	// service (backup.AuthKey). The agent keeps it: it never reaches the
	// node's files or its PostgreSQL, which must not be able to forge a
	// record in the store.
	BackupAuthKey []byte `json:"backup_auth_key,omitempty"`
	// Archive, when set, turns on WAL archiving: every WAL file the node
	// completes is encrypted to BackupPublicKeyPEM and stored.
	Archive *NodeArchive `json:"archive,omitempty"`
	// Tasks are one-off jobs for a primary (base backups, WAL switches),
	// each done once per ID; results come back in NodeReport.Tasks.
	Tasks []NodeTask `json:"tasks,omitempty"`
	// Restore, on the primary of a restored service until it is restored,
	// is where its data comes from instead of initdb.
	Restore *NodeRestore `json:"restore,omitempty"`
	// Ops configures the node's operator SSH endpoint (design 0012); nil:
	// the control plane has no operator CA (no endpoint runs).
	Ops *NodeOps `json:"ops,omitempty"`
}

// PeerNode is another node of the service.
type PeerNode struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
}

// NodeArchive is where a node's backups go: the region's object store
// (a local directory on the agent's host) under the service's region.
type NodeArchive struct {
	Region   string `json:"region"`
	StoreDir string `json:"store_dir"`
}

// Node task types.
const (
	// TaskBaseBackup takes an encrypted base backup into the archive.
	TaskBaseBackup = "base_backup"
	// TaskSwitchWAL closes the current WAL segment and waits until it is
	// archived: everything committed before the task is then restorable.
	TaskSwitchWAL = "switch_wal"
)

// NodeTask is a one-off job: its ID is the operation's.
type NodeTask struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// NodeRestore is the base backup and WAL a restored primary starts from:
// the source service's archive, to ToTime (nil: to its end).
// PrivateKeyPEM, the source's backup private key, is empty while the
// restore waits for its WAL switch, and is sent only until the node is
// restored; the agent never writes it to its state file.
type NodeRestore struct {
	SourceServiceID    string     `json:"source_service_id"`
	SourcePublicKeyPEM string     `json:"source_public_key_pem"`
	PrivateKeyPEM      string     `json:"private_key_pem,omitempty"`
	BackupLabel        string     `json:"backup_label"`
	ToTime             *time.Time `json:"to_time,omitempty"`
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

// HostReport is what an agent applied. A report is also the host's
// heartbeat: agents send one at least every HostDesired.HeartbeatMillis, with no
// nodes when nothing changed.
type HostReport struct {
	Nodes []NodeReport `json:"nodes"`
	// AgentVersion is the reporting agent's version.
	AgentVersion string `json:"agent_version,omitempty"`
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
	// Tasks are the results of the node's finished tasks still in the
	// desired state.
	Tasks []TaskReport `json:"tasks,omitempty"`
	// Archive is the primary's WAL archiving.
	Archive *ArchiveStatus `json:"archive,omitempty"`
	// Volume is the node's encrypted volume, when it has one.
	Volume *NodeVolume `json:"volume,omitempty"`
	// Replication is the node's PostgreSQL replication now.
	Replication *NodeReplication `json:"replication,omitempty"`
}

// NodeReplication is what an agent sees of a node's replication. LSNs
// are PostgreSQL's text form ("16/B374D848").
type NodeReplication struct {
	// Up: PostgreSQL answers; DownSince: when the agent first found it
	// not answering.
	Up        bool       `json:"up"`
	DownSince *time.Time `json:"down_since,omitempty"`
	// InRecovery: it runs as a replica; Upstream the node it follows as
	// configured; Streaming whether its WAL receiver streams.
	InRecovery bool   `json:"in_recovery"`
	Timeline   int    `json:"timeline,omitempty"`
	Upstream   string `json:"upstream,omitempty"`
	Streaming  bool   `json:"streaming,omitempty"`
	// NotStreamingSince, on a replica that follows an upstream, is when
	// the agent first found it not streaming (absent while it streams).
	NotStreamingSince *time.Time `json:"not_streaming_since,omitempty"`
	// ReceivedLSN: WAL received (a replica) or flushed (a primary);
	// ReplayedLSN: replayed (a replica).
	ReceivedLSN string `json:"received_lsn,omitempty"`
	ReplayedLSN string `json:"replayed_lsn,omitempty"`
	// Standbys: a primary's pg_stat_replication.
	Standbys []StandbyStatus `json:"standbys,omitempty"`
	// Fenced: the node is kept from acknowledging writes.
	Fenced bool `json:"fenced,omitempty"`
	// Switching: the node's service is switching its primary over; its
	// positions are reported as they move (the switchover waits on them).
	Switching bool `json:"switching,omitempty"`
}

// StandbyStatus is one row of a primary's pg_stat_replication.
type StandbyStatus struct {
	Name      string `json:"name"`
	SyncState string `json:"sync_state"`
	FlushLSN  string `json:"flush_lsn,omitempty"`
	ReplayLSN string `json:"replay_lsn,omitempty"`
}

// HostStats is the latest PostgreSQL statistics of a host's nodes, read by
// its agent as the monitoring role every few seconds, for the projects'
// tenants (GET /v1/projects/{p}/metrics). Agents post it to
// /v1/hosts/{host}/stats; the control plane keeps it in memory only (it
// is neither stored nor audited, unlike a HostReport).
type HostStats struct {
	Nodes []pgstat.Snapshot `json:"nodes"`
}

// NodeVolume is a node's encrypted volume as its agent last saw it.
type NodeVolume struct {
	Format string `json:"format"` // "LUKS2"
	Cipher string `json:"cipher"` // "aes-xts-plain64"
	// Engine serves it: "dm-crypt" or "userspace".
	Engine string `json:"engine,omitempty"`
	Size   int64  `json:"size"` // bytes of the encrypted data area
	Used   int64  `json:"used"` // bytes used in its file system
	// Full: no space is left for PostgreSQL; the node is then reported
	// failed with the message "volume full".
	Full bool `json:"full,omitempty"`
	// Lost: the volume's server is gone with its key (killed, or the
	// host restarted), so its data can never be read again; the node is
	// reported failed and must be replaced.
	Lost bool `json:"lost,omitempty"`
}

// Task report states.
const (
	TaskDone   = "done"
	TaskFailed = "failed"
)

// TaskReport is a finished task.
type TaskReport struct {
	ID      string  `json:"id"`
	State   string  `json:"state"`
	Message string  `json:"message,omitempty"`
	Backup  *Backup `json:"backup,omitempty"`
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
