package apitype

import "time"

// Operator access (design 0012): grants, their certificates, sessions and
// recordings (operator tokens only), and the tenant's support grants.

// OpsGrantCreate asks for a grant to one node and a certificate for the
// session's public key (authorized_keys form; the private key stays with
// the CLI). TTL is a Go duration ("15m"; empty: 15 minutes; at most 1h).
// Psql asks for a data-access session (moat ops psql): refused unless the
// node's project has an active support grant.
type OpsGrantCreate struct {
	NodeID    string `json:"node_id"`
	Reason    string `json:"reason"`
	TTL       string `json:"ttl,omitempty"`
	PublicKey string `json:"public_key"`
	Psql      bool   `json:"psql,omitempty"`
}

// OpsGrant is an operator's grant to a node.
type OpsGrant struct {
	ID          string     `json:"id"`
	Operator    string     `json:"operator"`
	NodeID      string     `json:"node_id"`
	ProjectID   string     `json:"project_id"`
	Reason      string     `json:"reason"`
	SourceCIDRs []string   `json:"source_cidrs"`
	Serial      uint64     `json:"serial"`
	State       string     `json:"state"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
}

// OpsGrantIssued is a new grant with what the CLI needs to connect: the
// certificate (authorized_keys form), the host CA the node's host
// certificate must chain to, and the endpoint's address on the operator
// path.
type OpsGrantIssued struct {
	Grant       OpsGrant `json:"grant"`
	Certificate string   `json:"certificate"`
	HostCA      string   `json:"host_ca"`
	Endpoint    string   `json:"endpoint"`
}

// OpsSession is one operator SSH connection to a node.
type OpsSession struct {
	ID          string     `json:"id"`
	GrantID     string     `json:"grant_id"`
	NodeID      string     `json:"node_id"`
	ProjectID   string     `json:"project_id"`
	Operator    string     `json:"operator"`
	Remote      string     `json:"remote"`
	State       string     `json:"state"`
	OpenedAt    time.Time  `json:"opened_at"`
	ClosedAt    *time.Time `json:"closed_at,omitempty"`
	CloseReason string     `json:"close_reason,omitempty"`
	DurationMS  int64      `json:"duration_ms,omitempty"`
	BytesIn     int64      `json:"bytes_in,omitempty"`
	BytesOut    int64      `json:"bytes_out,omitempty"`
	Commands    int        `json:"commands,omitempty"`
	Recordings  int        `json:"recordings,omitempty"`
}

// OpsRecording is a terminal channel's recording (asciicast v2 text).
type OpsRecording struct {
	SessionID string `json:"session_id"`
	Channel   int    `json:"channel"`
	Cast      string `json:"cast"`
}

// SupportGrantCreate is a tenant admin's consent to operator data access
// for TTL (a Go duration; empty: 2h; at most 72h).
type SupportGrantCreate struct {
	Reason string `json:"reason"`
	TTL    string `json:"ttl,omitempty"`
}

// SupportGrant is a tenant's consent to operator data access.
type SupportGrant struct {
	ID        string     `json:"id"`
	ProjectID string     `json:"project_id"`
	GrantedBy string     `json:"granted_by"`
	Reason    string     `json:"reason"`
	State     string     `json:"state"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Privileges are the predefined roles a support session's temporary
	// role is a member of.
	Privileges []string `json:"privileges"`
}

// NodeOps is a node's operator endpoint configuration in its desired
// state: the operators' CA (authorized_keys form), the live grants for
// the node, the revoked serials whose certificates have not expired, and
// the support role a `moat ops psql` session logs in as while the
// project's support grant lasts.
type NodeOps struct {
	UserCA         string       `json:"user_ca"`
	Grants         []string     `json:"grants,omitempty"`
	RevokedSerials []uint64     `json:"revoked_serials,omitempty"`
	Support        *NodeSupport `json:"support,omitempty"`
}

// NodeSupport is the temporary PostgreSQL role of an active support
// grant, which the agent drops at ExpiresAt or when it leaves the desired
// state.
type NodeSupport struct {
	GrantID    string    `json:"grant_id"`
	Role       string    `json:"role"`
	Privileges []string  `json:"privileges"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Password is the role's password (redacted when printed or logged).
	Password string `json:"password"`
}

// OpsHostCertRequest is an agent registering a node's endpoint: its host
// public key (authorized_keys form) and its address on the operator path.
type OpsHostCertRequest struct {
	NodeID    string `json:"node_id"`
	PublicKey string `json:"public_key"`
	Endpoint  string `json:"endpoint"`
}

// OpsHostCert is the host certificate issued for a node's endpoint, and
// the operators' CA it accepts.
type OpsHostCert struct {
	Certificate string `json:"certificate"`
	UserCA      string `json:"user_ca"`
}

// OpsGrantCheck answers an agent asking whether a grant is live for a
// node (a grant newer than the agent's desired state).
type OpsGrantCheck struct {
	Live bool `json:"live"`
}

// OpsEvents are a node endpoint's audit events, sent by its agent. Events
// from the agent's spool carry its ID and their sequence numbers: the
// control plane skips those it already has (a batch sent again after its
// answer was lost).
type OpsEvents struct {
	Spool  string     `json:"spool,omitempty"`
	Events []OpsEvent `json:"events"`
}

// OpsEvent is one event of a node's operator endpoint (ops.Event).
type OpsEvent struct {
	NodeID     string    `json:"node_id"`
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`
	Reason     string    `json:"reason,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Session    string    `json:"session,omitempty"`
	Remote     string    `json:"remote,omitempty"`
	User       string    `json:"user,omitempty"`
	GrantID    string    `json:"grant_id,omitempty"`
	Serial     uint64    `json:"serial,omitempty"`
	Command    string    `json:"command,omitempty"`
	DurationMS int64     `json:"duration_ms,omitempty"`
	BytesIn    int64     `json:"bytes_in,omitempty"`
	BytesOut   int64     `json:"bytes_out,omitempty"`
	// Seq is the event's number in OpsEvents.Spool (0: not spooled).
	Seq uint64 `json:"seq,omitempty"`
}

// OpsRecordingUpload is a finished terminal recording sent by an agent;
// the control plane seals it.
type OpsRecordingUpload struct {
	NodeID    string `json:"node_id"`
	SessionID string `json:"session_id"`
	Channel   int    `json:"channel"`
	Cast      string `json:"cast"`
}
