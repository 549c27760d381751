package domain

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Replication: what the control plane knows of a service's streaming
// replication (agents report it), the synchronous_standby_names its
// primary runs with, and each replica's lag and sync state.

// LSN is a PostgreSQL WAL position (pg_lsn).
type LSN uint64

// ParseLSN parses PostgreSQL's text form of an LSN, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil || hi == "" || lo == "" {
		return 0, Invalidf(CodeInvalidLSN, "lsn", "use PostgreSQL's form, e.g. 16/B374D848", "%q is not an LSN", s)
	}
	return LSN(h<<32 | l), nil
}

// String is PostgreSQL's text form.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }

// CodeInvalidLSN is the error code of a malformed LSN in a report.
const CodeInvalidLSN = "invalid_lsn"

// Sync states of a standby, as pg_stat_replication.sync_state names them.
const (
	SyncStateAsync     = "async"
	SyncStateSync      = "sync"
	SyncStateQuorum    = "quorum"
	SyncStatePotential = "potential"
)

// ReplicationReport is what a node's agent reports of its PostgreSQL at
// At. On a replica ReceivedLSN is pg_last_wal_receive_lsn(); on a primary
// it is pg_current_wal_flush_lsn().
type ReplicationReport struct {
	At time.Time `json:"at"`
	// Up: PostgreSQL accepts connections; DownSince is when the agent
	// first found it down (zero while it is up).
	Up        bool      `json:"up"`
	DownSince time.Time `json:"down_since,omitzero"`
	// InRecovery: the node runs as a replica (pg_is_in_recovery()).
	InRecovery bool `json:"in_recovery,omitempty"`
	Timeline   int  `json:"timeline,omitempty"`
	// Upstream is the node ID a replica follows (its primary_conninfo);
	// Streaming whether its WAL receiver is connected.
	Upstream  string `json:"upstream,omitempty"`
	Streaming bool   `json:"streaming,omitempty"`
	// NotStreamingSince: when the agent first found a replica that
	// follows an upstream not streaming (zero while it streams).
	NotStreamingSince time.Time `json:"not_streaming_since,omitzero"`
	// ReceivedLSN and ReplayedLSN: see the type's comment.
	ReceivedLSN LSN `json:"received_lsn,omitempty"`
	ReplayedLSN LSN `json:"replayed_lsn,omitempty"`
	// Standbys, on a primary: pg_stat_replication, one per standby.
	Standbys []StandbyStatus `json:"standbys,omitempty"`
	// Fenced: the agent stopped the node accepting writes (the desired
	// state said so, or its lease on the control plane ran out).
	Fenced bool `json:"fenced,omitempty"`
	// Switching: the node's service is switching its primary over, so a
	// change of its position counts (Turned).
	Switching bool `json:"switching,omitempty"`
}

// StandbyStatus is one row of a primary's pg_stat_replication: Name is
// the standby's application_name (ApplicationName).
type StandbyStatus struct {
	Name      string `json:"name"`
	SyncState string `json:"sync_state"`
	FlushLSN  LSN    `json:"flush_lsn,omitempty"`
	ReplayLSN LSN    `json:"replay_lsn,omitempty"`
}

// Member is one node of a service as replication and failover see it:
// whether the service's primary role is assigned to it, whether its host
// is healthy (HostHealthy), and its agent's last replication report (nil:
// none yet). Retiring marks a node a roll-forward is about to wipe, from
// its release step on, and Joining a roll-forward's new node before the
// roll commits to it (Roll.Mark): neither is a synchronous standby.
type Member struct {
	Node        *Node
	Primary     bool
	HostHealthy bool
	Report      *ReplicationReport
	Retiring    bool
	Joining     bool
}

// ApplicationName is the application_name node n's PostgreSQL reports to
// its upstream (the agent sets it to the node's ID), the name
// synchronous_standby_names lists.
func ApplicationName(n *Node) string { return n.ID }

// Replication modes of a service (SyncSetting.Mode).
const (
	// ReplNone: a 1-node service.
	ReplNone = "none"
	// ReplQuorum: 3 nodes, a commit waits for ANY 1 replica.
	ReplQuorum = "quorum"
	// ReplSync: 2 nodes, a commit waits for the replica.
	ReplSync = "synchronous"
	// ReplAsync: commits do not wait for a replica (see Condition).
	ReplAsync = "asynchronous"
)

// Condition codes of replication (SyncSetting.Condition).
const (
	CodeReplicaLost        = "replica_lost"
	CodeReplicaCatchingUp  = "replica_catching_up"
	CodeNoReplicaConnected = "no_replica_connected"
)

// CatchUpLag is the largest lag (bytes of WAL, one segment) at which a
// replica counts as caught up: a 2-node service goes back to synchronous
// replication, a new node ends its catch-up.
const CatchUpLag = 16 << 20

// SyncSetting is a primary's synchronous replication setting.
type SyncSetting struct {
	// StandbyNames is the value of synchronous_standby_names.
	StandbyNames string `json:"standby_names,omitempty"`
	Mode         string `json:"mode"`
	// Condition explains a weaker mode than the service's node count
	// promises (shown on the service).
	Condition *Info `json:"condition,omitempty"`
}

// SyncStandbyNames is the setting of the primary of svc among members:
//
//   - 1 node: "" (none). Retiring and joining replicas are never
//     listed.
//   - 3 nodes: ANY 1 over its running replicas that are not being
//     deleted, a lost one included: a commit waits for one replica and
//     so survives the loss of any one host or AZ. A lost replica stays
//     listed until its replacement deletes it; with both replicas lost,
//     commits wait (the service never acknowledges a commit only one
//     node holds). With no running replica yet (a resize from 1 node),
//     asynchronous.
//   - 2 nodes: FIRST 1 (the replica) while the replica is healthy,
//     streaming from the primary and caught up; else "" (asynchronous),
//     with the condition "replication asynchronous: replica lost" (down,
//     failed or on a lost host) or "…catching up" (alive, behind or not
//     streaming yet): a commit acknowledged then lives on one node only.
func SyncStandbyNames(svc *Service, members []Member) SyncSetting {
	var primary *Member
	var replicas []Member
	for i, m := range members {
		switch {
		case Going(m.Node.State):
		case m.Primary:
			primary = &members[i]
		case !m.Retiring && !m.Joining:
			replicas = append(replicas, m)
		}
	}
	if svc.NodeCount <= 1 || primary == nil {
		return SyncSetting{Mode: ReplNone}
	}
	if svc.NodeCount >= 3 {
		var names []string
		for _, m := range replicas {
			if m.Node.State == StateRunning {
				names = append(names, ApplicationName(m.Node))
			}
		}
		if len(names) == 0 {
			return SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp,
				Message: "replication asynchronous: the replicas are still being created"}}
		}
		slices.Sort(names)
		return SyncSetting{StandbyNames: "ANY 1 (" + quoteNames(names) + ")", Mode: ReplQuorum}
	}
	for _, m := range replicas {
		if streamsFrom(m, primary.Node.ID) && CaughtUp(m, *primary, CatchUpLag) {
			return SyncSetting{StandbyNames: "FIRST 1 (" + quoteNames([]string{ApplicationName(m.Node)}) + ")", Mode: ReplSync}
		}
	}
	for _, m := range replicas {
		// Streaming and behind, or alive and not streaming yet (just
		// started, or re-pointed): catching up. Down, failed or on a
		// lost host: lost.
		alive := m.HostHealthy && m.Node.State != StateFailed && (m.Report == nil || m.Report.Up)
		if streamsFrom(m, primary.Node.ID) || alive {
			return SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp,
				Message: "replication asynchronous: the replica is catching up"}}
		}
	}
	return SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaLost,
		Message: "replication asynchronous: replica lost"}}
}

// quoteNames double-quotes each standby name (node IDs hold hyphens).
func quoteNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return strings.Join(q, ", ")
}

// streamsFrom reports whether m is a healthy replica whose last report
// says it streams from the node upstream.
func streamsFrom(m Member, upstream string) bool {
	r := m.Report
	return m.HostHealthy && r != nil && r.Up && r.InRecovery && r.Streaming && r.Upstream == upstream
}

// CaughtUp reports whether replica has received the primary's WAL up to
// maxLag bytes (both as last reported).
func CaughtUp(replica, primary Member, maxLag uint64) bool {
	if replica.Report == nil || primary.Report == nil {
		return false
	}
	return Lag(primary.Report.ReceivedLSN, replica.Report.ReceivedLSN) <= maxLag
}

// Lag is how far behind position at is from ahead, in bytes (0 if not
// behind).
func Lag(ahead, at LSN) uint64 {
	if at >= ahead {
		return 0
	}
	return uint64(ahead - at)
}

// ReplicaState is one replica's replication as the service shows it.
type ReplicaState struct {
	NodeID    string `json:"node_id"`
	Streaming bool   `json:"streaming"`
	// SyncState is the primary's view (async, sync, quorum, potential),
	// "" when the primary does not list it.
	SyncState string `json:"sync_state"`
	// LagBytes is the WAL the replica has not replayed yet.
	LagBytes uint64 `json:"lag_bytes"`
}

// ReplicaStates is each replica's lag and sync state, by node ID, from
// the primary's and the replicas' last reports.
func ReplicaStates(members []Member) []ReplicaState {
	var primary *ReplicationReport
	var primaryID string
	for _, m := range members {
		if m.Primary && !Going(m.Node.State) {
			primary, primaryID = m.Report, m.Node.ID
		}
	}
	var out []ReplicaState
	for _, m := range members {
		if m.Primary || Going(m.Node.State) {
			continue
		}
		s := ReplicaState{NodeID: m.Node.ID, Streaming: streamsFrom(m, primaryID)}
		if primary != nil {
			for _, sb := range primary.Standbys {
				if sb.Name == ApplicationName(m.Node) {
					s.SyncState = sb.SyncState
				}
			}
			if m.Report != nil {
				s.LagBytes = Lag(primary.ReceivedLSN, m.Report.ReplayedLSN)
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b ReplicaState) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// Turned reports whether a new replication report of a node (now)
// differs from the last one (before, nil if none) in what replication
// and failover decide on: up, recovery, upstream, streaming, fencing, or
// the standbys' sync states; during a switchover (now.Switching), its
// position too. The API then wakes the reconciler at once
// rather than at its next resync.
func Turned(before, now *ReplicationReport) bool {
	if before == nil || now == nil {
		return before != now
	}
	if before.Up != now.Up || before.InRecovery != now.InRecovery || before.Upstream != now.Upstream ||
		before.Streaming != now.Streaming || before.Fenced != now.Fenced || len(before.Standbys) != len(now.Standbys) {
		return true
	}
	if now.Switching && before.ReceivedLSN != now.ReceivedLSN {
		// A switchover waits for the new primary's position.
		return true
	}
	for i := range now.Standbys {
		if before.Standbys[i].Name != now.Standbys[i].Name || before.Standbys[i].SyncState != now.Standbys[i].SyncState {
			return true
		}
	}
	return false
}
