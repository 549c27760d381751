package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/nft"
)

// Replication, promotion and fencing of a node (docs/design/0014):
//
//   - observe reads the node's replication every supervise tick and
//     reports it: at once when something that failover decides on
//     changed (up, recovery, upstream, streaming, the standbys' sync
//     states, fenced), else at most every replReportEvery (its LSNs, and
//     the heartbeat the control plane counts on).
//   - A node whose desired role is fenced (a lost primary) has its
//     firewall closed and its PostgreSQL stopped, and is never restarted
//     as it was; it is wiped once deleted.
//   - A primary of a replicated service (LeaseMillis) whose agent has
//     not reached the control plane for its lease gets its firewall
//     closed until the control plane answers again: an isolated old
//     primary stops serving before the control plane promotes another.

// receiverRunning marks, between Replication and observe, a server whose
// WAL receiver runs (followed by the receiver's process ID); a receiver
// counts as streaming only when observe saw the same process streaming
// twice in a row (a supervise tick apart): one that cannot follow its
// upstream ("requested WAL segment … has already been removed") is
// restarted every 5 s and fails at once, and a sample that catches it
// between its start and its failure must not report it streaming.
const receiverRunning = "\x00receiver"

// replReportEvery is how often a node's replication is reported when
// only its positions changed.
const replReportEvery = domain.ReplicationReportInterval

// observe reads the node's replication and records it for the reporter.
func (n *node) observe(ctx context.Context, fenced bool) {
	if n.inst == nil && !fenced {
		return // not set up yet (a replica copying its primary): nothing to say
	}
	r := apitype.NodeReplication{Fenced: fenced, Upstream: n.upstream}
	if n.inst != nil && n.inst.Running() {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := n.inst.Replication(qctx)
		cancel()
		if err == nil {
			pid, running := strings.CutPrefix(got.Upstream, receiverRunning)
			got.Streaming = got.Streaming && running && pid == n.receiverPID
			n.receiverPID = pid
			got.Fenced, got.Upstream = fenced, n.upstream
			if got.Upstream == "" && running {
				// Detached in the configuration, but its WAL receiver has
				// not stopped yet: its position is not final, so it still
				// counts as following its last upstream.
				got.Upstream = n.lastUpstream
			}
			if !got.InRecovery {
				got.Upstream = ""
			}
			r = got
		} else if ctx.Err() == nil {
			n.a.log.Debug("read replication", "node", n.id, "err", err)
		}
	}
	r.Switching = n.switching
	if !r.Up && n.demoted {
		r.ReceivedLSN = n.finalLSN // its last WAL record: the switchover compares
	}
	if r.Up && r.InRecovery && r.Upstream != "" && !r.Streaming {
		if n.notStreamingSince.IsZero() {
			n.notStreamingSince = time.Now().UTC()
		}
		t := n.notStreamingSince
		r.NotStreamingSince = &t
	} else {
		n.notStreamingSince = time.Time{}
	}
	if r.Up {
		n.downSince = time.Time{}
	} else {
		if n.downSince.IsZero() {
			n.downSince = time.Now().UTC()
		}
		t := n.downSince
		r.DownSince = &t
	}
	n.setReplication(r)
}

// setReplication records r and wakes the reporter if failover would see
// the change, or the last report is replReportEvery old.
func (n *node) setReplication(r apitype.NodeReplication) {
	n.mu.Lock()
	old := n.repl
	n.repl = &r
	kick := old == nil || significant(*old, r) || time.Since(n.replSent) >= replReportEvery
	if kick {
		n.replSent = time.Now()
	}
	n.mu.Unlock()
	if kick {
		n.a.kickReport()
	}
}

// significant reports whether a and b differ in what failover decides on.
func significant(a, b apitype.NodeReplication) bool {
	if a.Up != b.Up || a.InRecovery != b.InRecovery || a.Upstream != b.Upstream || a.Streaming != b.Streaming || a.Fenced != b.Fenced ||
		len(a.Standbys) != len(b.Standbys) || (b.Switching && a.ReceivedLSN != b.ReceivedLSN) {
		return true
	}
	for i := range a.Standbys {
		if a.Standbys[i].Name != b.Standbys[i].Name || a.Standbys[i].SyncState != b.Standbys[i].SyncState {
			return true
		}
	}
	return false
}

// fencedMessage is a fenced node's report message.
const fencedMessage = "fenced: the node's firewall admits no one"

// fence keeps the node from acknowledging anything: its firewall admits
// no one (not even the other nodes), then, with stop (its desired role
// is fenced), its PostgreSQL stops; it is never restarted as it was (the
// control plane deletes it). A lease that ran out only closes the
// firewall, until the control plane answers again.
func (n *node) fence(ctx context.Context, want apitype.NodeDesired, rev int64, stop bool) error {
	if err := n.closeFirewall(want); err != nil {
		return err
	}
	if !stop {
		if !n.fenced {
			n.a.log.Warn("node fenced: no answer from the control plane within the lease; firewall closed", "node", n.id, "revision", rev)
		}
		return nil
	}
	if !n.lostCleared && n.volumeGone() {
		n.lostCleared = n.killOnLostVolume()
	}
	inst := n.inst
	if inst == nil {
		var err error
		if inst, err = n.bareInstance(); err != nil {
			return err
		}
		defer n.closeInstance(inst)
	}
	if inst.Running() {
		// The closed firewall cuts the walsenders from the standbys, so
		// a fast shutdown would wait for them: after a second it turns
		// immediate (the node is wiped, never restarted as it was).
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		err := inst.Stop(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("fence: %w", err)
		}
		n.a.log.Warn("node fenced: firewall closed, postgres stopped", "node", n.id, "revision", rev)
	}
	n.marks.reload = mark{}
	return nil
}

// closeFirewall makes the node's firewall admit no one and refuse
// connections to the port with a TCP reset, so that clients listing this
// node first in a multi-host connection string move to the next host at
// once instead of waiting out their connect timeout; the firewall step
// applies the node's policy again once its key changes.
func (n *node) closeFirewall(want apitype.NodeDesired) error {
	if err := n.openNetwork(want.Namespace); err != nil {
		return err
	}
	port := want.Port
	if port == 0 {
		port = 5432
	}
	_, err := n.marks.firewall.run("closed:"+n.net.ID(), func() error {
		return n.net.Firewall().Apply(nft.Policy{Port: uint16(port), Refuse: true})
	})
	if err != nil {
		return fmt.Errorf("close the firewall: %w", err)
	}
	return nil
}

// switchoverObserveEvery is how often a node's replication is read
// during a switchover of its service.
const switchoverObserveEvery = 50 * time.Millisecond

// demoteTimeout bounds a demoted primary's fast shutdown; past it the
// shutdown turns immediate (and the node reports no final position, so
// the switchover re-opens it).
const demoteTimeout = 5 * time.Second

// demotePoll is how often a demoting node's control file is read.
const demotePoll = 10 * time.Millisecond

// demote stops a switchover's old primary with a fast shutdown: its
// sessions end, it writes a shutdown checkpoint and its walsenders send
// every byte of WAL to the connected standbys before they exit. Its
// firewall stays as it is. As soon as the control file says "shut down"
// (the shutdown checkpoint is written: nothing is written after it) the
// node is demoted, with the checkpoint's location as its final position,
// which observe reports — before the postmaster exits: with archiving on,
// a shutdown also archives the WAL segment it switched away from, which
// takes a wal-push. The server is not started again while the role
// holds; one that does not stop within demoteTimeout is stopped
// immediately (and reports no position).
func (n *node) demote(ctx context.Context, want apitype.NodeDesired, rev int64) error {
	if n.demoted {
		return nil
	}
	inst := n.inst
	if inst == nil {
		var err error
		if inst, err = n.bareInstance(); err != nil {
			return err
		}
		defer n.closeInstance(inst)
	}
	t0 := time.Now()
	if err := inst.BeginStop(); err != nil {
		return fmt.Errorf("demote: %w", err)
	}
	var lsn string
	for {
		l, clean, err := inst.ShutdownCheckpoint(ctx)
		if err == nil && clean {
			lsn = l
			break
		}
		if time.Since(t0) > demoteTimeout {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			err := inst.Stop(sctx) // immediate: no final position
			cancel()
			if err != nil {
				return fmt.Errorf("demote: %w", err)
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(demotePoll):
		}
	}
	n.demoted, n.finalLSN = true, lsn
	n.marks.reload = mark{}
	n.a.log.Info("node demoted for a switchover: shutdown checkpoint written", "node", n.id, "revision", rev, "shutdown_checkpoint", lsn, "duration", time.Since(t0))
	n.setReport(rev, want.AllowlistRevision, apitype.NodeReportRunning, "")
	return nil
}

// leaseOf is want's lease: a primary's, zero when it has none.
func leaseOf(want apitype.NodeDesired) time.Duration {
	if want.Role != apitype.RolePrimary {
		return 0
	}
	if want.LeaseMillis > 0 {
		return time.Duration(want.LeaseMillis) * time.Millisecond
	}
	return time.Duration(want.LeaseSeconds) * time.Second
}

// leaseEnd is when want's lease runs out unless renewed (zero: no lease).
func (n *node) leaseEnd(want apitype.NodeDesired) time.Time {
	l := leaseOf(want)
	if l <= 0 {
		return time.Time{}
	}
	return n.a.lastContact().Add(l)
}

// leaseExpired reports whether want is a primary under a lease the
// agent has not renewed (no report acknowledged by the control plane)
// in time.
func (n *node) leaseExpired(want apitype.NodeDesired) bool {
	end := n.leaseEnd(want)
	return !end.IsZero() && !time.Now().Before(end)
}

// applyPromote promotes a primary whose server is still in recovery (a
// failover's chosen replica), waiting until it accepts writes.
func (n *node) applyPromote(ctx context.Context, s *spec) error {
	if !s.primary || s.restore != nil {
		return nil
	}
	_, err := n.marks.promote.run(n.marks.instance.key, func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		rec, err := n.inst.InRecovery(pctx)
		if err != nil || !rec {
			return err
		}
		if err := n.inst.Promote(pctx); err != nil {
			return err
		}
		n.a.log.Info("node promoted", "node", n.id, "revision", s.rev)
		// Say so at once (the switchover or failover waits on it), not
		// after the rest of the apply.
		n.upstream = ""
		n.observe(ctx, false)
		return nil
	})
	return err
}

// replicationQuery reads a server's replication facts.
const replicationQuery = `SELECT pg_is_in_recovery(),
	CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text ELSE pg_current_wal_flush_lsn()::text END,
	coalesce(pg_last_wal_replay_lsn()::text, ''),
	(SELECT timeline_id FROM pg_control_checkpoint()),
	coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver LIMIT 1), false),
	coalesce((SELECT pid FROM pg_stat_wal_receiver LIMIT 1), 0)`

// Replication reads the server's replication: recovery, positions, its
// WAL receiver, and on a primary pg_stat_replication.
func (p pgInstance) Replication(ctx context.Context) (apitype.NodeReplication, error) {
	conn, err := p.connect(ctx)
	if err != nil {
		return apitype.NodeReplication{}, err
	}
	defer closeConn(conn)
	r := apitype.NodeReplication{Up: true}
	var receiver int
	if err := conn.QueryRow(ctx, replicationQuery).Scan(&r.InRecovery, &r.ReceivedLSN, &r.ReplayedLSN, &r.Timeline, &r.Streaming, &receiver); err != nil {
		return r, fmt.Errorf("read replication: %w", err)
	}
	if receiver != 0 {
		// Its upstream is the configured one (observe); a receiver still
		// running after the upstream was removed is reported by observe,
		// and so is one that keeps restarting (its process ID).
		r.Upstream = receiverRunning + strconv.Itoa(receiver)
	}
	if r.InRecovery {
		return r, nil
	}
	rows, err := conn.Query(ctx, `SELECT application_name, sync_state, coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, '')
		FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return r, fmt.Errorf("read pg_stat_replication: %w", err)
	}
	r.Standbys, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (apitype.StandbyStatus, error) {
		var s apitype.StandbyStatus
		return s, row.Scan(&s.Name, &s.SyncState, &s.FlushLSN, &s.ReplayLSN)
	})
	if err != nil {
		return r, fmt.Errorf("read pg_stat_replication: %w", err)
	}
	return r, nil
}

// promotePoll is how often a promoting server is asked whether it left
// recovery. pg_promote(wait => true) looks only every 100 ms, a tenth of
// the one second a switchover may pause writes.
const promotePoll = 5 * time.Millisecond

// Promote promotes the server: pg_promote without waiting, then
// pg_is_in_recovery every promotePoll until it accepts writes (or ctx
// ends).
func (p pgInstance) Promote(ctx context.Context) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&ok); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if !ok {
		return fmt.Errorf("promote: the server refused to signal its promotion")
	}
	for {
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
		if !rec {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote: still in recovery: %w", ctx.Err())
		case <-time.After(promotePoll):
		}
	}
}
