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
