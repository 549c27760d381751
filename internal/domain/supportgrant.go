package domain

import (
	"fmt"
	"strings"
	"time"
)

// Support grants (tenant consent to data access, design 0012): a project
// admin allows the platform's operators to open `moat ops psql` sessions to
// the project's nodes until the grant expires or is revoked. Each session
// logs in as a temporary PostgreSQL role with SupportPrivileges, which the
// node's agent drops when the grant ends.

// PrefixSupportGrant is the ID prefix of support grants.
const PrefixSupportGrant = "sgr-"

// Limits of a support grant.
const (
	// DefaultSupportTTL is a support grant's lifetime when none is asked for.
	DefaultSupportTTL = 2 * time.Hour
	// MaxSupportTTL caps a support grant's lifetime.
	MaxSupportTTL = 72 * time.Hour
	// MinSupportTTL is the shortest support grant. A control plane's
	// configuration may lower it (controlplane.Config.SupportMinTTL), which
	// only the tests do, to see a grant end by expiry in seconds: a shorter
	// grant narrows the tenant's consent, it never widens it.
	MinSupportTTL = time.Minute
)

// SupportPrivileges are the predefined PostgreSQL roles the temporary role
// of a support session is a member of: read every table, view and
// sequence, and every statistic; it writes nothing and creates nothing.
var SupportPrivileges = []string{"pg_read_all_data", "pg_read_all_stats"}

// SupportGrant records a tenant's consent to operator data access.
type SupportGrant struct {
	Meta
	// GrantedBy is the actor (token) of the admin who created it.
	GrantedBy string     `json:"granted_by"`
	Reason    string     `json:"reason"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// PasswordSealed is the temporary role's password, sealed with
	// SupportPasswordAD; the agents set it and hand it only to the psql
	// sessions of the grant.
	PasswordSealed []byte `json:"password_sealed,omitempty"`
}

// SupportPasswordAD binds a support grant's sealed role password to it.
func SupportPasswordAD(id string) []byte { return []byte("support-password:" + id) }

func (*SupportGrant) Kind() string     { return "support_grant" }
func (g *SupportGrant) Parent() string { return g.ProjectID }

// NewSupportGrant validates a support grant of project by grantedBy and
// returns it, made at now, with a fresh ID. A ttl of 0 is DefaultSupportTTL;
// minTTL is the shortest allowed (0: MinSupportTTL).
func NewSupportGrant(project, grantedBy, reason string, ttl, minTTL time.Duration, now time.Time) (*SupportGrant, error) {
	r, err := NormalizeOpsReason(reason)
	if err != nil {
		return nil, err
	}
	if minTTL <= 0 {
		minTTL = MinSupportTTL
	}
	switch {
	case ttl == 0:
		ttl = DefaultSupportTTL
	case ttl < minTTL:
		return nil, Invalidf(CodeInvalidTTL, "ttl", fmt.Sprintf("ask for at least %s", minTTL), "a support grant of %s is too short", ttl)
	case ttl > MaxSupportTTL:
		return nil, Invalidf(CodeInvalidTTL, "ttl", fmt.Sprintf("ask for at most %s, and for a new grant when it ends", MaxSupportTTL), "a support grant of %s is longer than %s", ttl, MaxSupportTTL)
	}
	now = now.UTC().Truncate(time.Second)
	return &SupportGrant{
		Meta:      Meta{ID: NewID(PrefixSupportGrant), ProjectID: project, State: StateActive, CreatedAt: now, UpdatedAt: now},
		GrantedBy: grantedBy,
		Reason:    r,
		ExpiresAt: now.Add(ttl),
	}, nil
}

// StateAt is the support grant's state at now: active, expired or revoked.
func (g *SupportGrant) StateAt(now time.Time) string {
	switch {
	case g.RevokedAt != nil:
		return StateRevoked
	case !now.Before(g.ExpiresAt):
		return StateExpired
	}
	return StateActive
}

// Active reports whether the grant admits support sessions at now.
func (g *SupportGrant) Active(now time.Time) bool { return g.StateAt(now) == StateActive }

// Revoke ends the grant at now; revoking one that already ended is a
// conflict.
func (g *SupportGrant) Revoke(now time.Time) error {
	if st := g.StateAt(now); st != StateActive {
		return Conflictf(CodeInvalidState, "", "only an active support grant can be revoked", "support grant %s is %s", g.ID, st)
	}
	t := now.UTC()
	g.RevokedAt = &t
	g.State = StateRevoked
	g.UpdatedAt = t
	return nil
}

// SupportRole is the name of the temporary PostgreSQL role of support
// grant id on a node: a valid lowercase identifier.
func SupportRole(id string) string {
	return "moat_support_" + strings.TrimPrefix(id, PrefixSupportGrant)
}

// ActiveSupportGrant returns the active grant of gs with the latest
// expiry at now, or nil.
func ActiveSupportGrant(gs []*SupportGrant, now time.Time) *SupportGrant {
	var best *SupportGrant
	for _, g := range gs {
		if g.Active(now) && (best == nil || g.ExpiresAt.After(best.ExpiresAt)) {
			best = g
		}
	}
	return best
}
