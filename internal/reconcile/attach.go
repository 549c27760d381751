package reconcile

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"

	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/store"
)

// operations advances every pending or running attach/detach operation.
// An operation moves a service's nodes between networks in three steps so
// the new path works before the old one goes:
//
//  1. add-network: each node gets an interface on the destination network
//     (its address there is recorded as NextAddress).
//  2. switch: in one transaction the service's VPC and the nodes' addresses
//     change and their certificates are reissued; the desired-state
//     revision it commits is recorded. Agents apply it: firewalls admit the
//     new sources only (an attached service admits nothing from the
//     internet), DNS publishes the other name.
//  3. remove-network: the nodes' default route moves to the new network;
//     once every node reports the switch's revision, the old interfaces
//     are removed and the operation succeeds.
func (r *Reconciler) operations(ctx context.Context) error {
	var ops []*domain.Operation
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		ops, err = store.List[domain.Operation](ctx, tx, store.Query{States: domain.LiveOperationStates})
		return err
	}); err != nil {
		return err
	}
	var errs []error
	for _, op := range ops {
		var err error
		switch op.Type {
		case domain.OpServiceAttach, domain.OpServiceDetach:
			err = r.advance(ctx, op)
		case domain.OpServiceBackup, domain.OpServiceSwitchWAL:
			err = r.advanceTask(ctx, op)
		case domain.OpServiceRestore:
			err = r.advanceRestore(ctx, op)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("operation %s: %w", op.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) advance(ctx context.Context, op *domain.Operation) error {
	nw, ok := r.cfg.Provider.(provider.Networker)
	if !ok {
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "unsupported", Message: "this provider cannot move nodes between networks"})
	}
	svc, nodes, err := r.serviceNodes(ctx, op.TargetID)
	if err != nil {
		return err
	}
	switch {
	case op.State == domain.StatePending:
		return r.updateOp(ctx, op.ID, func(_ store.Tx, o *domain.Operation) error {
			return o.Start(domain.StepAddNetwork, r.cfg.Now().UTC())
		})

	case op.Step == domain.StepAddNetwork:
		for _, n := range nodes {
			if n.Address == "" {
				return nil // not placed yet; wait
			}
			if n.NextAddress != "" {
				continue
			}
			addr, err := nw.AddNodeInterface(ctx, n.ID, op.VPCID)
			if err != nil {
				// Handled: the operation fails, the service stays where
				// it is; the cause is logged and kept for operators.
				r.log.Warn("add node interface", "operation_id", op.ID, "node_id", n.ID, "vpc_id", op.VPCID, "err", err)
				return r.finishOp(ctx, op.ID, &domain.Info{Code: "network_failed",
					Message: "the node could not join the destination network; the service keeps its current network",
					Cause:   fmt.Sprintf("add an interface to node %s on %q: %v", n.ID, op.VPCID, err)})
			}
			if err := r.update(ctx, n.ID, func(_ store.Tx, cur *domain.Node) error {
				cur.NextAddress = addr.String()
				return nil
			}); err != nil {
				return err
			}
		}
		return r.updateOp(ctx, op.ID, func(_ store.Tx, o *domain.Operation) error {
			o.Step = domain.StepSwitch
			return nil
		})

	case op.Step == domain.StepSwitch:
		var release []string
		err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
			release = release[:0]
			o, err := store.Get[domain.Operation](ctx, tx, op.ID)
			if err != nil || o.Step != domain.StepSwitch {
				return err
			}
			s, err := store.Get[domain.Service](ctx, tx, svc.ID)
			if err != nil {
				return err
			}
			s.VPCID, s.UpdatedAt = o.VPCID, r.cfg.Now().UTC()
			if err := store.Put(ctx, tx, s); err != nil {
				return err
			}
			for _, n := range nodes {
				cur, err := store.Get[domain.Node](ctx, tx, n.ID)
				if err != nil {
					return err
				}
				if cur.NextAddress != "" {
					if cur.OldAddress != "" {
						release = append(release, cur.OldAddress)
					}
					cur.OldAddress, cur.OldVPCID = cur.Address, o.FromVPCID
					cur.Address, cur.NextAddress = cur.NextAddress, ""
				}
				if err := r.issue(ctx, tx, cur); err != nil {
					return err
				}
				cur.UpdatedAt = r.cfg.Now().UTC()
				if err := store.Put(ctx, tx, cur); err != nil {
					return err
				}
			}
			rev, err := desired.Bump(ctx, tx, desired.Affected{Services: []string{s.ID}})
			if err != nil {
				return err
			}
			o.Step, o.SwitchRevision, o.UpdatedAt = domain.StepRemoveNetwork, rev, r.cfg.Now().UTC()
			return store.Put(ctx, tx, o)
		})
		if err != nil {
			return err
		}
		var errs []error
		for _, a := range release {
			addr, err := netip.ParseAddr(a)
			if err == nil {
				err = nw.ReleaseAddress(ctx, addr)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("release moved address %q: %w", a, err))
			}
		}
		// The new path's clients may connect as soon as DNS and the
		// firewalls follow the switch: route their replies the new way
		// now rather than a pass later.
		for _, n := range nodes {
			if err := nw.UseNetwork(ctx, n.ID, op.VPCID); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		return errors.Join(errs...)

	case op.Step == domain.StepRemoveNetwork:
		// Route through the new network only now: until the switch, the
		// old path's clients (peers beyond the VPC router, say) need
		// their replies to leave the old way. Idempotent, so a pass that
		// waits for the agents repeats it harmlessly.
		for _, n := range nodes {
			if err := nw.UseNetwork(ctx, n.ID, op.VPCID); err != nil {
				return err
			}
		}
		for _, n := range nodes {
			if n.AppliedRevision < op.SwitchRevision {
				return nil // an agent has not applied the switch yet
			}
		}
		for _, n := range nodes {
			if err := nw.RemoveNodeInterface(ctx, n.ID, op.FromVPCID); err != nil {
				return err
			}
			if err := r.holdOld(ctx, nw, svc, n); err != nil {
				return err
			}
		}
		return r.finishOp(ctx, op.ID, nil)
	}
	return fmt.Errorf("unknown step %q", op.Step)
}

// serviceNodes reads a service and its live nodes.
func (r *Reconciler) serviceNodes(ctx context.Context, id string) (*domain.Service, []*domain.Node, error) {
	var svc *domain.Service
	var nodes []*domain.Node
	err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		if svc, err = store.Get[domain.Service](ctx, tx, id); err != nil {
			return err
		}
		all, err := store.List[domain.Node](ctx, tx, store.Query{Parent: id})
		for _, n := range all {
			if n.State != domain.StateDeleting {
				nodes = append(nodes, n)
			}
		}
		return err
	})
	return svc, nodes, err
}

// finishOp ends an operation (failed with info, or succeeded when info is
// nil) and gives the service back its running state.
// The metrics count it once the transaction commits.
func (r *Reconciler) finishOp(ctx context.Context, id string, info *domain.Info) error {
	var done *domain.Operation
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		done = nil
		o, err := store.Get[domain.Operation](ctx, tx, id)
		if err != nil || !o.Live() {
			return err
		}
		if err := o.Finish(info, r.cfg.Now().UTC()); err != nil {
			return err
		}
		done = o
		if err := store.Put(ctx, tx, o); err != nil {
			return err
		}
		s, err := store.Get[domain.Service](ctx, tx, o.TargetID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if s.EndOperation(o.ID, r.cfg.Now().UTC()) {
			if err := store.Put(ctx, tx, s); err != nil {
				return err
			}
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{s.ID}})
		return err
	})
	if err == nil && done != nil {
		r.cfg.Metrics.OperationDone(done.Type, done.State, done.UpdatedAt.Sub(done.CreatedAt))
	}
	return err
}

func (r *Reconciler) updateOp(ctx context.Context, id string, fn func(store.Tx, *domain.Operation) error) error {
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		o, err := store.Get[domain.Operation](ctx, tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, o); err != nil {
			return err
		}
		o.UpdatedAt = r.cfg.Now().UTC()
		if err := store.Put(ctx, tx, o); err != nil {
			return err
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{o.TargetID}})
		return err
	})
}

// holdOld keeps the address node n left answering with an error that names
// the service's new host (where the PostgreSQL protocol lets a server say
// so before TLS: in answer to the client's SSLRequest).
func (r *Reconciler) holdOld(ctx context.Context, nw provider.Networker, svc *domain.Service, n *domain.Node) error {
	if n.OldAddress == "" {
		return nil
	}
	addr, err := netip.ParseAddr(n.OldAddress)
	if err != nil {
		return fmt.Errorf("node %s: old address: %w", n.ID, err)
	}
	msg := fmt.Sprintf("service %s moved: connect to %s", svc.ID, domain.ServiceName(svc, r.cfg.Zone))
	if svc.VPCID != "" {
		msg += " (it is now reachable only from its VPC " + svc.VPCID + " and the VPC's peerings)"
	}
	key, err := r.cfg.Keys.Open(n.KeySealed, domain.NodeKeyAD(n.ID))
	if err != nil {
		return fmt.Errorf("node %s: unseal its key: %w", n.ID, err)
	}
	cert, err := tls.X509KeyPair([]byte(n.CertPEM), key)
	if err != nil {
		return fmt.Errorf("node %s: certificate: %w", n.ID, err)
	}
	return nw.HoldAddress(ctx, addr, n.OldVPCID, msg, &cert)
}

// holdMoved makes sure every moved address of a live service is held (after
// a restart of the control plane, the responders are started again), and
// releases those of deleted nodes.
func (r *Reconciler) holdMoved(ctx context.Context, nodes []*domain.Node) error {
	nw, ok := r.cfg.Provider.(provider.Networker)
	if !ok {
		return nil
	}
	var errs []error
	for _, n := range nodes {
		if n.OldAddress != "" && n.NextAddress == "" {
			errs = append(errs, r.holdOrRelease(ctx, nw, n))
		}
	}
	return errors.Join(errs...)
}

// holdOrRelease holds node n's old address, or releases it when the node
// is going or the VPC the address is in is being deleted (a held address
// would keep the VPC's router from being removed).
func (r *Reconciler) holdOrRelease(ctx context.Context, nw provider.Networker, n *domain.Node) error {
	nodeGoing := domain.Going(n.State)
	vpcGoing := false
	if n.OldVPCID != "" && !nodeGoing {
		var err error
		if vpcGoing, err = r.vpcGoing(ctx, n.OldVPCID); err != nil {
			return err
		}
	}
	if nodeGoing || vpcGoing {
		addr, err := netip.ParseAddr(n.OldAddress)
		if err != nil {
			return fmt.Errorf("node %s: old address: %w", n.ID, err)
		}
		if err := nw.ReleaseAddress(ctx, addr); err != nil {
			return err
		}
		if nodeGoing {
			return nil
		}
		return r.update(ctx, n.ID, func(_ store.Tx, cur *domain.Node) error {
			cur.OldAddress, cur.OldVPCID = "", ""
			return nil
		})
	}
	svc, _, err := r.serviceNodes(ctx, n.ServiceID)
	if err != nil || svc.OperationID != "" {
		return err // a running operation holds it when it finishes
	}
	return r.holdOld(ctx, nw, svc, n)
}

// vpcGoing reports whether VPC id is being deleted or gone.
func (r *Reconciler) vpcGoing(ctx context.Context, id string) (bool, error) {
	var v *domain.VPC
	err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		v, err = store.Get[domain.VPC](ctx, tx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("VPC %s: %w", id, err)
	}
	return domain.Going(v.State), nil
}
