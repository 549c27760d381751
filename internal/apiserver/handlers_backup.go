package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
)

// Backups. The control plane reads the backup store (the manifests stored
// in the clear beside each encrypted base backup) to list backups and to
// choose the one a restore starts from; the agents write it.

// ListBackups lists the base backups of svc in st, oldest first, each
// manifest authenticated by the service's backup authentication key
// (derived from its private key, unsealed with keys). A service without a
// key pair has no backups.
func ListBackups(ctx context.Context, st objstore.Store, keys Sealer, svc *domain.Service) ([]archive.Backup, error) {
	if len(svc.BackupKeySealed) == 0 {
		return nil, nil
	}
	priv, err := keys.Open(svc.BackupKeySealed, domain.BackupKeyAD(svc.ID))
	if err != nil {
		return nil, fmt.Errorf("unseal the backup key of %s: %w", svc.ID, err)
	}
	ak, err := backup.AuthKey(priv)
	if err != nil {
		return nil, err
	}
	bs, err := archive.ListBackups(ctx, &archive.Config{Region: svc.Region, Service: svc.ID, ObjectStore: st, AuthKey: ak})
	if errors.Is(err, archive.ErrUnauthenticated) {
		return nil, &apiError{status: http.StatusInternalServerError, code: "backup_store_untrusted",
			msg:  "the backup store holds a manifest of service " + svc.ID + " that its key does not authenticate: its backups are not listed or restored until an operator looks",
			hint: "an operator: inspect the service's prefix in the backup store and remove what the agent did not write"}
	}
	return bs, err
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
	bs, err := ListBackups(c.ctx, st, s.cfg.Keys, svc)
	if err != nil {
		return err
	}
	out := apitype.List[apitype.Backup]{Items: []apitype.Backup{}}
	for _, b := range bs {
		out.Items = append(out.Items, backupOut(b))
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
		if !domain.Serving(svc.State) {
			return domain.Conflictf(domain.CodeInvalidState, "", "wait until the service is running (moat service get "+id+")", "service %s is %s: only a running service is backed up", id, svc.State)
		}
		if op, err = newBackupOp(c.ctx, tx, svc, s.now()); err != nil {
			return err
		}
		c.detail = "operation=" + op.ID
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{id}})
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("Location", "/v1/projects/"+c.project+"/operations/"+op.ID)
	return c.reply(0, c.operationOut(op))
}

// newBackupOp records a backup of svc, or returns the one already pending
// or running (domain.NextBackup).
func newBackupOp(ctx context.Context, tx store.Tx, svc *domain.Service, now time.Time) (*domain.Operation, error) {
	live, err := store.List[domain.Operation](ctx, tx, store.Query{ProjectID: svc.ProjectID, Parent: svc.ID, States: domain.LiveOperationStates})
	if err != nil {
		return nil, err
	}
	op, created := domain.NextBackup(svc, live, now)
	if !created {
		return op, nil
	}
	return op, store.Put(ctx, tx, op)
}

// planRestore checks in.RestoreFrom and chooses the base backup (see
// domain.PlanRestore); it fills in what in leaves to the source.
func (s *Server) planRestore(c *call, in *apitype.ServiceCreate) (*domain.RestorePlan, error) {
	rf := in.RestoreFrom
	if rf.ServiceID == "" {
		return nil, domain.Invalidf(domain.CodeRequired, "restore_from.service_id", "give the ID of the service to restore from", "restore_from.service_id is required")
	}
	st, err := s.backupStore()
	if err != nil {
		return nil, err
	}
	var src *domain.Service
	if err := c.view(func(tx store.Tx) (err error) {
		src, err = getIn[domain.Service](c, tx, "service", rf.ServiceID)
		return err
	}); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusNotFound {
			ae.field = "restore_from.service_id"
		}
		return nil, err
	}
	var backups []domain.BaseBackup
	if !domain.Going(src.State) {
		bs, err := ListBackups(c.ctx, st, s.cfg.Keys, src)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			backups = append(backups, domain.BaseBackup{Label: b.Label, EndTime: b.EndTime})
		}
	}
	inherit := len(in.AllowedIPs) == 0 && !in.ConfirmEmpty
	p, err := domain.PlanRestore(src, domain.RestoreRequest{Region: in.Region, Nodes: in.Nodes, AllowedIPs: allowIn(in.AllowedIPs),
		ConfirmEmpty: in.ConfirmEmpty, ToTime: rf.ToTime}, backups, s.now())
	if err != nil {
		return nil, err
	}
	in.Region, in.Nodes, in.ConfirmEmpty = p.Region, p.Nodes, p.ConfirmEmpty
	if inherit {
		in.AllowedIPs = allowOut(p.AllowedIPs)
	}
	return p, nil
}

// startRestore, in the create transaction of svc, records the restore
// (domain.StartRestore): a WAL switch on the source and the restore
// operation that waits for it.
func (s *Server) startRestore(c *call, tx store.Tx, svc *domain.Service, p *domain.RestorePlan) error {
	src, err := getIn[domain.Service](c, tx, "service", p.Source.ID)
	if err != nil {
		return err
	}
	op, sw, err := domain.StartRestore(svc, src, p, s.now())
	if err != nil {
		return err
	}
	for _, o := range []*domain.Operation{sw, op} {
		if o == nil {
			continue
		}
		if err := store.Put(c.ctx, tx, o); err != nil {
			return err
		}
	}
	c.detail = fmt.Sprintf("restore_from=%s backup=%s operation=%s", src.ID, p.Backup.Label, op.ID)
	if !p.ToTime.IsZero() {
		c.detail += " to_time=" + p.ToTime.Format(time.RFC3339Nano)
	}
	return nil
}
