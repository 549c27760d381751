package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Failover and replication (docs/design/0014): each pass, per service,
// the reconciler builds the members from its nodes and their agents'
// reports, and in one transaction
//
//   - records what the primary's reports bound of the replicas that left
//     (domain.RecordAckBounds: a replaced replica's departure, stored on
//     the node, so a restarted control plane decides on it),
//   - drives the live service.failover operation one Advance further
//     (its progress is stored with the operation, so a control plane
//     killed mid-way resumes from the stored step), or
//   - starts one when DecideFailover says promote, or replaces a lost
//     replica,
//   - and stores the primary's synchronous_standby_names and the
//     service's health (degraded while a node is lost or replaced).
//
// The roles the agents apply follow from the stored progress
// (desired.Compile, domain.RolesOf).

// hostHealth tells whether a host is healthy at a moment: a registered
// Host by its heartbeats and state (domain.HostHealthy: a host marked
// down loses its nodes), and a host with no Host record (moat up's
// "local") by its nodes' reports.
type hostHealth struct {
	hosts map[string]*domain.Host
	// seen is the newest report of any node on each host: the agent's
	// heartbeat (every node's replication is reported at least every
	// few seconds).
	seen map[string]time.Time
	now  time.Time
	// hostTimeout judges a registered host's heartbeats, reportTimeout
	// an unregistered host's reports.
	hostTimeout, reportTimeout time.Duration
	// since is when the control plane started listening: missing reports
	// and heartbeats say nothing until their timeout passed since.
	since time.Time
	// list and load are the registered hosts and their nodes, for
	// placements (fleet).
	list []*domain.Host
	load map[string]int
}

func newHostHealth(hosts []*domain.Host, nodes []*domain.Node, now time.Time, p domain.FailoverPolicy, since time.Time) hostHealth {
	h := hostHealth{hosts: map[string]*domain.Host{}, seen: map[string]time.Time{}, now: now,
		hostTimeout: p.HostTimeout, reportTimeout: p.ReportTimeout, since: since,
		list: hosts, load: domain.LoadOf(nodes)}
	for _, x := range hosts {
		if !domain.Gone(x.State) {
			h.hosts[x.Name] = x
		}
	}
	for _, n := range nodes {
		if n.Host != "" && n.ReportedAt.After(h.seen[n.Host]) {
			h.seen[n.Host] = n.ReportedAt
		}
	}
	return h
}

// healthy reports whether host's agent was heard from within the timeout
// (and, a registered host, it is not down).
func (h hostHealth) healthy(host string) bool {
	if x := h.hosts[host]; x != nil {
		if x.State == domain.StateDown {
			return false
		}
		return h.now.Sub(h.since) < h.hostTimeout || domain.HostHealthy(x, h.now, h.hostTimeout)
	}
	return h.now.Sub(h.since) < h.reportTimeout || h.now.Sub(h.seen[host]) <= h.reportTimeout
}

// draining reports whether host is a registered host being drained.
func (h hostHealth) draining(host string) bool {
	x := h.hosts[host]
	return x != nil && x.State == domain.StateDraining
}

// fleet is the registered hosts and their load as placement sees them.
func (h hostHealth) fleet() domain.Fleet {
	return domain.Fleet{Hosts: h.list, Load: h.load, Now: h.now, HeartbeatTimeout: h.hostTimeout}
}

// host is the lost primary's Host for the failover's fence step (its
// last heartbeat): the registered one, else a stand-in whose heartbeat
// is its nodes' last report.
func (h hostHealth) host(name string) *domain.Host {
	if x := h.hosts[name]; x != nil {
		return x
	}
	return &domain.Host{Meta: domain.Meta{Name: name}, LastHeartbeatAt: h.seen[name]}
}

// failovers runs failover and replication for every live service.
func (r *Reconciler) failovers(ctx context.Context, svcs []*domain.Service, nodes []*domain.Node) error {
	now := r.cfg.Now().UTC()
	p := r.cfg.Failover
	var hosts []*domain.Host
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		hosts, err = store.List[domain.Host](ctx, tx, store.Query{})
		return err
	}); err != nil {
		return err
	}
	hh := newHostHealth(hosts, nodes, now, p, r.listening)
	var errs []error
	for _, s := range svcs {
		if domain.Going(s.State) || s.State == domain.StateCreating || s.State == domain.StateFailed {
			continue
		}
		if err := r.failover(ctx, s.ID, hh, now); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.ID, err))
		}
	}
	return errors.Join(errs...)
}

// failover makes one failover and replication pass over service id.
func (r *Reconciler) failover(ctx context.Context, id string, hh hostHealth, now time.Time) error {
	p := r.cfg.Failover
	var logged []func()
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		logged = logged[:0]
		svc, err := store.Get[domain.Service](ctx, tx, id)
		if err != nil || domain.Going(svc.State) || svc.State == domain.StateCreating {
			return err
		}
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: id})
		if err != nil {
			return err
		}
		ops, err := store.List[domain.Operation](ctx, tx, store.Query{ProjectID: svc.ProjectID, Parent: id, States: domain.LiveOperationStates})
		if err != nil {
			return err
		}
		byID := map[string]*domain.Node{}
		for _, n := range nodes {
			byID[n.ID] = n
		}
		bump := false
		members := domain.Members(svc, nodes, hh.healthy)
		// What the primary's reports tell of the replicas that left
		// (recorded before any decision: a control plane restarted
		// later decides on it).
		for _, n := range domain.RecordAckBounds(members) {
			if err := store.Put(ctx, tx, n); err != nil {
				return err
			}
			nid, dep := n.ID, *n.Departure
			logged = append(logged, func() {
				if dep.AckBound == 0 {
					r.log.Info("departed replica released by the primary", "service_id", id, "node_id", nid, "released_at", dep.ReleasedAt)
					return
				}
				r.log.Info("departed replica bounded", "service_id", id, "node_id", nid, "ack_bound", dep.AckBound.String())
			})
		}
		op, f := domain.LiveFailover(svc, ops)
		rop, rl := domain.LiveRoll(svc, ops)
		var d domain.FailoverDecision
		switch {
		case f == nil && rl != nil:
			res, err := r.roll(ctx, tx, svc, nodes, members, rop, rl, hh, now)
			if err != nil {
				return err
			}
			d, nodes, bump, logged = res.d, append(nodes, res.nodes...), res.bump, append(logged, res.log...)
			if !rop.Live() {
				rl = nil
			}
		case f != nil:
			before := *f
			act := f.Advance(members, hh.host(f.LostHost), p, now)
			r.wakeBy(act.Until)
			changed := before != *f
			switch {
			case act.Fail != nil:
				if err := op.Fail(*act.Fail, now); err != nil {
					return err
				}
				svc.EndOperation(op.ID, now)
				changed, bump = true, true
				logged = append(logged, func() {
					r.log.Warn("failover failed", "service_id", id, "operation_id", op.ID, "reason", act.Fail.Message)
				})
			case act.MovePrimary:
				svc.MovePrimary(f.Promote, now)
				changed, bump = true, true
				primary := f.Promote
				logged = append(logged, func() { r.log.Info("primary moved", "service_id", id, "node_id", primary) })
				if err := r.auditSystem(ctx, tx, svc.ProjectID, "service.failover.promote", id, "primary "+f.Lost+" → "+f.Promote); err != nil {
					return err
				}
			case act.PlaceReplacement:
				gone := byID[f.Lost]
				if act.Discard != "" && byID[act.Discard] != nil {
					gone = byID[act.Discard]
				}
				if gone == nil {
					return fmt.Errorf("failover %s: lost node %s missing", op.ID, f.Lost)
				}
				// The old primary's commits are the promoted node's; a
				// discarded replacement was a replica.
				repl, err := r.replace(ctx, tx, svc, gone, f.LostAZ, gone.ID != f.Lost, now)
				if err != nil {
					return err
				}
				if gone.ID != f.Lost && byID[f.Lost] != nil {
					if _, err := byID[f.Lost].BeginDelete(now); err != nil {
						return err
					}
					if err := store.Put(ctx, tx, byID[f.Lost]); err != nil {
						return err
					}
				}
				f.Replacement, changed, bump = repl.ID, true, true
				nodes = append(nodes, repl)
			case act.Done:
				if err := op.Succeed(now); err != nil {
					return err
				}
				svc.EndOperation(op.ID, now)
				changed, bump = true, true
				opID, primary := op.ID, f.Promote
				logged = append(logged, func() { r.log.Info("failover done", "service_id", id, "operation_id", opID, "primary", primary) })
				if err := r.auditSystem(ctx, tx, svc.ProjectID, "service.failover.done", id, "primary "+f.Promote+", replacement "+f.Replacement+" streaming"); err != nil {
					return err
				}
			}
			if changed {
				op.Step, op.UpdatedAt = f.Step, now
				if err := store.Put(ctx, tx, op); err != nil {
					return err
				}
				bump = true
			}
			if !op.Live() {
				f = nil
			}
			d = domain.FailoverDecision{Verdict: domain.VerdictNone}
			if act.Why != nil {
				d = domain.FailoverDecision{Verdict: domain.VerdictWait, Why: act.Why}
			}
		default:
			d = domain.DecideFailover(svc, members, p, false, now)
			r.wakeBy(d.Until)
			switch d.Verdict {
			case domain.VerdictPromote:
				op, f, err = domain.StartFailover(svc, d, byID[d.Lost], now)
				if err != nil {
					return err
				}
				op.Failover = f
				if err := svc.BeginFailover(op.ID, *d.Why, now); err != nil {
					return err
				}
				if err := store.Put(ctx, tx, op); err != nil {
					return err
				}
				bump = true
				opID, lost, promote, why := op.ID, d.Lost, d.Promote, d.Why.Message
				logged = append(logged, func() {
					r.log.Warn("failover started", "service_id", id, "operation_id", opID, "lost", lost, "promote", promote, "reason", why)
				})
				if err := r.auditSystem(ctx, tx, svc.ProjectID, domain.OpServiceFailover, id, d.Why.Message); err != nil {
					return err
				}
			case domain.VerdictReplace:
				lost := byID[d.Lost]
				if lost == nil || svc.OperationID != "" {
					break
				}
				repl, err := r.replace(ctx, tx, svc, lost, lost.AZ, true, now)
				if err != nil {
					return err
				}
				nodes, bump = append(nodes, repl), true
				logged = append(logged, func() { r.log.Warn("lost replica replaced", "service_id", id, "lost", lost.ID, "replacement", repl.ID) })
			case domain.VerdictNone:
				moved, err := r.drain(ctx, tx, svc, members, hh, now)
				if err != nil {
					return err
				}
				if moved != nil {
					nodes, bump = append(nodes, moved.nodes...), true
					logged = append(logged, moved.log)
					if moved.op != nil {
						rl = moved.op.Roll
					}
				}
			}
		}
		members = domain.Members(svc, nodes, hh.healthy)
		if rl != nil {
			rl.Mark(members)
		}
		sync := domain.SyncStandbyNames(svc, members)
		changed, b := svc.ApplyReplication(sync, domain.Health(d, sync, f, members), nodes, now)
		if changed || bump {
			if err := store.Put(ctx, tx, svc); err != nil {
				return err
			}
		}
		if b || bump {
			_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{id}})
		}
		return err
	})
	if err == nil {
		for _, l := range logged {
			l()
		}
	}
	return err
}

// drained is what one drain step did: the nodes it added or the failover
// it started, and its log.
type drained struct {
	nodes []*domain.Node
	op    *domain.Operation
	log   func()
}

// drain moves the next node of svc off a draining host (domain.DrainNext):
// a replica is replaced by a new node placed elsewhere (a draining host
// takes none); the primary (a 1-node service's only node included) by a
// service.replace roll-forward (domain.PlanReplace: a new node catches
// up, the primary switches over to it, the old node is wiped). It
// returns nil when nothing moves.
func (r *Reconciler) drain(ctx context.Context, tx store.Tx, svc *domain.Service, members []domain.Member, hh hostHealth, now time.Time) (*drained, error) {
	n, primary := domain.DrainNext(svc, members, hh.draining)
	switch {
	case n == nil:
		return nil, nil
	case !primary:
		repl, err := r.replace(ctx, tx, svc, n, n.AZ, true, now)
		if err != nil {
			return nil, err
		}
		return &drained{nodes: []*domain.Node{repl}, log: func() {
			r.log.Info("node moved off a draining host", "service_id", svc.ID, "node_id", n.ID, "host", n.Host, "replacement", repl.ID)
		}}, nil
	}
	region, err := r.cfg.Catalog.Lookup("region", svc.Region)
	if err != nil {
		return nil, err
	}
	plan, err := domain.PlanReplace(svc, members, n.ID, region, hh.fleet())
	if domain.AsError(err) != nil {
		// Not placeable now (no host with room in a free AZ): the next
		// pass tries again.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	op, err := domain.StartRoll(svc, members, plan, now)
	if err != nil {
		return nil, err
	}
	if err := store.Put(ctx, tx, op); err != nil {
		return nil, err
	}
	if err := r.auditSystem(ctx, tx, svc.ProjectID, domain.OpServiceReplace, svc.ID, "primary "+n.ID+" moves off draining host "+n.Host+" by a switchover"); err != nil {
		return nil, err
	}
	return &drained{op: op, log: func() {
		r.log.Info("primary moving off a draining host", "service_id", svc.ID, "node_id", n.ID, "host", n.Host, "operation_id", op.ID)
	}}, nil
}

// replace stores a new node replacing gone (which begins deleting: its
// agent wipes it, it never rejoins) in az, and audits it. A replica's
// departure is recorded (domain.ReplaceReplica).
func (r *Reconciler) replace(ctx context.Context, tx store.Tx, svc *domain.Service, gone *domain.Node, az string, replica bool, now time.Time) (*domain.Node, error) {
	replaceNode := domain.ReplaceNode
	if replica {
		replaceNode = domain.ReplaceReplica
	}
	repl, err := replaceNode(svc, gone, az, now)
	if err != nil {
		return nil, err
	}
	if err := store.Put(ctx, tx, gone); err != nil {
		return nil, err
	}
	if err := store.Put(ctx, tx, repl); err != nil {
		return nil, err
	}
	return repl, r.auditSystem(ctx, tx, svc.ProjectID, "node.replace", svc.ID, "node "+gone.ID+" replaced by "+repl.ID+" in "+az)
}

// auditSystem appends an audit entry of the control plane's own action.
func (r *Reconciler) auditSystem(ctx context.Context, tx store.Tx, project, action, target, detail string) error {
	_, err := audit.Append(ctx, tx, domain.AuditEntry{Time: r.cfg.Now().UTC(), Actor: "system", ProjectID: project,
		Action: action, Target: target, Outcome: domain.OutcomeSuccess, Detail: detail})
	return err
}
