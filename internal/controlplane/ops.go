package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/ops"
	"github.com/moatdb/moat/internal/store"
)

// DefaultOpsSources are the operator path's addresses when
// Config.OpsSources is empty: the agents' relays on this machine's
// loopback (moat up).
var DefaultOpsSources = []string{"127.0.0.1/32", "::1/128"}

// opsConfig loads or creates the operators' SSH CA and the host CA (keys
// sealed in the store like the other CAs'), and publishes the user CA's
// public key for the agents' desired state.
func (cp *ControlPlane) opsConfig(ctx context.Context) (*apiserver.OpsConfig, error) {
	user, err := cp.loadOrCreateSSHCA(ctx, "ops_user_ca_key")
	if err != nil {
		return nil, err
	}
	host, err := cp.loadOrCreateSSHCA(ctx, "ops_host_ca_key")
	if err != nil {
		return nil, err
	}
	pub := []byte(user.AuthorizedKey())
	if err := cp.Store.Update(ctx, func(tx store.Tx) error {
		old, err := tx.GetMeta(ctx, desired.MetaOpsUserCA)
		if err == nil && string(old) == string(pub) {
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.PutMeta(ctx, desired.MetaOpsUserCA, pub)
	}); err != nil {
		return nil, fmt.Errorf("operator CA: %w", err)
	}
	srcs := cp.cfg.OpsSources
	if len(srcs) == 0 {
		srcs = DefaultOpsSources
	}
	return &apiserver.OpsConfig{UserCA: user, HostCA: host, Sources: srcs, SupportMinTTL: cp.cfg.SupportMinTTL}, nil
}

// loadOrCreateSSHCA returns the SSH CA whose key is sealed in the store
// under name, creating it on first start.
func (cp *ControlPlane) loadOrCreateSSHCA(ctx context.Context, name string) (*ops.CA, error) {
	var ca *ops.CA
	err := cp.Store.Update(ctx, func(tx store.Tx) error {
		sealed, err := tx.GetMeta(ctx, name)
		if err == nil {
			key, err := cp.Keys.Open(sealed, []byte(name))
			if err != nil {
				return fmt.Errorf("unseal: %w", err)
			}
			ca, err = ops.ParseCA(key)
			return err
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if ca, err = ops.NewCA(); err != nil {
			return err
		}
		key, err := ca.Marshal()
		if err != nil {
			return err
		}
		return tx.PutMeta(ctx, name, cp.Keys.Seal(key, []byte(name)))
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimSuffix(name, "_key"), err)
	}
	return ca, nil
}
