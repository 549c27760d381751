package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Roll-forward (docs/design/0014, "Planned changes roll forward"): a live
// service.resize, service.upgrade or service.replace operation is driven
// one domain.Roll.Advance further per pass, in the failover pass's
// transaction, its progress stored with the operation (so a control plane
// killed mid-way resumes from the stored step). The reconciler only does
// what Advance says: create the new nodes on the plan's slots (new IDs;
// certificates issued when placed), replace a lost new node (on
// Roll.ReplacementSlot), move the primary (back, too, when a candidate is
// lost), begin deleting the old nodes (their agents wipe them), end the
// operation — aborted, done, or handed over to the failover when the
// primary is lost (docs/design/0014, "Faults during a roll-forward"). The roles the
// agents apply follow from the stored progress (desired.Compile,
// domain.ServiceRoles).

// rolled is what one roll pass did.
type rolled struct {
	// d is the failover decision the service's health is derived from.
	d     domain.FailoverDecision
	nodes []*domain.Node
	bump  bool
	log   []func()
}

// roll drives svc's live roll-forward op one pass further.
func (r *Reconciler) roll(ctx context.Context, tx store.Tx, svc *domain.Service, nodes []*domain.Node, members []domain.Member, op *domain.Operation, rl *domain.Roll, hh hostHealth, now time.Time) (*rolled, error) {
	out := &rolled{d: domain.FailoverDecision{Verdict: domain.VerdictNone}}
	id := svc.ID
	// The failover's view, without the nodes the roll takes out of
	// service (a demoted old primary, retiring replicas): it tells
	// whether the primary was lost, and the service's health.
	d := domain.DecideFailover(svc, rl.FailoverView(members), r.cfg.Failover, false, now)
	act := rl.Advance(members, svc.Replication, rl.PrimaryLost(d), r.cfg.Failover, now)
	r.wakeBy(act.Until)
	byID := map[string]*domain.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	changed := act.Changed
	if phase := rl.Phase; act.Changed && rl.Step == domain.StepSwitchover {
		attempts := rl.Attempts
		out.log = append(out.log, func() {
			r.log.Info("switchover", "service_id", id, "operation_id", op.ID, "phase", phase, "attempts", attempts)
		})
	}
	if act.MovePrimary != "" {
		svc.MovePrimary(act.MovePrimary, now)
		changed = true
		to := act.MovePrimary
		out.log = append(out.log, func() {
			r.log.Info("switchover: primary moved", "service_id", id, "operation_id", op.ID, "node_id", to)
		})
		detail := "primary " + rl.From + " → " + to
		if to == rl.From {
			detail = "primary back to " + to + ": the new primary was lost before it took writes"
		}
		if err := r.auditSystem(ctx, tx, svc.ProjectID, op.Type+".switchover", id, detail); err != nil {
			return nil, err
		}
	}
	switch {
	case act.Abort:
		for _, nid := range rl.Added {
			if n := byID[nid]; n != nil && !domain.Going(n.State) {
				if _, err := n.BeginDelete(now); err != nil {
					return nil, err
				}
				if err := store.Put(ctx, tx, n); err != nil {
					return nil, err
				}
			}
		}
		if err := domain.AbortRoll(svc, op, *act.Fail, now); err != nil {
			return nil, err
		}
		changed = true
		why := act.Fail.Message
		out.log = append(out.log, func() { r.log.Warn("roll-forward aborted", "service_id", id, "operation_id", op.ID, "reason", why) })
		if err := r.auditSystem(ctx, tx, svc.ProjectID, op.Type+".aborted", id, why); err != nil {
			return nil, err
		}
	case act.AddNodes:
		next := domain.NextNodeIndex(nodes)
		for i, sl := range rl.Plan.Add[len(rl.Added):] {
			n := domain.NewRollNode(svc, rl, next+i, sl.AZ, now)
			n.Host = sl.Host
			if err := store.Put(ctx, tx, n); err != nil {
				return nil, err
			}
			rl.Added = append(rl.Added, n.ID)
			out.nodes = append(out.nodes, n)
		}
		changed = true
		added := slices.Clone(rl.Added)
		out.log = append(out.log, func() {
			r.log.Info("roll-forward: nodes added", "service_id", id, "operation_id", op.ID, "nodes", added)
		})
		if err := r.auditSystem(ctx, tx, svc.ProjectID, op.Type, id, fmt.Sprintf("nodes %v added, to %d nodes", added, rl.Plan.Target)); err != nil {
			return nil, err
		}
	case act.ReplaceAdded != "":
		gone := byID[act.ReplaceAdded]
		if _, ok := rl.SlotOf(act.ReplaceAdded); !ok {
			return nil, fmt.Errorf("roll %s: %s is not a new node", op.ID, act.ReplaceAdded)
		}
		region, err := r.cfg.Catalog.Lookup("region", svc.Region)
		if err != nil {
			return nil, err
		}
		sl := rl.ReplacementSlot(act.ReplaceAdded, members, region, hh.fleet())
		if gone != nil && !domain.Going(gone.State) {
			if _, err := gone.BeginDelete(now); err != nil {
				return nil, err
			}
			if err := store.Put(ctx, tx, gone); err != nil {
				return nil, err
			}
		}
		n := domain.NewRollNode(svc, rl, domain.NextNodeIndex(nodes), sl.AZ, now)
		n.Host = sl.Host
		if err := store.Put(ctx, tx, n); err != nil {
			return nil, err
		}
		rl.ReplaceAdded(act.ReplaceAdded, n.ID, sl)
		out.nodes = append(out.nodes, n)
		changed = true
		old := act.ReplaceAdded
		out.log = append(out.log, func() {
			r.log.Warn("roll-forward: a new node failed before it caught up; replaced", "service_id", id, "operation_id", op.ID, "failed", old, "replacement", n.ID)
		})
		if err := r.auditSystem(ctx, tx, svc.ProjectID, "node.replace", id, "new node "+old+" failed before it caught up; replaced by "+n.ID+" in "+sl.AZ); err != nil {
			return nil, err
		}
	case len(act.Delete) > 0 || act.Done:
		for _, nid := range act.Delete {
			n := byID[nid]
			if n == nil {
				continue
			}
			if _, err := n.BeginDelete(now); err != nil {
				return nil, err
			}
			if err := store.Put(ctx, tx, n); err != nil {
				return nil, err
			}
		}
		changed = true
		if del := act.Delete; len(del) > 0 {
			out.log = append(out.log, func() {
				r.log.Info("roll-forward: old nodes wiped", "service_id", id, "operation_id", op.ID, "nodes", del)
			})
		}
		if !act.Done {
			break
		}
		if err := domain.FinishRoll(svc, op, now); err != nil {
			return nil, err
		}
		detail := fmt.Sprintf("%d nodes, primary %s", svc.NodeCount, svc.PrimaryID)
		if act.Why != nil {
			// The primary was lost at the end: the failover takes over.
			detail += "; " + act.Why.Message
			why := act.Why.Message
			out.log = append(out.log, func() {
				r.log.Warn("roll-forward done; its primary was lost", "service_id", id, "operation_id", op.ID, "reason", why)
			})
		} else {
			out.log = append(out.log, func() { r.log.Info("roll-forward done", "service_id", id, "operation_id", op.ID) })
		}
		if err := r.auditSystem(ctx, tx, svc.ProjectID, op.Type+".done", id, detail); err != nil {
			return nil, err
		}
	}
	if changed {
		op.Step, op.UpdatedAt = rl.Step, now
		if err := store.Put(ctx, tx, op); err != nil {
			return nil, err
		}
		out.bump = true
	}
	switch {
	case act.Cannot != nil:
		// Waiting on a lost node nothing replaces: failed, with why.
		out.d = domain.FailoverDecision{Verdict: domain.VerdictCannot, Lost: rl.Candidate(), Why: act.Cannot}
	case !op.Live() || d.Verdict != domain.VerdictPromote:
		// A roll that ended on a lost primary shows it until the
		// failover (next pass) takes over.
		out.d = d
	}
	return out, nil
}
