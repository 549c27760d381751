// Package fleettest registers hosts for tests that run the control plane
// without agents: services are placed on registered, healthy hosts
// (domain.Place), so a test that creates services needs a fleet. The
// hosts' heartbeat is pinned years ahead of the clock given, so they stay
// healthy for the test's life (even on a test's moving clock) without an
// agent reporting. Imported by tests only.
package fleettest

import (
	"context"
	"fmt"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Name is the name Register gives the host of az: "<az>-1".
func Name(az string) string { return az + "-1" }

// Register stores one healthy host per AZ of every region of cat (the
// default catalog when empty), named Name(az), with capacity cap (0: the
// default), registered at now. Hosts that exist already are kept.
func Register(ctx context.Context, st store.Store, cat domain.Catalog, capacity int, now time.Time) error {
	if len(cat.Regions) == 0 {
		cat = domain.DefaultCatalog()
	}
	return st.Update(ctx, func(tx store.Tx) error {
		others, err := store.List[domain.Host](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		exists := map[string]bool{}
		for _, h := range others {
			exists[h.Name] = true
		}
		for _, r := range cat.Regions {
			for _, az := range r.AZs {
				if exists[Name(az)] {
					continue
				}
				h, err := domain.NewHost(cat, Name(az), r.Code, az, capacity, others, now)
				if err != nil {
					return fmt.Errorf("register host %s: %w", Name(az), err)
				}
				if _, err := h.Heartbeat("test", now.AddDate(10, 0, 0)); err != nil {
					return err
				}
				if err := store.Put(ctx, tx, h); err != nil {
					return err
				}
				others = append(others, h)
			}
		}
		return nil
	})
}
