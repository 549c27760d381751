package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
)

// Backups: the reconciler hands backup and WAL-switch operations to the
// source's primary (by moving them to running: the desired state then
// carries them as node tasks; the agent's report finishes them), walks a
// restore through its steps, schedules base backups and applies
// retention.

// failedBackupPause is how long scheduling waits after a failed backup.
const failedBackupPause = 5 * time.Minute

// Task timeouts: a WAL switch (a restore waits for it) and a base backup
// that no agent finished by then fail.
const (
	switchTimeout = 3 * time.Minute
	backupTimeout = 24 * time.Hour
)

// advanceTask starts a backup or WAL switch once the service's primary
// runs, and fails it if the service goes away.
func (r *Reconciler) advanceTask(ctx context.Context, op *domain.Operation) error {
	svc, nodes, err := r.serviceNodes(ctx, op.TargetID)
	if errors.Is(err, store.ErrNotFound) {
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "service_gone", Message: "the service no longer exists"})
	}
	if err != nil {
		return err
	}
	if domain.Going(svc.State) {
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "service_deleted", Message: "the service is being deleted"})
	}
	limit := backupTimeout
	if op.Type == domain.OpServiceSwitchWAL {
		limit = switchTimeout
	}
	if r.cfg.Now().Sub(op.CreatedAt) > limit {
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "timeout",
			Message: fmt.Sprintf("the service's primary did not finish the task within %v", limit),
			Cause:   "no report of the task from the primary's agent: see the primary node's state and its postgres.log"})
	}
	if op.State != domain.StatePending {
		return nil // running: the primary's agent reports it
	}
	for _, n := range nodes {
		if svc.IsPrimary(n) && n.State == domain.StateRunning {
			return r.updateOp(ctx, op.ID, func(_ store.Tx, o *domain.Operation) error {
				if o.State != domain.StatePending {
					return errSkip
				}
				return o.Start("", r.cfg.Now().UTC())
			})
		}
	}
	return nil // wait for the primary
}

// advanceRestore walks a restore: the source's WAL switch, then the
// restore itself (the desired state gives the new primary the source's
// key only at that step), until the new service runs or its primary fails.
func (r *Reconciler) advanceRestore(ctx context.Context, op *domain.Operation) error {
	switch {
	case op.State == domain.StatePending:
		return r.updateOp(ctx, op.ID, func(tx store.Tx, o *domain.Operation) error {
			if o.State != domain.StatePending {
				return errSkip
			}
			if o.WaitID != "" {
				return o.Start(domain.StepSwitchWAL, r.cfg.Now().UTC())
			}
			if err := o.Start(domain.StepRestore, r.cfg.Now().UTC()); err != nil {
				return err
			}
			return r.auditKeyRelease(ctx, tx, o)
		})
	case op.Step == domain.StepSwitchWAL:
		var wait *domain.Operation
		if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
			wait, err = store.Get[domain.Operation](ctx, tx, op.WaitID)
			return err
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if wait != nil && !domain.OperationMachine.Terminal(wait.State) {
			return nil
		}
		if wait != nil && wait.State == domain.StateFailed {
			why, cause := "the WAL switch failed", ""
			if wait.Error != nil {
				why, cause = wait.Error.Message, wait.Error.Cause
			}
			var to time.Time
			if err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
				s, err := store.Get[domain.Service](ctx, tx, op.TargetID)
				if err == nil {
					to = s.RestoreToTime
				}
				return err
			}); err != nil {
				return err
			}
			if to.IsZero() {
				// "Everything committed so far" cannot be kept: say so
				// rather than restore less.
				return r.failRestore(ctx, op.ID, domain.Info{Code: domain.CodeRestoreFailed,
					Message: "the source could not archive its latest WAL (" + why + "): restore to an earlier time with --to-time, or fix the source's archiving and retry",
					Cause:   cause})
			}
			// A past time may well be in the archive already; if it is
			// not, PostgreSQL says so and the restore fails then.
			r.log.Warn("restore: the source's WAL switch failed; restoring to the requested time from the archive as it is", "operation", op.ID, "source", op.SourceID, "err", why, "cause", cause)
		}
		return r.updateOp(ctx, op.ID, func(tx store.Tx, o *domain.Operation) error {
			if o.Step != domain.StepSwitchWAL {
				return errSkip
			}
			o.Step = domain.StepRestore
			return r.auditKeyRelease(ctx, tx, o)
		})
	}
	svc, nodes, err := r.serviceNodes(ctx, op.TargetID)
	if errors.Is(err, store.ErrNotFound) {
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "service_gone", Message: "the service no longer exists"})
	}
	if err != nil {
		return err
	}
	switch {
	case svc.State == domain.StateRunning || svc.State == domain.StateDegraded:
		return r.finishOp(ctx, op.ID, nil)
	case domain.Going(svc.State):
		return r.finishOp(ctx, op.ID, &domain.Info{Code: "service_deleted", Message: "the service was deleted during its restore"})
	}
	var src *domain.Service
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		src, err = store.Get[domain.Service](ctx, tx, op.SourceID)
		return err
	}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if src == nil || domain.Going(src.State) {
		return r.failRestore(ctx, op.ID, sourceDeleted(op.SourceID))
	}
	for _, n := range nodes {
		if svc.IsPrimary(n) && n.State == domain.StateFailed {
			why := domain.Info{Code: domain.CodeRestoreFailed, Message: "the restore failed"}
			if n.StateInfo != nil {
				why.Message, why.Cause = "the restore failed: "+n.StateInfo.Message, n.StateInfo.Cause
			}
			return r.failRestore(ctx, op.ID, why)
		}
	}
	return nil
}

// sourceDeleted is why a restore whose source was deleted failed.
func sourceDeleted(id string) domain.Info {
	return domain.Info{Code: domain.CodeRestoreFailed, Message: "the source service " + id + " was deleted during the restore, and its backups with it"}
}

// failRestore fails a restore and its service with why.
func (r *Reconciler) failRestore(ctx context.Context, opID string, why domain.Info) error {
	if err := r.finishOp(ctx, opID, &why); err != nil {
		return err
	}
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		o, err := store.Get[domain.Operation](ctx, tx, opID)
		if err != nil {
			return err
		}
		s, err := store.Get[domain.Service](ctx, tx, o.TargetID)
		if err != nil || s.State != domain.StateCreating {
			return err
		}
		if err := s.Fail(why, r.cfg.Now().UTC()); err != nil {
			return err
		}
		if err := store.Put(ctx, tx, s); err != nil {
			return err
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{s.ID}})
		return err
	})
}

// scheduleBackups starts a base backup of every running service whose
// newest backup is older than the backup interval (a new service: at
// once), unless one is under way or one failed within failedBackupPause.
func (r *Reconciler) scheduleBackups(ctx context.Context, svcs []*domain.Service) error {
	if r.cfg.BackupInterval <= 0 || r.cfg.Backups == nil {
		return nil
	}
	var ops []*domain.Operation
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		ops, err = store.List[domain.Operation](ctx, tx, store.Query{States: slices.Concat(domain.LiveOperationStates, []string{domain.StateFailed})})
		return err
	}); err != nil {
		return err
	}
	now := r.cfg.Now().UTC()
	busy := map[string]bool{}
	for _, o := range ops {
		if o.Type != domain.OpServiceBackup {
			continue
		}
		if !domain.OperationMachine.Terminal(o.State) || (o.State == domain.StateFailed && now.Sub(o.UpdatedAt) < failedBackupPause) {
			busy[o.TargetID] = true
		}
	}
	var errs []error
	for _, s := range svcs {
		if !backedUp(s.State) || busy[s.ID] || s.BackupPublicKeyPEM == "" || now.Sub(s.LastBackupAt) < r.cfg.BackupInterval {
			continue
		}
		errs = append(errs, r.cfg.Store.Update(ctx, func(tx store.Tx) error {
			cur, err := store.Get[domain.Service](ctx, tx, s.ID)
			if err != nil || !backedUp(cur.State) {
				return err
			}
			live, err := store.List[domain.Operation](ctx, tx, store.Query{ProjectID: cur.ProjectID, Parent: cur.ID, States: domain.LiveOperationStates})
			if err != nil {
				return err
			}
			op, created := domain.NextBackup(cur, live, now)
			if !created {
				return nil
			}
			if err := store.Put(ctx, tx, op); err != nil {
				return err
			}
			r.log.Info("scheduled base backup", "service", s.ID, "operation", op.ID, "last_backup_at", s.LastBackupAt)
			_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{cur.ID}})
			return err
		}))
	}
	return errors.Join(errs...)
}

// prune applies retention to a service after each new backup: it keeps
// the BackupKeep newest base backups and those younger than
// BackupKeepAge, and the WAL the oldest kept one needs.
func (r *Reconciler) prune(ctx context.Context, s *domain.Service) error {
	if r.cfg.Backups == nil || r.cfg.BackupKeep < 1 {
		return nil
	}
	restores, err := r.restoresFrom(ctx, s.ID)
	if err != nil {
		return err
	}
	for _, o := range restores {
		if !domain.OperationMachine.Terminal(o.State) {
			return nil // it may need what retention would delete: later
		}
	}
	if len(s.BackupKeySealed) == 0 {
		return nil // no key pair: nothing was backed up
	}
	priv, err := r.cfg.Keys.Open(s.BackupKeySealed, domain.BackupKeyAD(s.ID))
	if err != nil {
		return fmt.Errorf("retention of %s: unseal the backup key: %w", s.ID, err)
	}
	ak, err := backup.AuthKey(priv)
	if err != nil {
		return fmt.Errorf("retention of %s: %w", s.ID, err)
	}
	// Prune acts only on manifests the key authenticates: one that is
	// not (written by something other than an agent) fails it, and
	// retention deletes nothing until an operator looks.
	deleted, err := archive.Prune(ctx, &archive.Config{Region: s.Region, Service: s.ID, ObjectStore: r.cfg.Backups, AuthKey: ak}, r.cfg.BackupKeep, r.cfg.BackupKeepAge)
	if err != nil {
		return fmt.Errorf("retention of %s: %w", s.ID, err)
	}
	for _, b := range deleted {
		r.log.Info("base backup deleted by retention", "service", s.ID, "label", b.Label)
	}
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := store.Get[domain.Service](ctx, tx, s.ID)
		if err != nil {
			return err
		}
		cur.PrunedAt = s.LastBackupAt
		return store.Put(ctx, tx, cur)
	})
}

// deleteBackups deletes every object of a deleted service from the backup
// store: base backups, manifests, WAL and digests.
func (r *Reconciler) deleteBackups(ctx context.Context, s *domain.Service) error {
	if r.cfg.Backups == nil {
		return nil
	}
	prefix, err := objstore.ServicePrefix(s.Region, s.ID)
	if err != nil {
		return err
	}
	objs, err := r.cfg.Backups.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("delete backups of %s: %w", s.ID, err)
	}
	// Manifests first: a half-deleted backup is never listed.
	slices.SortStableFunc(objs, func(a, b objstore.ObjectInfo) int {
		return cmpBool(strings.HasSuffix(b.Key, ".json"), strings.HasSuffix(a.Key, ".json"))
	})
	for _, o := range objs {
		if err := r.cfg.Backups.Delete(ctx, o.Key); err != nil && !errors.Is(err, objstore.ErrNotFound) {
			return fmt.Errorf("delete backups of %s: %w", s.ID, err)
		}
	}
	if len(objs) > 0 {
		r.log.Info("backups of a deleted service deleted", "service", s.ID, "objects", len(objs))
	}
	return nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// restoresFrom lists the restore operations whose source is service id.
func (r *Reconciler) restoresFrom(ctx context.Context, id string) ([]*domain.Operation, error) {
	var out []*domain.Operation
	err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
		ops, err := store.List[domain.Operation](ctx, tx, store.Query{})
		for _, o := range ops {
			if o.Type == domain.OpServiceRestore && o.SourceID == id {
				out = append(out, o)
			}
		}
		return err
	})
	return out, err
}

// restoreGrace is how long a deleted source's backups outlive a restore
// from it that was failed: its agent takes the key back and stops the
// replay first.
const restoreGrace = 30 * time.Second

// restoresDone fails the unfinished restores from a service being deleted
// and reports whether they are over (and their agents had restoreGrace to
// stop replaying), so that its backups may go.
func (r *Reconciler) restoresDone(ctx context.Context, s *domain.Service) (bool, error) {
	restores, err := r.restoresFrom(ctx, s.ID)
	if err != nil {
		return false, err
	}
	done := true
	for _, o := range restores {
		switch {
		case !domain.OperationMachine.Terminal(o.State):
			if err := r.failRestore(ctx, o.ID, sourceDeleted(s.ID)); err != nil {
				return false, err
			}
			done = false
		case o.State == domain.StateFailed && r.cfg.Now().Sub(o.UpdatedAt) < restoreGrace:
			done = false
		}
	}
	return done, nil
}

// auditKeyRelease records, with the step that releases it, that a
// service's backup private key goes to the primary of a restore.
func (r *Reconciler) auditKeyRelease(ctx context.Context, tx store.Tx, o *domain.Operation) error {
	_, err := audit.Append(ctx, tx, domain.AuditEntry{Time: r.cfg.Now().UTC(), Actor: "system", ProjectID: o.ProjectID,
		Action: "backup.key.release", Target: o.SourceID, Outcome: domain.OutcomeSuccess,
		Detail: "to the primary of " + o.TargetID + " for restore " + o.ID + " from base backup " + o.BackupLabel})
	return err
}

// backedUp reports whether the schedule backs up a service in state s: a
// running one, or a degraded one (its primary may still run; a failed
// task is reported like any other).
func backedUp(s string) bool { return s == domain.StateRunning || s == domain.StateDegraded }
