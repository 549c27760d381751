package desired

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// TestCompileOps: a node's endpoint gets the live grants for it only, the
// serials of revoked grants until their certificates expire, and its
// project's active support grant with the role's password.
func TestCompileOps(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	n := &domain.Node{Meta: domain.Meta{ID: "node-a", ProjectID: "proj-a"}}
	grant := func(id, node string, serial uint64, exp time.Duration, revoked bool) *domain.OpsGrant {
		g := &domain.OpsGrant{Meta: domain.Meta{ID: id}, NodeID: node, Serial: serial, ExpiresAt: now.Add(exp)}
		if revoked {
			r := now.Add(-time.Minute)
			g.RevokedAt = &r
		}
		return g
	}
	sg := &domain.SupportGrant{Meta: domain.Meta{ID: "sgr-abc", ProjectID: "proj-a"}, ExpiresAt: now.Add(time.Hour), PasswordSealed: []byte("p")}
	old := &domain.SupportGrant{Meta: domain.Meta{ID: "sgr-old", ProjectID: "proj-a"}, ExpiresAt: now.Add(-time.Hour), PasswordSealed: []byte("p")}
	in := Input{Now: now, OpsUserCA: "ssh-ed25519 CA", Open: open,
		OpsGrants: []*domain.OpsGrant{
			grant("grant-live", "node-a", 1, time.Minute, false),
			grant("grant-other", "node-b", 2, time.Minute, false),
			grant("grant-expired", "node-a", 3, -time.Second, false),
			grant("grant-revoked", "node-a", 4, time.Minute, true),
			grant("grant-revoked-old", "node-a", 5, -time.Second, true),
		},
		SupportGrants: map[string][]*domain.SupportGrant{"proj-a": {old, sg}},
	}
	got, err := compileOps(in, n)
	if err != nil {
		t.Fatal(err)
	}
	want := &apitype.NodeOps{UserCA: "ssh-ed25519 CA", Grants: []string{"grant-live"}, RevokedSerials: []uint64{4},
		Support: &apitype.NodeSupport{GrantID: "sgr-abc", Role: "moat_support_abc", Privileges: domain.SupportPrivileges,
			ExpiresAt: now.Add(time.Hour), Password: "key-of:support-password:sgr-abc"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("compileOps (-want +got):\n%s", diff)
	}
	if r := (apitype.NodeDesired{Ops: got}).Redacted(); r.Ops.Support.Password != apitype.Redacted || got.Support.Password == apitype.Redacted {
		t.Errorf("redacted support password = %q (original %q), want it redacted in a copy", r.Ops.Support.Password, got.Support.Password)
	}
	in.OpsUserCA = ""
	if got, _ := compileOps(in, n); got != nil {
		t.Errorf("compileOps without an operator CA = %+v, want nil", got)
	}
}
