package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
)

// Backups. The control plane reads the backup store (the manifests stored
// in the clear beside each encrypted base backup) to list backups and to
// choose the one a restore starts from; the agents write it.

// ListBackups lists the base backups of svc in st, oldest first.
func ListBackups(ctx context.Context, st objstore.Store, svc *domain.Service) ([]archive.Backup, error) {
	return archive.ListBackups(ctx, &archive.Config{Region: svc.Region, Service: svc.ID, ObjectStore: st})
}

func (s *Server) backupStore() (objstore.Store, error) {
	if s.cfg.Backups == nil {
		return nil, &apiError{status: http.StatusNotImplemented, code: "backups_unavailable",
			msg: "this control plane has no backup store", hint: "start the server with a backup directory (moat server --backup-dir)"}
	}
	return s.cfg.Backups, nil
}

func (s *Server) listBackups(c *call) error {
	st, err := s.backupStore()
	if err != nil {
		return err
	}
	var svc *domain.Service
	if err := c.view(func(tx store.Tx) (err error) {
		svc, err = getIn[domain.Service](c, tx, "service", c.r.PathValue("id"))
		return err
	}); err != nil {
		return err
	}
	bs, err := ListBackups(c.ctx, st, svc)
	if err != nil {
		return err
	}
	out := apitype.List[apitype.Backup]{Items: []apitype.Backup{}}
	for _, b := range bs {
		out.Items = append(out.Items, b.API())
	}
	return c.reply(0, out)
}

func (s *Server) createBackup(c *call) error {
	if _, err := s.backupStore(); err != nil {
		return err
	}
	id := c.r.PathValue("id")
	c.target = id
	var op *domain.Operation
	err := c.mutate(func(tx store.Tx) error {
		svc, err := getIn[domain.Service](c, tx, "service", id)
		if err != nil {
			return err
		}
		if svc.State != domain.StateRunning && svc.State != domain.StateMigrating {
			return domain.Conflictf(domain.CodeInvalidState, "", "wait until the service is running (moat service get "+id+")", "service %s is %s: only a running service is backed up", id, svc.State)
		}
		if op, err = NewBackupOp(c.ctx, tx, svc, s.now()); err != nil {
			return err
		}
		c.detail = "operation=" + op.ID
		_, err = tx.BumpRevision(c.ctx)
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("Location", "/v1/projects/"+c.project+"/operations/"+op.ID)
	return c.reply(0, operationOut(op))
}

// NewBackupOp records a backup of svc, or returns the one already pending
// or running (backups of a service do not queue up).
func NewBackupOp(ctx context.Context, tx store.Tx, svc *domain.Service, now time.Time) (*domain.Operation, error) {
	ops, err := store.List[domain.Operation](ctx, tx, store.Query{ProjectID: svc.ProjectID, Parent: svc.ID, States: domain.LiveOperationStates})
	if err != nil {
		return nil, err
	}
	for _, o := range ops {
		if o.Type == domain.OpServiceBackup {
			return o, nil
		}
	}
	op := &domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: svc.ProjectID, State: domain.OperationMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Type: domain.OpServiceBackup, TargetID: svc.ID}
	return op, store.Put(ctx, tx, op)
}

// restorePlan is a checked restore request: its source and the base
// backup it starts from.
type restorePlan struct {
	src    *domain.Service
	backup archive.Backup
	toTime time.Time
}

// planRestore checks in.RestoreFrom and chooses the base backup: the
// newest one that ended before the target time.
func (s *Server) planRestore(c *call, in *apitype.ServiceCreate) (*restorePlan, error) {
	rf := in.RestoreFrom
	if rf.ServiceID == "" {
		return nil, domain.Invalidf(domain.CodeRequired, "restore_from.service_id", "give the ID of the service to restore from", "restore_from.service_id is required")
	}
	st, err := s.backupStore()
	if err != nil {
		return nil, err
	}
	p := &restorePlan{}
	if err := c.view(func(tx store.Tx) (err error) {
		p.src, err = getIn[domain.Service](c, tx, "service", rf.ServiceID)
		return err
	}); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusNotFound {
			ae.field = "restore_from.service_id"
		}
		return nil, err
	}
	src := p.src
	if src.State == domain.StateDeleting || domain.Gone(src.State) {
		return nil, domain.Conflictf(domain.CodeInvalidState, "restore_from.service_id", "restore from a live service", "service %s is %s", src.ID, src.State)
	}
	if in.Region == "" {
		in.Region = src.Region
	} else if in.Region != src.Region {
		return nil, domain.Invalidf(domain.CodeRegionMismatch, "region", "omit region, or give the source's region "+src.Region+": backups stay in their region",
			"a restore of %s (region %s) cannot be in region %s", src.ID, src.Region, in.Region)
	}
	if in.Nodes == 0 {
		in.Nodes = src.NodeCount
	}
	if len(in.AllowedIPs) == 0 && !in.ConfirmEmpty {
		// The source's access policy, not the platform's default: a
		// restore of a locked-down service is not opened to everyone.
		in.AllowedIPs = allowOut(src.AllowedIPs)
		in.ConfirmEmpty = len(src.AllowedIPs) == 0
	}
	now := s.now()
	if rf.ToTime != nil {
		p.toTime = rf.ToTime.UTC()
		if !p.toTime.Before(now) {
			return nil, domain.Invalidf("invalid_time", "restore_from.to_time", "give a time in the past (RFC 3339), or omit it to restore everything committed so far",
				"to_time %s is not in the past (now %s)", p.toTime.Format(time.RFC3339Nano), now.Format(time.RFC3339))
		}
	}
	bs, err := ListBackups(c.ctx, st, src)
	if err != nil {
		return nil, err
	}
	found := false
	for _, b := range bs {
		if p.toTime.IsZero() || b.EndTime.Before(p.toTime) {
			p.backup, found = b, true
		}
	}
	if !found {
		if len(bs) == 0 {
			return nil, domain.Conflictf("no_backup", "restore_from.service_id", "take one first: moat backup create "+src.ID+" --wait",
				"service %s has no base backup yet", src.ID)
		}
		return nil, domain.Invalidf("before_first_backup", "restore_from.to_time",
			"give a time after "+bs[0].EndTime.Format(time.RFC3339Nano)+", the end of the oldest base backup",
			"to_time %s is before the end of every base backup of %s", p.toTime.Format(time.RFC3339Nano), src.ID)
	}
	return p, nil
}

// startRestore, in the create transaction of svc, records the restore: a
// WAL switch on the source (so everything it committed so far is
// archived) and the restore operation that waits for it.
func (s *Server) startRestore(c *call, tx store.Tx, svc *domain.Service, p *restorePlan) error {
	src, err := getIn[domain.Service](c, tx, "service", p.src.ID)
	if err != nil {
		return err
	}
	if src.State == domain.StateDeleting || domain.Gone(src.State) {
		return domain.Conflictf(domain.CodeInvalidState, "restore_from.service_id", "restore from a live service", "service %s is %s", src.ID, src.State)
	}
	if src.BackupPublicKeyPEM != p.src.BackupPublicKeyPEM || src.BackupPublicKeyPEM == "" {
		return domain.Conflictf(domain.CodeInvalidState, "restore_from.service_id", "retry the request",
			"the backup key of service %s changed while the restore was planned", src.ID)
	}
	now := s.now()
	op := &domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: c.project, State: domain.OperationMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Type: domain.OpServiceRestore, TargetID: svc.ID, SourceID: src.ID, BackupLabel: p.backup.Label}
	if src.State == domain.StateRunning || src.State == domain.StateMigrating {
		sw := &domain.Operation{Meta: domain.Meta{ID: domain.NewID(domain.PrefixOperation), ProjectID: c.project, State: domain.OperationMachine.Initial, CreatedAt: now, UpdatedAt: now},
			Type: domain.OpServiceSwitchWAL, TargetID: src.ID}
		if err := store.Put(c.ctx, tx, sw); err != nil {
			return err
		}
		op.WaitID = sw.ID
	}
	if err := store.Put(c.ctx, tx, op); err != nil {
		return err
	}
	svc.RestoreFrom, svc.RestoreToTime, svc.RestoreBackup, svc.OperationID = src.ID, p.toTime, p.backup.Label, op.ID
	c.detail = fmt.Sprintf("restore_from=%s backup=%s operation=%s", src.ID, p.backup.Label, op.ID)
	if !p.toTime.IsZero() {
		c.detail += " to_time=" + p.toTime.Format(time.RFC3339Nano)
	}
	return nil
}
