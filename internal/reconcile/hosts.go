package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Hosts: the reconciler marks a host down when its heartbeats are late
// (domain.Host.HeartbeatLate; the heartbeat brings it back, in the API's
// report handler), and chooses a host for a node created without one.

// markLateHosts marks down every active or draining host whose last
// heartbeat is older than the policy's HostTimeout, counted at the
// earliest from when the reconciler listens (HeartbeatLateSince): its
// start (a control plane that was down heard nothing, and blames no host
// for it), or the end of a moment it heard no host at all
// (domain.Listening: its own stall is no host's failure).
func (r *Reconciler) markLateHosts(ctx context.Context) error {
	var hosts []*domain.Host
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		hosts, err = store.List[domain.Host](ctx, tx, store.Query{})
		return err
	}); err != nil {
		return err
	}
	was := r.listening
	r.listening = domain.Listening(hosts, r.listening, r.cfg.Now(), r.cfg.Failover)
	if r.listening != was && !r.deaf {
		r.log.Warn("no host heard for two heartbeat intervals: no host is marked down until they are heard again and a host timeout passed",
			"heartbeat_interval", r.cfg.Failover.HeartbeatInterval, "host_timeout", r.cfg.Failover.HostTimeout)
	}
	r.deaf = r.listening != was
	var errs []error
	for _, h := range hosts {
		if !h.HeartbeatLateSince(r.cfg.Now(), r.cfg.Failover.HostTimeout, r.listening) {
			if h.State == domain.StateActive || h.State == domain.StateDraining {
				// Look again as soon as it would be late.
				last := h.LastHeartbeatAt
				if last.IsZero() {
					last = h.CreatedAt
				}
				if r.listening.After(last) {
					last = r.listening
				}
				r.wakeBy(last.Add(r.cfg.Failover.HostTimeout + time.Millisecond))
			}
			continue
		}
		err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
			cur, err := store.Get[domain.Host](ctx, tx, h.ID)
			if err != nil {
				return err
			}
			now := r.cfg.Now()
			if !cur.HeartbeatLateSince(now, r.cfg.Failover.HostTimeout, r.listening) {
				return nil // it heartbeat meanwhile
			}
			if err := cur.MarkDown(now.UTC()); err != nil {
				return err
			}
			r.log.Warn("host down: heartbeats stopped", "host", cur.Name, "last_heartbeat_at", cur.LastHeartbeatAt)
			return store.Put(ctx, tx, cur)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("mark host %s down: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

// chooseHost places a node that has no host yet (made before hosts were
// first-class) with domain.Place, beside its service's other nodes.
func (r *Reconciler) chooseHost(ctx context.Context, n *domain.Node, svc *domain.Service) (string, error) {
	var hosts []*domain.Host
	var all []*domain.Node
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		if hosts, err = store.List[domain.Host](ctx, tx, store.Query{}); err != nil {
			return err
		}
		all, err = store.List[domain.Node](ctx, tx, store.Query{})
		return err
	}); err != nil {
		return "", err
	}
	region, err := r.cfg.Catalog.Lookup("region", svc.Region)
	if err != nil {
		return "", err
	}
	var keep []*domain.Node
	for _, o := range all {
		if o.ServiceID == n.ServiceID && o.ID != n.ID && o.Host != "" && !domain.Going(o.State) {
			keep = append(keep, o)
		}
	}
	slots, err := domain.Place(domain.PlacementRequest{Region: region, Count: 1, Keep: keep, PreferAZ: n.AZ},
		domain.Fleet{Hosts: hosts, Load: domain.LoadOf(all), Now: r.cfg.Now(), HeartbeatTimeout: r.cfg.Failover.HostTimeout})
	if err != nil {
		return "", err
	}
	return slots[0].Host, nil
}
