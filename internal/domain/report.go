package domain

import (
	"slices"
	"time"
)

// Node states a host's agent reports.
const (
	NodeReportRunning = "running"
	NodeReportFailed  = "failed"
	NodeReportWiped   = "wiped"
)

// Task report states.
const (
	TaskDone   = "done"
	TaskFailed = "failed"
)

// NodeReport is what an agent reports applying to one node (the API
// converts the wire's report to it).
type NodeReport struct {
	// Revision is the desired-state revision the node enforces.
	Revision          int64
	AllowlistRevision int64
	// State is NodeReportRunning, NodeReportFailed or NodeReportWiped;
	// Message the agent's text for a failure (internal: it may hold
	// paths and command output).
	State   string
	Message string
	Archive *ArchiveStatus
	// Volume is the node's volume, when it has one.
	Volume *NodeVolume
	// Replication is the node's PostgreSQL replication as the agent saw
	// it (nil: not reported); its At is set when applied.
	Replication *ReplicationReport
}

// TaskReport is an agent's result of a node task (the operation of the
// same ID). Message is the agent's error text for a failure (internal).
type TaskReport struct {
	State   string
	Message string
	// Backup is the base backup a backup task took.
	Backup *BaseBackup
}

// BaseBackup is what the domain needs of a base backup in the backup
// store: its label and when it ended.
type BaseBackup struct {
	Label   string
	EndTime time.Time
}

// AcceptsReports reports whether reports about the node still count (a
// deleted node's are ignored).
func (n *Node) AcceptsReports() bool { return !Gone(n.State) }

// ApplyReport records an agent's report on the node: the revisions it
// enforces, its WAL archiving and volume, and the state it reports
// (running: a creating or failed node runs; failed: a creating or running
// node fails, with CodeVolumeFull when its volume is full and
// CodeVolumeLost when its volume's key is gone; wiped: a
// deleting node may be removed). Only a running report advances
// the revisions: applied means enforced, and a node that failed enforces
// nothing new. The agent's failure text is kept as the internal cause
// only. An unknown report state is an Invalid error about field "state".
//
// It reports whether the report changed something the platform acts on:
// the node's reportedFacts, or its replication as failover decides on it
// (Turned). Agents repeat their reports every few seconds; only a
// changing one is audited.
func (n *Node) ApplyReport(r NodeReport, now time.Time) (changed bool, err error) {
	switch r.State {
	case NodeReportRunning, NodeReportFailed, NodeReportWiped:
	default:
		return false, Invalidf(CodeInvalidState, "state", "use running, failed or wiped", "%q is not a node report state", r.State)
	}
	was, wasRepl := n.reported(), n.Replication
	defer func() { changed = err == nil && (n.reported() != was || Turned(wasRepl, n.Replication)) }()
	n.ReportedAt, n.UpdatedAt = now, now
	if a := r.Archive; a != nil {
		c := *a
		n.Archive = &c
	}
	if v := r.Volume; v != nil {
		c := *v
		n.Volume = &c
	}
	if rr := r.Replication; rr != nil {
		c := *rr
		c.At = now
		c.Standbys = slices.Clone(rr.Standbys)
		if old := n.Replication; !c.Up && old != nil && len(c.Standbys) == 0 {
			// A server that is down lists no standbys: what it last
			// listed (were they synchronous?) still decides a failover.
			c.Standbys, c.ReceivedLSN = old.Standbys, max(c.ReceivedLSN, old.ReceivedLSN)
		}
		n.Replication = &c
	}
	if r.State == NodeReportRunning {
		n.AppliedRevision = r.Revision
		if r.AllowlistRevision > n.AppliedAllowlistRevision {
			n.AppliedAllowlistRevision = r.AllowlistRevision
		}
	}
	switch r.State {
	case NodeReportRunning:
		if n.State == StateCreating || n.State == StateFailed {
			if err := n.transition(NodeMachine, StateRunning, now); err != nil {
				return false, err
			}
			n.StateInfo = nil
		}
	case NodeReportFailed:
		if n.State == StateCreating || n.State == StateRunning {
			if err := n.transition(NodeMachine, StateFailed, now); err != nil {
				return false, err
			}
		}
		n.StateInfo = &Info{Code: CodeNodeFailed, Message: "the node's PostgreSQL could not be set up or started", Cause: r.Message}
		switch v := r.Volume; {
		case v != nil && v.Lost:
			n.StateInfo = &Info{Code: CodeVolumeLost, Message: volumeLostMessage, Cause: r.Message}
		case v != nil && v.Full:
			n.StateInfo = &Info{Code: CodeVolumeFull, Message: volumeFullMessage, Cause: r.Message}
		}
	case NodeReportWiped:
		if n.State == StateDeleting {
			n.StateInfo = &Info{Code: CodeWiped, Message: "PostgreSQL stopped and data wiped"}
		}
	}
	return false, nil
}

// reportedFacts is what of a node's reports the platform acts on, but
// for its replication (Turned): its state and why, the revisions it
// enforces, its volume's loss or fullness. The rest (WAL positions,
// bytes used, the report's time) changes with every report and is
// stored, not audited.
type reportedFacts struct {
	state, info               string
	applied, appliedAllowlist int64
	volumeLost, volumeFull    bool
}

// reported returns n's reportedFacts.
func (n *Node) reported() reportedFacts {
	f := reportedFacts{state: n.State, applied: n.AppliedRevision, appliedAllowlist: n.AppliedAllowlistRevision}
	if n.StateInfo != nil {
		f.info = n.StateInfo.Code
	}
	if v := n.Volume; v != nil {
		f.volumeLost, f.volumeFull = v.Lost, v.Full
	}
	return f
}

// CodeNodeFailed is the state info code of a node its agent reported
// failed.
const CodeNodeFailed = "node_failed"

// CodeVolumeFull is the state info code of a node whose agent reported it
// failed because its volume is full; it runs again once space is freed.
const CodeVolumeFull = "volume_full"

const volumeFullMessage = "the node's encrypted volume is full, so PostgreSQL cannot write: free space " +
	"(DROP or TRUNCATE what is not needed; DELETE then VACUUM FULL) and the node runs again; " +
	"a larger volume needs a new service (restore this one into it)"

// CodeVolumeLost is the state info code of a node whose agent reported it
// failed because its volume's key is gone (its volume server died, or the
// host restarted): the node never runs again and is to be replaced.
const CodeVolumeLost = "volume_lost"

const volumeLostMessage = "the node's encrypted volume lost its key (its volume server stopped, or the host restarted), " +
	"so its data cannot be read again: by design the key is never stored; the node is to be replaced " +
	"from the service's replicas, or the service restored from a backup"

// CodeTaskFailed is the error code of a backup or WAL-switch operation
// whose node task failed.
const CodeTaskFailed = "task_failed"

// ApplyTaskReport finishes the operation with its node task's result and
// reports whether it changed (a finished operation ignores late reports).
// A backup's label is recorded. An unknown state is an Invalid error about
// field "state".
func (o *Operation) ApplyTaskReport(t TaskReport, now time.Time) (bool, error) {
	switch t.State {
	case TaskDone, TaskFailed:
	default:
		return false, Invalidf(CodeInvalidState, "state", "use done or failed", "%q is not a task report state", t.State)
	}
	if !o.Live() {
		return false, nil
	}
	if t.State == TaskFailed {
		return true, o.Fail(Info{Code: CodeTaskFailed, Message: taskFailure(o.Type), Cause: t.Message}, now)
	}
	if o.State == StatePending {
		// Reported before the reconciler saw it start: it ran.
		if err := o.Start(o.Step, now); err != nil {
			return false, err
		}
	}
	if t.Backup != nil {
		o.BackupLabel = t.Backup.Label
	}
	return true, o.Succeed(now)
}

// taskFailure is what a tenant reads of a failed node task.
func taskFailure(typ string) string {
	switch typ {
	case OpServiceBackup:
		return "the base backup of the service's primary failed; retry later, or ask the platform operator"
	case OpServiceSwitchWAL:
		return "the service's primary could not archive its current WAL segment; ask the platform operator"
	}
	return "the node task failed; ask the platform operator"
}
