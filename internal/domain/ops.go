package domain

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Operator access (break-glass SSH to a node, see docs/design/0012): the
// product rules of a grant. The certificates and the node's endpoint are in
// internal/ops.

// PrefixOpsGrant is the ID prefix of operator-access grants. A grant's ID is
// the KeyId of the certificate issued for it.
const PrefixOpsGrant = "grant-"

// OpsPrincipal is the only principal of an operator certificate and the
// login name of the node's dedicated operator account.
const OpsPrincipal = "moat-ops"

// OpsPsqlCommand is the command line of a `moat ops psql` session: the
// node's endpoint runs psql as the project's support role, and refuses it
// without an active support grant.
const OpsPsqlCommand = "moat-psql"

// OpsPgStatusCommand is the command line of pg_ctl status on a node, which
// needs the data directory closed to the operator account: the endpoint
// runs it as the PostgreSQL user.
const OpsPgStatusCommand = "moat-pg-status"

// Limits of an operator grant.
const (
	// DefaultOpsTTL is a grant's lifetime when none is asked for.
	DefaultOpsTTL = 15 * time.Minute
	// MaxOpsTTL caps a grant's lifetime (and its certificate's ValidBefore).
	MaxOpsTTL = time.Hour
	// MinOpsTTL is the shortest grant: shorter ones would expire while the
	// client connects.
	MinOpsTTL = time.Minute
	// OpsClockSkew backdates a certificate's ValidAfter so that a node whose
	// clock is slightly behind the control plane's still accepts it.
	OpsClockSkew = 30 * time.Second
	// MaxOpsReasonLen bounds a grant's reason (bytes).
	MaxOpsReasonLen = 500
	// MinOpsReasonLen asks for a reason a reader of the audit log can use.
	MinOpsReasonLen = 8
	// MaxOpsSources bounds a grant's source-address list.
	MaxOpsSources = 16
)

// StateRevoked is a grant revoked before its expiry.
const StateRevoked = "revoked"

// Error codes of operator grants.
const (
	CodeInvalidTTL    = "invalid_ttl"
	CodeInvalidReason = "invalid_reason"
)

// OpsGrant records that an operator may open SSH sessions to one node until
// ExpiresAt: who, which node, why. ProjectID is the node's project, so the
// tenant's audit log shows it too. Serial is the serial of the certificate
// issued for it (the node's revocation list holds serials).
type OpsGrant struct {
	Meta
	Operator    string     `json:"operator"`
	NodeID      string     `json:"node_id"`
	Reason      string     `json:"reason"`
	SourceCIDRs []string   `json:"source_cidrs"`
	Serial      uint64     `json:"serial"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
}

func (*OpsGrant) Kind() string     { return "ops_grant" }
func (g *OpsGrant) Parent() string { return g.NodeID }

// OpsGrantRequest is what an operator asks for.
type OpsGrantRequest struct {
	Operator string
	NodeID   string
	Reason   string
	// TTL is the grant's lifetime; 0 means DefaultOpsTTL.
	TTL time.Duration
	// SourceCIDRs are the addresses the operator connects from (the
	// operator path's relay or management network); bare addresses are
	// host prefixes.
	SourceCIDRs []string
}

// NewOpsGrant validates req and returns the grant it makes at now, with a
// fresh ID. The serial is the caller's to assign (unique per CA).
func NewOpsGrant(req OpsGrantRequest, now time.Time) (*OpsGrant, error) {
	if req.Operator == "" {
		return nil, Invalidf(CodeRequired, "operator", "authenticate with an operator token", "an operator is required")
	}
	if !ValidID(PrefixNode, req.NodeID) {
		return nil, Invalidf(CodeInvalidID, "node_id", "give a node ID such as node-abcdefghijklmnop (moat nodes list)", "%q is not a node ID", req.NodeID)
	}
	reason, err := NormalizeOpsReason(req.Reason)
	if err != nil {
		return nil, err
	}
	ttl, err := NormalizeOpsTTL(req.TTL)
	if err != nil {
		return nil, err
	}
	srcs, err := normalizeOpsSources(req.SourceCIDRs)
	if err != nil {
		return nil, err
	}
	now = now.UTC().Truncate(time.Second)
	return &OpsGrant{
		Meta:        Meta{ID: NewID(PrefixOpsGrant), State: StateActive, CreatedAt: now, UpdatedAt: now},
		Operator:    req.Operator,
		NodeID:      req.NodeID,
		Reason:      reason,
		SourceCIDRs: srcs,
		ExpiresAt:   now.Add(ttl),
	}, nil
}

// NormalizeOpsTTL returns the lifetime of a grant asked for with ttl: 0 is
// DefaultOpsTTL; outside [MinOpsTTL, MaxOpsTTL] is refused.
func NormalizeOpsTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return DefaultOpsTTL, nil
	case ttl < MinOpsTTL:
		return 0, Invalidf(CodeInvalidTTL, "ttl", fmt.Sprintf("ask for at least %s", MinOpsTTL), "a grant of %s is too short", ttl)
	case ttl > MaxOpsTTL:
		return 0, Invalidf(CodeInvalidTTL, "ttl", fmt.Sprintf("ask for at most %s, and for a new grant when it ends", MaxOpsTTL), "a grant of %s is longer than %s", ttl, MaxOpsTTL)
	}
	return ttl, nil
}

// NormalizeOpsReason trims a grant's reason and checks it: required, at
// least MinOpsReasonLen and at most MaxOpsReasonLen bytes, one line of
// printable text.
func NormalizeOpsReason(reason string) (string, error) {
	r := strings.TrimSpace(reason)
	const hint = `say why in a sentence, e.g. --reason "INC-123: replica lag on node"`
	if r == "" {
		return "", Invalidf(CodeRequired, "reason", hint, "a reason is required")
	}
	if len(r) < MinOpsReasonLen {
		return "", Invalidf(CodeInvalidReason, "reason", hint, "the reason %q is too short to explain the access", r)
	}
	if len(r) > MaxOpsReasonLen {
		return "", Invalidf(CodeInvalidReason, "reason", fmt.Sprintf("shorten it to %d bytes; link the ticket for details", MaxOpsReasonLen), "the reason is %d bytes long", len(r))
	}
	if !utf8.ValidString(r) || strings.IndexFunc(r, unicode.IsControl) >= 0 {
		return "", Invalidf(CodeInvalidReason, "reason", "use printable text on one line", "the reason contains control characters or invalid UTF-8")
	}
	return r, nil
}

func normalizeOpsSources(cidrs []string) ([]string, error) {
	if len(cidrs) == 0 {
		return nil, Invalidf(CodeRequired, "source_cidrs", "give the addresses operators connect from (the operator relay or management network)", "at least one source address is required")
	}
	if len(cidrs) > MaxOpsSources {
		return nil, Invalidf(CodeTooManyEntries, "source_cidrs", fmt.Sprintf("at most %d ranges; use the relay's address", MaxOpsSources), "%d source ranges is too many", len(cidrs))
	}
	out := make([]string, 0, len(cidrs))
	for i, c := range cidrs {
		p, err := ParsePrefix(fmt.Sprintf("source_cidrs[%d]", i), c, true)
		if err != nil {
			return nil, err
		}
		if p.Bits() == 0 {
			return nil, Invalidf(CodeInvalidCIDR, fmt.Sprintf("source_cidrs[%d]", i), "name the operator path's addresses, not the whole internet", "%s admits every address", p)
		}
		out = append(out, p.String())
	}
	return out, nil
}

// StateAt is the grant's state at now: active, expired or revoked.
func (g *OpsGrant) StateAt(now time.Time) string {
	switch {
	case g.RevokedAt != nil:
		return StateRevoked
	case !now.Before(g.ExpiresAt):
		return StateExpired
	}
	return StateActive
}

// Active reports whether the grant admits sessions at now.
func (g *OpsGrant) Active(now time.Time) bool { return g.StateAt(now) == StateActive }

// Revoke marks the grant revoked at now. Revoking an expired or already
// revoked grant is a conflict.
func (g *OpsGrant) Revoke(now time.Time) error {
	if st := g.StateAt(now); st != StateActive {
		return Conflictf(CodeInvalidState, "", "only an active grant can be revoked", "grant %s is %s", g.ID, st)
	}
	t := now.UTC()
	g.RevokedAt = &t
	g.State = StateRevoked
	g.UpdatedAt = t
	return nil
}

// CertValidity is the validity window of the certificate issued for the
// grant at now: from now less OpsClockSkew until the grant expires. A grant
// that is no longer active has none.
func (g *OpsGrant) CertValidity(now time.Time) (after, before time.Time, err error) {
	if st := g.StateAt(now); st != StateActive {
		return time.Time{}, time.Time{}, Conflictf(CodeInvalidState, "", "ask for a new grant", "grant %s is %s", g.ID, st)
	}
	return now.Add(-OpsClockSkew), g.ExpiresAt, nil
}

// StateClosed is an operator session that ended.
const StateClosed = "closed"

// OpsSession is one SSH connection of an operator to a node's endpoint,
// from authentication to close, as the node's agent reported it. Its ID is
// the endpoint's session ID; ProjectID is the node's project.
type OpsSession struct {
	Meta
	GrantID  string     `json:"grant_id"`
	NodeID   string     `json:"node_id"`
	Operator string     `json:"operator"`
	Remote   string     `json:"remote"`
	OpenedAt time.Time  `json:"opened_at"`
	ClosedAt *time.Time `json:"closed_at,omitempty"`
	// CloseReason is why it ended: client, revoked, expired, shutdown.
	CloseReason string `json:"close_reason,omitempty"`
	DurationMS  int64  `json:"duration_ms,omitempty"`
	BytesIn     int64  `json:"bytes_in,omitempty"`
	BytesOut    int64  `json:"bytes_out,omitempty"`
	// Commands counts the exec requests; Recordings the recorded
	// terminal channels (numbered from 1).
	Commands   int `json:"commands,omitempty"`
	Recordings int `json:"recordings,omitempty"`
}

func (*OpsSession) Kind() string     { return "ops_session" }
func (s *OpsSession) Parent() string { return s.NodeID }

// NewOpsSession is the session id of grant g opened from remote at.
func NewOpsSession(id string, g *OpsGrant, project, remote string, at time.Time) *OpsSession {
	at = at.UTC()
	return &OpsSession{
		Meta:    Meta{ID: id, ProjectID: project, State: StateActive, CreatedAt: at, UpdatedAt: at},
		GrantID: g.ID, NodeID: g.NodeID, Operator: g.Operator, Remote: remote, OpenedAt: at,
	}
}

// Close records the session's end at: why, how long and how many bytes.
// Closing a closed session changes nothing.
func (s *OpsSession) Close(reason string, d time.Duration, in, out int64, at time.Time) {
	if s.State == StateClosed {
		return
	}
	at = at.UTC()
	s.State = StateClosed
	s.ClosedAt = &at
	s.UpdatedAt = at
	s.CloseReason = reason
	s.DurationMS = d.Milliseconds()
	s.BytesIn, s.BytesOut = in, out
}

// OpsEndpoint is a node's operator SSH endpoint as its agent registered it:
// where the operator path reaches it and its host certificate (signed by
// the host CA the CLI pins). Its ID is OpsEndpointID of the node's.
type OpsEndpoint struct {
	Meta
	Host string `json:"host"`
	// Address is host:port on the operator path.
	Address string `json:"address"`
	// HostKey and HostCert are in authorized_keys form.
	HostKey  string    `json:"host_key"`
	HostCert string    `json:"host_cert"`
	IssuedAt time.Time `json:"issued_at"`
}

func (*OpsEndpoint) Kind() string     { return "ops_endpoint" }
func (e *OpsEndpoint) Parent() string { return e.Host }

// NewOpsEndpoint is the endpoint of node n registered by its host's agent
// at now.
func NewOpsEndpoint(n *Node, address, hostKey, hostCert string, now time.Time) *OpsEndpoint {
	now = now.UTC()
	return &OpsEndpoint{
		Meta: Meta{ID: OpsEndpointID(n.ID), ProjectID: n.ProjectID, State: StateActive, CreatedAt: now, UpdatedAt: now},
		Host: n.Host, Address: address, HostKey: hostKey, HostCert: hostCert, IssuedAt: now,
	}
}

// OpsEndpointID is the ID of node nodeID's endpoint record (IDs are unique
// across kinds in the store).
func OpsEndpointID(nodeID string) string { return "ep-" + nodeID }
