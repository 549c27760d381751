package desired

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// MetaOpsUserCA is the store key of the operators' SSH CA public key
// (authorized_keys form); the control plane writes it at bootstrap.
const MetaOpsUserCA = "ops_user_ca_pub"

// compileOps is node n's operator endpoint configuration at in.Now: the
// grants for it that are active, the serials of its revoked grants whose
// certificates have not expired, and the support role while its project
// has an active support grant. Nil without an operator CA or a clock.
func compileOps(in Input, n *domain.Node) (*apitype.NodeOps, error) {
	if in.OpsUserCA == "" || in.Now.IsZero() {
		return nil, nil
	}
	o := &apitype.NodeOps{UserCA: in.OpsUserCA}
	for _, g := range in.OpsGrants {
		if g.NodeID != n.ID {
			continue
		}
		switch g.StateAt(in.Now) {
		case domain.StateActive:
			o.Grants = append(o.Grants, g.ID)
		case domain.StateRevoked:
			if in.Now.Before(g.ExpiresAt) {
				o.RevokedSerials = append(o.RevokedSerials, g.Serial)
			}
		}
	}
	slices.Sort(o.Grants)
	slices.Sort(o.RevokedSerials)
	if sg := domain.ActiveSupportGrant(in.SupportGrants[n.ProjectID], in.Now); sg != nil {
		pw, err := in.Open(sg.PasswordSealed, domain.SupportPasswordAD(sg.ID))
		if err != nil {
			return nil, fmt.Errorf("unseal the password of support grant %s: %w", sg.ID, err)
		}
		o.Support = &apitype.NodeSupport{GrantID: sg.ID, Role: domain.SupportRole(sg.ID),
			Privileges: slices.Clone(domain.SupportPrivileges), ExpiresAt: sg.ExpiresAt, Password: string(pw)}
	}
	return o, nil
}

// loadOps reads the operator CA and the grants Compile needs into in.
func loadOps(ctx context.Context, tx store.Tx, in *Input) error {
	ca, err := tx.GetMeta(ctx, MetaOpsUserCA)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("operator CA: %w", err)
	}
	in.OpsUserCA = string(ca)
	// The grants of this host's nodes only (a grant's parent is its node).
	for _, n := range in.Nodes {
		if n.Host != in.Host {
			continue
		}
		gs, err := store.List[domain.OpsGrant](ctx, tx, store.Query{Parent: n.ID, States: []string{domain.StateActive, domain.StateRevoked}})
		if err != nil {
			return fmt.Errorf("operator grants of %s: %w", n.ID, err)
		}
		in.OpsGrants = append(in.OpsGrants, gs...)
	}
	in.SupportGrants = map[string][]*domain.SupportGrant{}
	for p := range in.Projects {
		gs, err := store.List[domain.SupportGrant](ctx, tx, store.Query{ProjectID: p, States: []string{domain.StateActive}})
		if err != nil {
			return fmt.Errorf("support grants: %w", err)
		}
		in.SupportGrants[p] = gs
	}
	return nil
}
