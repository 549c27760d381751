package domain

import (
	"maps"
	"time"
)

// Error codes of restore planning (stable: the API returns them).
const (
	CodeInvalidTime       = "invalid_time"
	CodeNoBackup          = "no_backup"
	CodeBeforeFirstBackup = "before_first_backup"
	CodeRestoreFailed     = "restore_failed"
)

// RestoreRequest is a request to create a service restored from another:
// the fields the tenant may leave out take the source's values.
type RestoreRequest struct {
	Region       string
	Nodes        int
	AllowedIPs   []AllowEntry
	ConfirmEmpty bool
	// ToTime is the point in time to restore to; nil: everything the
	// source committed so far.
	ToTime *time.Time
}

// RestorePlan is a checked restore: the new service's region, node count
// and allowlist (from the request, else the source's), the source and the
// base backup it starts from.
type RestorePlan struct {
	Source       *Service
	Backup       BaseBackup
	ToTime       time.Time // zero: to the end of the archive
	Region       string
	Nodes        int
	AllowedIPs   []AllowEntry
	ConfirmEmpty bool
}

// PlanRestore checks a restore of src and chooses its base backup among
// backups (src's, oldest first): the newest that ended before the target
// time. Errors name the request's fields (restore_from.service_id,
// restore_from.to_time, region).
func PlanRestore(src *Service, req RestoreRequest, backups []BaseBackup, now time.Time) (*RestorePlan, error) {
	if Going(src.State) {
		return nil, Conflictf(CodeInvalidState, "restore_from.service_id", "restore from a live service", "service %s is %s", src.ID, src.State)
	}
	p := &RestorePlan{Source: src, Region: req.Region, Nodes: req.Nodes, AllowedIPs: req.AllowedIPs, ConfirmEmpty: req.ConfirmEmpty}
	if p.Region == "" {
		p.Region = src.Region
	} else if p.Region != src.Region {
		return nil, Invalidf(CodeRegionMismatch, "region", "omit region, or give the source's region "+src.Region+": backups stay in their region",
			"a restore of %s (region %s) cannot be in region %s", src.ID, src.Region, p.Region)
	}
	if p.Nodes == 0 {
		p.Nodes = src.NodeCount
	}
	if len(p.AllowedIPs) == 0 && !p.ConfirmEmpty {
		// The source's access policy, not the platform's default: a
		// restore of a locked-down service is not opened to everyone.
		p.AllowedIPs = append([]AllowEntry(nil), src.AllowedIPs...)
		p.ConfirmEmpty = len(src.AllowedIPs) == 0
	}
	if req.ToTime != nil {
		p.ToTime = req.ToTime.UTC()
		if !p.ToTime.Before(now) {
			return nil, Invalidf(CodeInvalidTime, "restore_from.to_time", "give a time in the past (RFC 3339), or omit it to restore everything committed so far",
				"to_time %s is not in the past (now %s)", p.ToTime.Format(time.RFC3339Nano), now.Format(time.RFC3339))
		}
	}
	found := false
	for _, b := range backups {
		if p.ToTime.IsZero() || b.EndTime.Before(p.ToTime) {
			p.Backup, found = b, true
		}
	}
	if !found {
		if len(backups) == 0 {
			return nil, Conflictf(CodeNoBackup, "restore_from.service_id", "take one first: moat backup create "+src.ID+" --wait",
				"service %s has no base backup yet", src.ID)
		}
		return nil, Invalidf(CodeBeforeFirstBackup, "restore_from.to_time",
			"give a time after "+backups[0].EndTime.Format(time.RFC3339Nano)+", the end of the oldest base backup",
			"to_time %s is before the end of every base backup of %s", p.ToTime.Format(time.RFC3339Nano), src.ID)
	}
	return p, nil
}

// StartRestore records on svc, a new service, the restore p planned, with
// src the source as it is now: the restore operation, and the WAL switch
// of the source it waits for when the source runs (so everything it
// committed so far is archived); both are for the caller to store. It
// refuses when the source went away or changed its backup key since p was
// planned. The new service takes the source's settings.
func StartRestore(svc, src *Service, p *RestorePlan, now time.Time) (restore, walSwitch *Operation, err error) {
	if Going(src.State) {
		return nil, nil, Conflictf(CodeInvalidState, "restore_from.service_id", "restore from a live service", "service %s is %s", src.ID, src.State)
	}
	if src.BackupPublicKeyPEM != p.Source.BackupPublicKeyPEM || src.BackupPublicKeyPEM == "" {
		return nil, nil, Conflictf(CodeInvalidState, "restore_from.service_id", "retry the request",
			"the backup key of service %s changed while the restore was planned", src.ID)
	}
	restore = NewOperation(svc.ProjectID, OpServiceRestore, svc.ID, now)
	restore.SourceID, restore.BackupLabel = src.ID, p.Backup.Label
	if Serving(src.State) {
		walSwitch = NewOperation(svc.ProjectID, OpServiceSwitchWAL, src.ID, now)
		restore.WaitID = walSwitch.ID
	}
	svc.RestoreFrom, svc.RestoreToTime, svc.RestoreBackup, svc.OperationID = src.ID, p.ToTime, p.Backup.Label, restore.ID
	// The source's settings, and the restart ones as its nodes run them:
	// replaying its WAL needs at least the max_connections (and the
	// like) it was written with, and they never went down (0021).
	svc.Settings, svc.NodeSettings = maps.Clone(src.Settings), maps.Clone(src.NodeSettings)
	return restore, walSwitch, nil
}
