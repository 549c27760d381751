package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/password"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/store"
)

// LongPoll is how long GET .../desired waits for a newer revision.
const LongPoll = 25 * time.Second

func (s *Server) hostDesired(c *call) error {
	host := c.r.PathValue("host")
	var after int64
	if a := c.r.URL.Query().Get("after"); a != "" {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			return &apiError{status: 400, code: "invalid_after", field: "after", msg: fmt.Sprintf("after %q is not a revision", a), hint: "pass the revision of the last desired state applied, or 0"}
		}
		after = n
	}
	rev, err := s.pollRevision(c.ctx, host, after)
	if err != nil {
		return err
	}
	var out apitype.HostDesired
	err = c.view(func(tx store.Tx) error {
		in, err := desired.Load(c.ctx, tx, host, s.cfg.Domain)
		if err != nil {
			return err
		}
		in.Revision, in.InternalCAPEM, in.Open, in.ArchiveDir, in.Now = rev, s.cfg.InternalCAPEM, s.cfg.Keys.Open, s.cfg.BackupDir, s.now()
		in.Lease, in.Heartbeat = s.cfg.Failover.Lease, s.cfg.Failover.HeartbeatInterval
		out, err = desired.Compile(in)
		return err
	})
	if err != nil {
		return err
	}
	s.cfg.Metrics.SetHostDesired(host, rev)
	s.cfg.Metrics.HostHeartbeat(host, time.Now())
	return c.reply(0, out)
}

// pollRevision waits up to LongPoll for host's own desired-state revision
// to pass after (only changes that affect the host wake it: see
// desired.Bump), and returns the revision to label its desired state with.
//
// A host no change has affected yet has revision 0 and an empty state at
// every revision: it is labelled with the global revision, so that a new
// agent's first poll (after=0) answers at once and the next waits for the
// host's first change. Any label from the global revision at or below the
// snapshot read next is sound, since host revisions are its values.
func (s *Server) pollRevision(ctx context.Context, host string, after int64) (int64, error) {
	rev, err := s.cfg.Store.HostRevision(ctx, host)
	if err != nil || rev > after {
		return rev, err
	}
	if rev == 0 {
		global, err := s.cfg.Store.Revision(ctx)
		if err != nil {
			return 0, err
		}
		if after == 0 || after > global { // a first poll; or one from before a restore
			return global, nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, LongPoll)
	defer cancel()
	rev, err = s.cfg.Store.WaitHostRevision(wctx, host, after)
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return rev, err
	}
	// Nothing new: normally the agent's own revision; a lower one after a
	// control-plane restore (the agent applies it).
	if rev, err = s.cfg.Store.HostRevision(ctx, host); err != nil || rev > 0 {
		return rev, err
	}
	return after, nil
}

func (s *Server) hostReport(c *call) error {
	// The heartbeat's time is the report's arrival, not the moment its
	// transaction gets the store (a busy store must not make a live host
	// look late); it is still after the agent sent it, which its lease
	// counts from.
	arrived := s.now()
	host := c.r.PathValue("host")
	c.target = host
	var in apitype.HostReport
	if err := c.decode(&in); err != nil {
		return err
	}
	if len(in.Nodes) == 0 {
		// A heartbeat: recorded without an audit entry unless it brings
		// the host back from down.
		if err := s.heartbeat(c, host, in.AgentVersion, arrived); err != nil {
			return err
		}
		s.cfg.Metrics.HostHeartbeat(host, time.Now())
		c.w.WriteHeader(204)
		return nil
	}
	var notes []string
	var ended []*domain.Operation  // tasks this report ended, for the metrics
	var enforced []*domain.Service // services every node enforces the allowlist of
	// Agents repeat their reports (at least every 5 s, with replication
	// facts that move with every write): the facts are stored, but only a
	// report that changes something (a node's state or applied
	// revisions, its replication as failover sees it, a task, the
	// service's state, the host back up) is audited.
	err := c.mutateIf(func(tx store.Tx) (bool, error) {
		ended, notes = ended[:0], notes[:0]
		touched := map[string]bool{}
		turned, changed := false, false
		now := s.now()
		back, err := s.recordHeartbeat(c, tx, host, in.AgentVersion, arrived)
		if err != nil {
			return false, err
		}
		if back {
			notes, changed = append(notes, "host back up"), true
		}
		for i, r := range in.Nodes {
			field := fmt.Sprintf("nodes[%d]", i)
			n, err := store.Get[domain.Node](c.ctx, tx, r.NodeID)
			if errors.Is(err, store.ErrNotFound) || (err == nil && n.Host != host) {
				return false, domain.Invalidf(domain.CodeNotFound, field+".node_id", "report only nodes of this host's desired state", "node %s is not placed on host %s", r.NodeID, host)
			}
			if err != nil {
				return false, err
			}
			if !n.AcceptsReports() {
				continue
			}
			before, beforeRepl := n.StateInfo, n.Replication
			rep, err := nodeReportIn(r)
			if err != nil {
				return false, inField(field, err)
			}
			nodeChanged, err := n.ApplyReport(rep, now)
			if err != nil {
				return false, inField(field, err)
			}
			if r.State == apitype.NodeReportFailed && (before == nil || before.Cause != r.Message) {
				// Agents repeat their reports: log a failure once.
				s.log.Warn("node failed", "node_id", n.ID, "host", host, "err", r.Message)
			}
			if err := store.Put(c.ctx, tx, n); err != nil {
				return false, err
			}
			if domain.Turned(beforeRepl, n.Replication) {
				turned = true
				if r := n.Replication; r != nil {
					s.log.Debug("replication turned", "node_id", n.ID, "up", r.Up, "in_recovery", r.InRecovery, "upstream", r.Upstream,
						"streaming", r.Streaming, "received", r.ReceivedLSN, "fenced", r.Fenced, "switching", r.Switching, "at", r.At)
				}
			}
			for j, t := range r.Tasks {
				op, taskChanged, err := s.finishTask(c, tx, n, t, fmt.Sprintf("%s.tasks[%d]", field, j))
				if err != nil {
					return false, err
				}
				if op != nil {
					ended = append(ended, op)
				}
				if taskChanged {
					notes, changed = append(notes, fmt.Sprintf("task %s=%s", t.ID, t.State)), true
				}
			}
			touched[n.ServiceID] = true
			if nodeChanged {
				notes, changed = append(notes, fmt.Sprintf("%s=%s@%d/allow%d", n.ID, r.State, r.Revision, r.AllowlistRevision)), true
			}
		}
		enforced = enforced[:0]
		for id := range touched {
			svc, svcChanged, err := s.rollupService(c, tx, id)
			if err != nil {
				return false, err
			}
			if svcChanged {
				notes, changed = append(notes, fmt.Sprintf("%s=%s", svc.ID, svc.State)), true
			}
			if svc.AppliedAllowlistRevision >= svc.AllowlistRevision {
				enforced = append(enforced, svc)
			}
		}
		c.detail = strings.Join(notes, " ")
		if turned {
			// A node's replication turned (a primary down, a replica
			// detached or promoted): the reconciler looks now (the
			// global revision; no host's desired state changed).
			_, err := desired.Bump(c.ctx, tx, desired.Affected{})
			return true, err
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	s.cfg.Metrics.HostHeartbeat(host, time.Now())
	if len(in.Nodes) > 0 {
		// A host applies one desired state: its oldest node revision.
		applied := in.Nodes[0].Revision
		for _, r := range in.Nodes[1:] {
			applied = min(applied, r.Revision)
		}
		s.cfg.Metrics.SetHostApplied(host, applied)
	}
	for _, op := range ended {
		s.cfg.Metrics.OperationDone(op.Type, op.State, op.UpdatedAt.Sub(op.CreatedAt))
		s.observeEnded(op)
	}
	for _, svc := range enforced {
		s.allowlistEnforced(svc)
	}
	c.w.WriteHeader(204)
	return nil
}

// heartbeat records a report without nodes: the host's heartbeat, in its
// own transaction, audited only when the host comes back from down.
func (s *Server) heartbeat(c *call, host, version string, arrived time.Time) error {
	return c.mutateIf(func(tx store.Tx) (bool, error) {
		back, err := s.recordHeartbeat(c, tx, host, version, arrived)
		if back {
			c.detail = "heartbeat: host back up"
		}
		return back, err
	})
}

// recordHeartbeat records host's heartbeat, arrived at arrived, in tx
// (domain.Host.Heartbeat; never back before a later one already
// recorded) and reports whether it brought the host back from down. A
// host no operator registered is refused.
func (s *Server) recordHeartbeat(c *call, tx store.Tx, host, version string, arrived time.Time) (bool, error) {
	h, err := hostByName(c, tx, host)
	if err != nil {
		return false, err
	}
	if h == nil {
		return false, errHostNotRegistered(host)
	}
	prev, now := h.LastHeartbeatAt, arrived
	if now.Before(prev) {
		now = prev
	}
	back, err := h.Heartbeat(version, now)
	if err != nil {
		return false, err
	}
	if !prev.IsZero() && !back {
		gap := now.Sub(prev)
		s.cfg.Metrics.ObserveHeartbeatGap(gap)
		s.log.Debug("heartbeat", "host", host, "gap", gap.Round(time.Millisecond))
		if gap > s.cfg.Failover.HostTimeout/2 {
			// Late: the host timeout's headroom is being used up (a
			// loaded machine, a slow store): worth an operator's look
			// before a healthy host is marked down.
			s.log.Warn("heartbeat late", "host", host, "gap", gap.Round(time.Millisecond), "host_timeout", s.cfg.Failover.HostTimeout)
		}
	}
	if back {
		s.log.Info("host back up", "host", host)
	}
	return back, store.Put(c.ctx, tx, h)
}

// inField prefixes the field of a domain error with the report's path to
// it (nodes[0].state).
func inField(prefix string, err error) error {
	if e := domain.AsError(err); e != nil && e.Field != "" {
		c := *e
		c.Field = prefix + "." + e.Field
		return &c
	}
	return err
}

// finishTask records a node's finished task in its operation: a backup's
// label and end time, or the failure (its internal cause goes to the log
// and the operator's view of the operation only). It returns the
// operation when the report ended it, and whether the report changed it
// (a task reported again after it ended does not).
func (s *Server) finishTask(c *call, tx store.Tx, n *domain.Node, t apitype.TaskReport, field string) (ended *domain.Operation, changed bool, err error) {
	op, err := store.Get[domain.Operation](c.ctx, tx, t.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && op.TargetID != n.ServiceID) {
		return nil, false, domain.Invalidf(domain.CodeNotFound, field+".id", "report only tasks of the node's desired state", "operation %s is not a task of node %s", t.ID, n.ID)
	}
	if err != nil {
		return nil, false, err
	}
	now := s.now()
	changed, err = op.ApplyTaskReport(taskReportIn(t), now)
	if err != nil {
		return nil, false, inField(field, err)
	}
	if !changed {
		return nil, false, nil
	}
	if t.State == apitype.TaskFailed {
		s.log.Warn("node task failed", "operation_id", op.ID, "type", op.Type, "node_id", n.ID, "err", t.Message)
	}
	if t.Backup != nil {
		svc, err := store.Get[domain.Service](c.ctx, tx, n.ServiceID)
		if err != nil {
			return nil, false, err
		}
		if svc.RecordBackup(t.Backup.EndTime, now) {
			if err := store.Put(c.ctx, tx, svc); err != nil {
				return nil, false, err
			}
		}
	}
	if err := store.Put(c.ctx, tx, op); err != nil {
		return nil, false, err
	}
	// The task leaves the desired state.
	if _, err := desired.Bump(c.ctx, tx, desired.Affected{Services: []string{n.ServiceID}}); err != nil {
		return nil, false, err
	}
	if op.Live() {
		return nil, true, nil
	}
	return op, true, nil
}

// rollupService stores what a service's nodes' reports change in it (see
// domain.Service.Rollup), and returns the service and whether it changed.
func (s *Server) rollupService(c *call, tx store.Tx, id string) (*domain.Service, bool, error) {
	svc, err := store.Get[domain.Service](c.ctx, tx, id)
	if err != nil {
		return nil, false, err
	}
	nodes, err := store.List[domain.Node](c.ctx, tx, store.Query{Parent: id})
	if err != nil {
		return nil, false, err
	}
	changed, published := svc.Rollup(nodes, s.now())
	if !changed {
		return svc, false, nil
	}
	if err := store.Put(c.ctx, tx, svc); err != nil {
		return nil, false, err
	}
	if published {
		// A running service is published in DNS, which follows the
		// global revision; no host's desired state reads the rollup.
		if _, err := tx.BumpHosts(c.ctx); err != nil {
			return nil, false, err
		}
	}
	return svc, true, nil
}

// ---- project CA and passwords ----

// newProjectCA makes a project's CA; its key is sealed with the master key.
func (s *Server) newProjectCA(p *domain.Project) error {
	ca, err := pki.NewCA("Moat project CA "+p.ID, 10*365*24*time.Hour, s.now())
	if err != nil {
		return err
	}
	key, err := ca.MarshalKeyPEM()
	if err != nil {
		return err
	}
	p.CACertPEM = string(ca.CertPEM)
	p.CAKeySealed = s.cfg.Keys.Seal(key, domain.ProjectCAKeyAD(p.ID))
	return nil
}

func (s *Server) getProjectCA(c *call) error {
	var p *domain.Project
	if err := c.view(func(tx store.Tx) (err error) {
		p, err = getIn[domain.Project](c, tx, "project", c.project)
		return err
	}); err != nil {
		return err
	}
	return c.reply(0, apitype.CA{ProjectID: p.ID, PEM: p.CACertPEM})
}

func (s *Server) resetPassword(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	pw := password.Generate()
	v, err := password.Verifier(pw)
	if err != nil {
		return err
	}
	err = c.mutate(func(tx store.Tx) error {
		svc, err := getIn[domain.Service](c, tx, "service", id)
		if err != nil {
			return err
		}
		if domain.Going(svc.State) {
			return domain.Conflictf(domain.CodeInvalidState, "", "the service is being deleted", "service %s is %s", id, svc.State)
		}
		svc.AdminVerifier, svc.UpdatedAt = v, s.now()
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}})
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, apitype.PasswordReset{User: domain.AdminUser, Password: pw})
}
