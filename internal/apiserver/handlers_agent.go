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
	rev, err := s.cfg.Store.Revision(c.ctx)
	if err != nil {
		return err
	}
	if rev <= after {
		ctx, cancel := context.WithTimeout(c.ctx, LongPoll)
		rev, err = s.cfg.Store.WaitRevision(ctx, after)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && c.ctx.Err() == nil {
			rev, err = s.cfg.Store.Revision(c.ctx)
		}
		if err != nil {
			return err
		}
	}
	var out apitype.HostDesired
	err = c.view(func(tx store.Tx) error {
		in, err := desired.Load(c.ctx, tx, host, s.cfg.Domain)
		if err != nil {
			return err
		}
		in.Revision, in.InternalCAPEM, in.Open, in.ArchiveDir = rev, s.cfg.InternalCAPEM, s.cfg.Keys.Open, s.cfg.BackupDir
		out, err = desired.Compile(in)
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, out)
}

func (s *Server) hostReport(c *call) error {
	host := c.r.PathValue("host")
	c.target = host
	var in apitype.HostReport
	if err := c.decode(&in); err != nil {
		return err
	}
	var notes []string
	err := c.mutate(func(tx store.Tx) error {
		touched := map[string]bool{}
		now := s.now()
		for i, r := range in.Nodes {
			n, err := store.Get[domain.Node](c.ctx, tx, r.NodeID)
			if errors.Is(err, store.ErrNotFound) || (err == nil && n.Host != host) {
				return domain.Invalidf(domain.CodeNotFound, fmt.Sprintf("nodes[%d].node_id", i), "report only nodes of this host's desired state", "node %s is not placed on host %s", r.NodeID, host)
			}
			if err != nil {
				return err
			}
			if domain.Gone(n.State) {
				continue
			}
			n.AppliedRevision, n.ReportedAt, n.UpdatedAt = r.Revision, now, now
			if a := r.Archive; a != nil {
				n.Archive = &domain.ArchiveStatus{LastArchivedWAL: a.LastArchivedWAL, LastArchivedAt: a.LastArchivedAt,
					LastFailedWAL: a.LastFailedWAL, LastFailedAt: a.LastFailedAt, Failing: a.Failing}
			}
			if r.AllowlistRevision > n.AppliedAllowlistRevision {
				n.AppliedAllowlistRevision = r.AllowlistRevision
			}
			switch r.State {
			case apitype.NodeReportRunning:
				if n.State == domain.StateCreating || n.State == domain.StateFailed {
					n.State, n.StateInfo = domain.StateRunning, nil
				}
			case apitype.NodeReportFailed:
				if n.State == domain.StateCreating || n.State == domain.StateRunning {
					n.State = domain.StateFailed
				}
				n.StateInfo = &domain.Info{Code: "node_failed", Message: r.Message}
			case apitype.NodeReportWiped:
				if n.State == domain.StateDeleting {
					n.StateInfo = &domain.Info{Code: "wiped", Message: "PostgreSQL stopped and data wiped"}
				}
			default:
				return domain.Invalidf(domain.CodeInvalidState, fmt.Sprintf("nodes[%d].state", i), "use running, failed or wiped", "%q is not a node report state", r.State)
			}
			if err := store.Put(c.ctx, tx, n); err != nil {
				return err
			}
			for j, t := range r.Tasks {
				if err := s.finishTask(c, tx, n, t, fmt.Sprintf("nodes[%d].tasks[%d]", i, j)); err != nil {
					return err
				}
				notes = append(notes, fmt.Sprintf("task %s=%s", t.ID, t.State))
			}
			touched[n.ServiceID] = true
			notes = append(notes, fmt.Sprintf("%s=%s@%d/allow%d", n.ID, r.State, r.Revision, r.AllowlistRevision))
		}
		for id := range touched {
			if err := s.rollupService(c, tx, id); err != nil {
				return err
			}
		}
		c.detail = strings.Join(notes, " ")
		return nil
	})
	if err != nil {
		return err
	}
	c.w.WriteHeader(204)
	return nil
}

// finishTask records a node's finished task in its operation: a backup's
// label and end time, or the failure.
func (s *Server) finishTask(c *call, tx store.Tx, n *domain.Node, t apitype.TaskReport, field string) error {
	op, err := store.Get[domain.Operation](c.ctx, tx, t.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && op.TargetID != n.ServiceID) {
		return domain.Invalidf(domain.CodeNotFound, field+".id", "report only tasks of the node's desired state", "operation %s is not a task of node %s", t.ID, n.ID)
	}
	if err != nil || domain.OperationMachine.Terminal(op.State) {
		return err
	}
	now := s.now()
	switch t.State {
	case apitype.TaskDone:
		op.State, op.Error = domain.StateSucceeded, nil
		if t.Backup != nil {
			op.BackupLabel = t.Backup.Label
			svc, err := store.Get[domain.Service](c.ctx, tx, n.ServiceID)
			if err != nil {
				return err
			}
			if t.Backup.EndTime.After(svc.LastBackupAt) {
				svc.LastBackupAt, svc.UpdatedAt = t.Backup.EndTime.UTC(), now
				if err := store.Put(c.ctx, tx, svc); err != nil {
					return err
				}
			}
		}
	case apitype.TaskFailed:
		op.State, op.Error = domain.StateFailed, &domain.Info{Code: "task_failed", Message: t.Message}
	default:
		return domain.Invalidf(domain.CodeInvalidState, field+".state", "use done or failed", "%q is not a task report state", t.State)
	}
	op.UpdatedAt = now
	if err := store.Put(c.ctx, tx, op); err != nil {
		return err
	}
	_, err = tx.BumpRevision(c.ctx) // the task leaves the desired state
	return err
}

// rollupService derives a service's state and applied allowlist revision
// from its nodes' reports.
func (s *Server) rollupService(c *call, tx store.Tx, id string) error {
	svc, err := store.Get[domain.Service](c.ctx, tx, id)
	if err != nil {
		return err
	}
	nodes, err := store.List[domain.Node](c.ctx, tx, store.Query{Parent: id})
	if err != nil {
		return err
	}
	applied := int64(-1)
	running := 0
	for _, n := range nodes {
		if n.State == domain.StateDeleting || domain.Gone(n.State) {
			continue
		}
		if n.State == domain.StateRunning {
			running++
		}
		if applied < 0 || n.AppliedAllowlistRevision < applied {
			applied = n.AppliedAllowlistRevision
		}
	}
	changed := false
	if applied >= 0 && applied != svc.AppliedAllowlistRevision {
		svc.AppliedAllowlistRevision, changed = applied, true
	}
	nowRunning := svc.State == domain.StateCreating && running == svc.NodeCount
	if nowRunning {
		svc.State, changed = domain.StateRunning, true
	}
	if !changed {
		return nil
	}
	svc.UpdatedAt = s.now()
	if err := store.Put(c.ctx, tx, svc); err != nil {
		return err
	}
	if nowRunning {
		// A running service is published in DNS, which follows the
		// revision.
		_, err = tx.BumpRevision(c.ctx)
	}
	return err
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
	p.CAKeySealed = s.cfg.Keys.Seal(key, ProjectCAKeyAD(p.ID))
	return nil
}

// ProjectCAKeyAD binds a sealed project CA key to its project.
func ProjectCAKeyAD(projectID string) []byte { return []byte("project-ca-key:" + projectID) }

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
		if svc.State == domain.StateDeleting || domain.Gone(svc.State) {
			return domain.Conflictf(domain.CodeInvalidState, "", "the service is being deleted", "service %s is %s", id, svc.State)
		}
		svc.AdminVerifier, svc.UpdatedAt = v, s.now()
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		_, err = tx.BumpRevision(c.ctx)
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, apitype.PasswordReset{User: desired.AdminUser, Password: pw})
}
