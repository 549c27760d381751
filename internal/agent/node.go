package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/nft"
	"github.com/moatdb/moat/internal/postgres"
)

// Node states in the desired state.
const (
	stateCreating = "creating"
	stateRunning  = "running"
	stateFailed   = "failed" // reported failed: applied and supervised like running
	stateDeleting = "deleting"
)

// node is one node on this host. Its worker goroutine does all the work;
// the fields under mu are shared with the dispatcher and the reporter.
type node struct {
	a    *Agent
	id   string
	dir  string
	kick chan struct{}

	mu   sync.Mutex
	want apitype.NodeDesired
	rev  int64
	gone bool // named deleted in the desired state: wipe and forget
	// held: absent from the desired state without being named deleted;
	// kept as last applied (supervised, never wiped), not reported.
	held bool
	rep  apitype.NodeReport
	// hasRep: rep is to be sent (the node is in the desired state and
	// something was applied or failed).
	hasRep bool
	// enforcedAllow is the allowlist revision of the last running report.
	enforcedAllow int64

	// The worker's own state.
	appliedRev int64 // revision of the last successful apply; -1 none
	failedAt   time.Time
	failures   int
	nextTry    time.Time
	retry      <-chan time.Time // a waiting node's next try
	net        network          // the node's namespace, once opened
	inst       instance         // the node's PostgreSQL, once configured
	marks      marks            // what each step of apply last applied
	wiped      bool
	wipeErr    string // the last wipe's error, logged

	// tasks are the tasks of the desired state started, with their
	// reports once finished (nil while running); running has the cancel
	// functions of those still running, which taskWG counts; under mu.
	// taskMu runs base backups one at a time.
	tasks   map[string]*apitype.TaskReport
	running map[string]context.CancelFunc
	taskWG  sync.WaitGroup
	taskMu  sync.Mutex

	// archive is the primary's WAL archiving as last read (under mu);
	// archiveAt when the worker read it.
	archive   *apitype.ArchiveStatus
	archiveAt time.Time
	// sock is the node's archive socket (see backup.go).
	sock archiveSocket
	// volume is the node's volume as last read (under mu); volumeFull
	// whether the worker reported it full.
	volume     *apitype.NodeVolume
	volumeFull bool
	// lostCleared: the worker killed what ran on the node's lost volume
	// (a fence does it once; see killOnLostVolume).
	lostCleared bool
	// stats are the node's latest PostgreSQL statistics, for the
	// tenants (under mu); statsErr the last scrape's error, logged when
	// it changes (the scraper's own).
	stats    *pgstat.Snapshot
	statsErr string

	// repl is the node's replication as last observed (under mu),
	// replSent when it was last handed to the reporter. The worker's:
	// downSince, when PostgreSQL was first seen down; upstream, the
	// node the applied configuration follows; fenced, whether the node
	// is fenced (its desired role, or its lease ran out).
	repl      *apitype.NodeReplication
	replSent  time.Time
	downSince time.Time
	upstream  string
	// lastUpstream is the last non-empty upstream applied.
	lastUpstream string
	// receiverPID is the WAL receiver observe saw last ("" for none);
	// notStreamingSince when observe first found the node following an
	// upstream without streaming (zero while it streams).
	receiverPID       string
	notStreamingSince time.Time
	fenced            bool
	// demoted: the node is a switchover's demoted old primary, its
	// server stopped; finalLSN the location of its shutdown checkpoint
	// ("" if the shutdown was not clean).
	demoted  bool
	finalLSN string
	// switching: the desired state says the node's service switches over
	// (its positions are reported as they move).
	switching bool
}

func newNode(a *Agent, id string) *node {
	return &node{
		a: a, id: id, dir: filepath.Join(a.nodesDir, id),
		kick: make(chan struct{}, 1), appliedRev: -1,
	}
}

// set gives the node its desired state at revision rev (gone: the node is
// not in it) and wakes its worker.
func (n *node) set(nd apitype.NodeDesired, rev int64, gone bool) {
	n.mu.Lock()
	n.want, n.rev, n.gone, n.held = nd, rev, gone, false
	if gone {
		n.hasRep = false
	}
	n.mu.Unlock()
	n.wake()
}

// hold keeps the node as it is: it left the desired state without being
// named deleted (its worker forgets it if it was wiped already).
func (n *node) hold() {
	n.mu.Lock()
	n.held, n.hasRep = true, false
	n.mu.Unlock()
	n.wake()
}

func (n *node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *node) currentReport() (apitype.NodeReport, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rep := n.rep
	rep.Tasks = n.taskReportsLocked()
	rep.Archive = n.archive
	rep.Volume = n.volume
	rep.Replication = n.repl
	return rep, n.hasRep && !n.gone && !n.held
}

// setReport records the node's report and wakes the reporter if it
// changed. Applied means enforced: a running report says the node
// enforces allowRev; a failed one claims only the allowlist revision of
// the last running report, whatever allowRev the failed apply was for.
func (n *node) setReport(rev int64, allowRev int64, state, msg string) {
	n.mu.Lock()
	old, had := n.rep, n.hasRep
	if n.gone {
		n.mu.Unlock()
		return
	}
	switch state {
	case apitype.NodeReportRunning:
		n.enforcedAllow = allowRev
	case apitype.NodeReportFailed:
		allowRev = n.enforcedAllow
	}
	n.rep = apitype.NodeReport{NodeID: n.id, Revision: rev, AllowlistRevision: allowRev, State: state, Message: msg, AppliedAt: time.Now().UTC()}
	n.hasRep = true
	changed := !had || old.Revision != rev || old.AllowlistRevision != allowRev || old.State != state || old.Message != msg
	n.mu.Unlock()
	if changed {
		n.a.obs.rec.NodeState(n.id, state)
		n.a.kickReport()
	}
}

// run is the node's worker: it applies each new desired state, retries
// failures with backoff, and restarts PostgreSQL when it dies. It returns
// when ctx ends or the node is forgotten, once the node's tasks returned.
func (n *node) run(ctx context.Context) {
	defer n.closeNetwork()
	defer n.closeArchive()
	defer func() {
		n.closeInstance(n.inst)
		n.inst = nil
	}()
	defer n.stopTasks()
	tick := time.NewTicker(superviseEvery)
	defer tick.Stop()
	lease := time.NewTimer(time.Hour)
	defer lease.Stop()
	var fast <-chan time.Time
	for {
		kicked, fastTick := false, false
		// A primary under a lease is fenced the moment it runs out, not
		// at the next tick: the control plane counts only the lease's
		// margin for this agent's delay.
		n.mu.Lock()
		end := n.leaseEnd(n.want)
		n.mu.Unlock()
		var leaseC <-chan time.Time
		if !end.IsZero() && !n.fenced {
			lease.Reset(time.Until(end))
			leaseC = lease.C
		}
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
			kicked = true
		case <-n.retry:
			n.retry, kicked = nil, true
		case <-tick.C:
		case <-leaseC:
			n.mu.Lock()
			renewed := !n.leaseExpired(n.want)
			n.mu.Unlock()
			if renewed {
				continue
			}
		case <-fast:
			fastTick = true
		}
		n.mu.Lock()
		want, rev, gone, held := n.want, n.rev, n.gone, n.held
		n.mu.Unlock()
		fast, n.switching = nil, want.Switchover
		if want.Switchover && !gone && !held {
			// A switchover: each hop is seen within switchoverObserveEvery.
			fast = time.After(switchoverObserveEvery)
		}
		if fastTick {
			if !n.fenced && !n.demoted && want.Role != apitype.RoleDemoted && rev == n.appliedRev {
				n.observe(ctx, false)
			}
			continue
		}

		if held {
			// Out of the desired state, not named deleted: nothing is
			// applied (not even again in a recreated namespace); a
			// server that died in its namespace is restarted
			// (fail-static). One already wiped has nothing to keep.
			if n.wiped && n.a.forget(n) {
				return
			}
			if !n.wiped && !n.nsChanged() {
				n.restartIfDead(ctx, want, rev)
			}
			continue
		}

		if gone || want.State == stateDeleting {
			if !n.wiped {
				if err := n.wipe(ctx); err != nil {
					// Retried every superviseEvery; logged when it changes.
					if msg := err.Error(); msg != n.wipeErr {
						n.a.log.Error("wipe node", "node", n.id, "err", err)
						n.wipeErr = msg
					}
					continue
				}
				n.wipeErr = ""
			}
			if gone {
				if n.a.forget(n) {
					return
				}
				continue
			}
			n.setReport(rev, want.AllowlistRevision, apitype.NodeReportWiped, "")
			continue
		}
		n.wiped = false

		if want.Role == apitype.RoleDemoted {
			if err := n.demote(ctx, want, rev); err != nil {
				n.a.log.Error("demote node", "node", n.id, "err", err)
			}
			n.observe(ctx, true)
			continue
		}
		if n.demoted {
			// The switchover re-opened it (primary again): once its
			// shutdown is over, apply it again (start it).
			if n.inst != nil {
				sctx, cancel := context.WithTimeout(ctx, demoteTimeout)
				err := n.inst.Stop(sctx)
				cancel()
				if err != nil {
					n.a.log.Error("re-open demoted node", "node", n.id, "err", err)
					continue
				}
			}
			n.demoted, n.finalLSN, n.appliedRev = false, "", -1
		}
		if want.Role == apitype.RoleFenced || n.leaseExpired(want) {
			if err := n.fence(ctx, want, rev, want.Role == apitype.RoleFenced); err != nil {
				n.a.log.Error("fence node", "node", n.id, "err", err)
			} else if !n.fenced {
				n.fenced = true
				n.setReport(rev, want.AllowlistRevision, apitype.NodeReportFailed, fencedMessage)
			}
			n.observe(ctx, true)
			continue
		}
		if n.fenced {
			// The lease is renewed: apply the node again (its firewall).
			n.fenced, n.appliedRev = false, -1
		}

		if rev != n.appliedRev {
			if !kicked && time.Now().Before(n.nextTry) {
				continue
			}
			n.applyAndReport(ctx, want, rev)
		} else {
			n.supervise(ctx, want, rev)
		}
		if n.appliedRev == rev {
			n.startTasks(ctx, want)
			n.checkArchive(ctx, want)
		}
		n.observe(ctx, false)
	}
}

func (n *node) applyAndReport(ctx context.Context, want apitype.NodeDesired, rev int64) {
	t0 := time.Now()
	err := n.apply(ctx, want, rev)
	if ctx.Err() != nil {
		return
	}
	n.observeApply(time.Since(t0), err)
	if errors.Is(err, errWaiting) {
		// Not a failure: the node waits for the control plane.
		n.a.log.Debug("node waits", "node", n.id, "revision", rev, "reason", err)
		n.nextTry, n.retry = time.Now().Add(waitRetry), time.After(waitRetry)
		return
	}
	if errors.Is(err, errVolumeLost) {
		// Not retried into success: say so at once.
		n.a.log.Error("apply node", "node", n.id, "revision", rev, "err", err)
		n.nextTry = time.Now().Add(retryMax)
		n.setReport(rev, want.AllowlistRevision, apitype.NodeReportFailed, err.Error())
		return
	}
	if err != nil {
		if n.failures == 0 {
			n.failedAt = t0
		}
		n.failures++
		n.nextTry = time.Now().Add(min(superviseEvery<<min(n.failures-1, 4), retryMax))
		creating := want.State == stateCreating && time.Since(n.failedAt) < creatingGrace
		n.a.log.Warn("apply node", "node", n.id, "revision", rev, "attempt", n.failures, "err", err)
		if !creating {
			n.setReport(rev, want.AllowlistRevision, apitype.NodeReportFailed, err.Error())
		}
		return
	}
	n.failures = 0
	n.appliedRev = rev
	n.upstream = ""
	if want.Role == apitype.RoleReplica {
		n.upstream = want.Upstream
	}
	if n.upstream != "" {
		n.lastUpstream = n.upstream
	}
	n.a.log.Debug("node applied", "node", n.id, "revision", rev, "allowlist_revision", want.AllowlistRevision, "duration", time.Since(t0))
	n.volumeFull = false
	n.observeCerts(want)
	n.reportVolume(rev, want, n.checkVolume())
}

// reportVolume reports the node failed with "volume full" while its
// volume is full, running otherwise.
func (n *node) reportVolume(rev int64, want apitype.NodeDesired, full bool) {
	if full && !n.volumeFull {
		n.a.log.Error("volume full", "node", n.id)
	}
	n.volumeFull = full
	if full {
		n.setReport(rev, want.AllowlistRevision, apitype.NodeReportFailed, volumeFullMessage)
		return
	}
	n.setReport(rev, want.AllowlistRevision, apitype.NodeReportRunning, "")
}

// volumeFullMessage is a full volume's node report message.
const volumeFullMessage = "volume full"

// supervise restarts PostgreSQL if it is not running, and applies the
// node again if its namespace was recreated.
func (n *node) supervise(ctx context.Context, want apitype.NodeDesired, rev int64) {
	if n.nsChanged() {
		n.appliedRev = -1 // until applied again; failures back off
		n.applyAndReport(ctx, want, rev)
		return
	}
	if n.a.hasVolume() {
		if err := n.volumeLost(); err != nil {
			n.appliedRev = -1 // the next apply reports it, and retries late
			n.applyAndReport(ctx, want, rev)
			return
		}
		if full := n.checkVolume(); full != n.volumeFull {
			n.reportVolume(rev, want, full)
		}
	}
	n.restartIfDead(ctx, want, rev)
}

// restartIfDead starts the node's PostgreSQL again if it is not running.
func (n *node) restartIfDead(ctx context.Context, want apitype.NodeDesired, rev int64) {
	if n.inst == nil || n.inst.Running() {
		return
	}
	n.a.log.Warn("postgres not running; restarting it", "node", n.id)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := n.inst.Start(sctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		n.a.log.Error("restart postgres", "node", n.id, "err", err)
		n.setReport(rev, want.AllowlistRevision, apitype.NodeReportFailed, "postgres exited and does not restart: "+err.Error())
		return
	}
	n.a.log.Info("postgres restarted", "node", n.id)
	n.setReport(rev, want.AllowlistRevision, apitype.NodeReportRunning, "")
}

// access is a node's parsed access policy.
type access struct {
	v4, v6, peers []netip.Prefix
	// replicas are the peers by name, for pg_hba's replication lines.
	replicas []postgres.Replica
}

func parseAccess(nd apitype.NodeDesired) (access, error) {
	var acc access
	parse := func(field string, ss []string, dst *[]netip.Prefix, v4, v6 bool) error {
		for _, s := range ss {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return fmt.Errorf("%s: %q is neither a prefix nor an address", field, s)
				}
				if a.Zone() != "" {
					return fmt.Errorf("%s: %q has a zone", field, s)
				}
				p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
			if !p.IsValid() || p.Addr().Zone() != "" {
				return fmt.Errorf("%s: %q has a zone", field, s)
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			p = p.Masked()
			if (p.Addr().Is4() && !v4) || (!p.Addr().Is4() && !v6) {
				return fmt.Errorf("%s: %q is of the wrong family", field, s)
			}
			*dst = append(*dst, p)
		}
		return nil
	}
	if err := parse("allow_v4", nd.AllowV4, &acc.v4, true, false); err != nil {
		return acc, err
	}
	if err := parse("allow_v6", nd.AllowV6, &acc.v6, false, true); err != nil {
		return acc, err
	}
	if err := parse("peers", nd.Peers, &acc.peers, true, true); err != nil {
		return acc, err
	}
	for i, p := range nd.PeerNodes {
		var addr []netip.Prefix
		if err := parse(fmt.Sprintf("peer_nodes[%d].address", i), []string{p.Address}, &addr, true, true); err != nil {
			return acc, err
		}
		acc.replicas = append(acc.replicas, postgres.Replica{Name: p.NodeID, Addr: addr[0]})
	}
	return acc, nil
}

// fingerprint hashes v's JSON encoding.
func fingerprint(v ...any) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, x := range v {
		if err := enc.Encode(x); err != nil {
			panic(err) // only plain values are hashed
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// mark is one step's change detection: the key (a fingerprint) of the
// input the step last applied, "" for none.
type mark struct{ key string }

// run runs do unless key is what the step last applied, and reports
// whether it ran. A failure leaves the mark empty: what do left is
// unknown, so the step is redone whatever the next input.
func (m *mark) run(key string, do func() error) (bool, error) {
	if key == m.key {
		return false, nil
	}
	m.key = ""
	if err := do(); err != nil {
		return true, err
	}
	m.key = key
	return true, nil
}

// marks are the apply's steps' marks. A step's key includes the keys of
// the steps it follows from (pg_hba is rewritten for a new instance, the
// server reloads a new pg_hba, sessions are cut for it), so redoing a
// step redoes what depends on it; a wipe forgets them all.
type marks struct {
	firewall  mark // the namespace and the firewall policy
	volume    mark // the volume served (its container file)
	instance  mark // configuration files and cluster (Init)
	hba       mark // pg_hba.conf
	reload    mark // the configuration the running server has loaded
	promote   mark // the instance whose recovery was ended (a new primary)
	sessions  mark // the pg_hba whose revoked sessions were cut
	bootstrap mark // roles and database
	password  mark // the admin password
	// restart is the part of the instance's configuration that only a
	// restart changes (namespace, port, role, upstream, archiving), of
	// the instance last initialised.
	restart string
}

// spec is what apply works from: the desired state, checked and parsed,
// and what the steps found on the way.
type spec struct {
	want    apitype.NodeDesired
	rev     int64
	addr    netip.Addr
	port    int
	acc     access
	primary bool
	// restore is the restore under way, set by the instance step.
	restore *apitype.NodeRestore
	// hba is the pg_hba policy, set by the hba step.
	hba postgres.Policy
}

func parseSpec(want apitype.NodeDesired, rev int64) (*spec, error) {
	if want.State != stateCreating && want.State != stateRunning && want.State != stateFailed {
		return nil, fmt.Errorf("node state %q is neither creating, running, failed nor deleting", want.State)
	}
	if want.Namespace == "" {
		return nil, errors.New("no network namespace")
	}
	addr, err := netip.ParseAddr(want.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	port := want.Port
	if port == 0 {
		port = 5432
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("port %d out of range", port)
	}
	acc, err := parseAccess(want)
	if err != nil {
		return nil, err
	}
	primary := want.Role == apitype.RolePrimary || want.Role == ""
	return &spec{want: want, rev: rev, addr: addr, port: port, acc: acc, primary: primary}, nil
}

// apply makes the node match want, one step after the other (the model
// is cloudnative-pg's instance reconciler); a failed step ends the apply,
// and the next one redoes it and what follows. Each step is redone only
// when its input changed (see marks). The order is the invariants, unit
// tested in steps_test.go:
//
//   - The firewall comes first: it is the fast, decisive step of an
//     allowlist change, and nothing of PostgreSQL happens before it is in
//     force. A new node's server first starts behind it; a firewall that
//     fails stops the apply before any file is written or the server is
//     started or reloaded with the new access.
//   - The node's volume is made (or adopted) after the firewall and
//     before any file of PostgreSQL is written or its server started: the
//     data never lands outside it.
//   - A restart (namespace, port, role or upstream changed) stops the old
//     server after the firewall enforces the new policy and before the
//     new configuration is written.
//   - pg_hba is written, then the server reloads it (or starts with it),
//     and only then are the sessions it no longer admits cut: after the
//     firewall change and the new pg_hba are both in force.
//   - A restore's server is promoted (and checkpointed on its new
//     timeline) before roles or passwords are set.
//   - Roles and the database are created (on a primary) once the server
//     runs; the password is set after them.
func (n *node) apply(ctx context.Context, want apitype.NodeDesired, rev int64) error {
	s, err := parseSpec(want, rev)
	if err != nil {
		return err
	}
	for _, step := range []func(context.Context, *spec) error{
		n.applyFirewall,
		n.applyVolume,
		n.applyInstance,
		n.applyHBA,
		n.applyRunning,
		n.applyPromote,
		n.applySessions,
		n.applyRestored,
		n.applyRoles,
	} {
		if err := step(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// applyFirewall opens the node's namespace (again, if it was recreated:
// its firewall is then written again) and makes the firewall enforce the
// node's access policy.
func (n *node) applyFirewall(_ context.Context, s *spec) error {
	if err := n.openNetwork(s.want.Namespace); err != nil {
		return err
	}
	pol := nft.Policy{Port: uint16(s.port), AllowV4: s.acc.v4, AllowV6: s.acc.v6, Peers: s.acc.peers}
	t0 := time.Now()
	ran, err := n.marks.firewall.run(fingerprint(n.net.ID(), pol), func() error {
		return n.net.Firewall().Apply(pol)
	})
	if ran {
		n.a.obs.rec.ObserveFirewallApply(n.id, time.Since(t0), len(s.acc.v4)+len(s.acc.v6)+len(s.acc.peers), err)
	}
	if err != nil || !ran {
		return err
	}
	took := time.Since(t0)
	n.a.log.Info("firewall applied", "node", n.id, "revision", s.rev, "allowlist_revision", s.want.AllowlistRevision,
		"v4", len(s.acc.v4), "v6", len(s.acc.v6), "peers", len(s.acc.peers), "duration", took)
	if f := n.a.onFirewall; f != nil {
		f(n.id, s.rev, took)
	}
	return nil
}

// applyInstance writes the instance's files (TLS, moat.conf, the backup
// configuration) and creates the cluster if there is none, stopping the
// old server first when the change needs a restart.
func (n *node) applyInstance(ctx context.Context, s *spec) error {
	want := s.want
	if !s.primary && want.Role != apitype.RoleReplica {
		return fmt.Errorf("role %q is neither primary nor replica", want.Role)
	}
	if !s.primary && want.PrimaryAddress == "" && !n.hasCluster() {
		// A new replica with no upstream yet (a failover under way):
		// never an initdb in its place.
		return fmt.Errorf("%w: a new replica with no primary to copy", errWaiting)
	}
	s.restore = n.restoring(want, s.primary)
	if s.restore == nil {
		// Restored (or never a restore): no key of another service stays.
		if err := os.RemoveAll(filepath.Join(n.dir, restoreDirName)); err != nil {
			return fmt.Errorf("remove the restore key: %w", err)
		}
	} else if s.restore.PrivateKeyPEM == "" {
		return n.abandonRestore(ctx)
	}
	// The namespace's identity, not only its name: a namespace recreated
	// under the same name needs PostgreSQL restarted inside it.
	nsID := n.net.ID()
	key := fingerprint(want.Namespace, nsID, s.addr, s.port, want.Role, want.PrimaryAddress, want.PrimaryName, want.ReplicationUser, want.TLS,
		want.Archive, want.BackupPublicKeyPEM, s.restore, want.Upstream, want.SyncStandbyNames, want.Settings)
	// The role and the upstream are not in it: primary_conninfo and
	// synchronous_standby_names are reloaded, and a replica becoming
	// primary is promoted in place (applyPromote). Nor are the tenant's
	// settings: a running node reloads them and never restarts for one
	// (those that need a restart reach a node only when it is created:
	// domain.NodeSettings).
	restart := fingerprint(want.Namespace, nsID, s.port, want.ReplicationUser, want.Archive != nil)
	_, err := n.marks.instance.run(key, func() error {
		o, err := n.a.plat.users.Ensure(n.osUser())
		if err != nil {
			return err
		}
		if err := n.ensureDirs(o); err != nil {
			return err
		}
		cfg, err := n.pgConfig(want, s.addr, s.port, s.primary)
		if err != nil {
			return err
		}
		set, pr, err := n.backupSettings(want, s.restore)
		if err != nil {
			return err
		}
		for k, v := range set {
			if cfg.Settings == nil {
				cfg.Settings = map[string]string{}
			}
			cfg.Settings[k] = v
		}
		cfg.Restore = pr
		inst, err := n.a.plat.newInstance(cfg)
		if err != nil {
			return err
		}
		if n.inst != nil && n.marks.restart != restart && n.inst.Running() {
			// Listening address, namespace or upstream changed: restart
			// (the firewall already enforces the new policy).
			if err := n.inst.Stop(ctx); err != nil {
				return err
			}
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err = inst.Init(ictx)
		cancel()
		if err != nil {
			n.closeInstance(inst)
			return err
		}
		n.closeInstance(n.inst)
		n.inst, n.marks.restart = inst, restart
		return nil
	})
	return err
}

// applyHBA writes pg_hba.conf.
func (n *node) applyHBA(_ context.Context, s *spec) error {
	repl := s.want.ReplicationUser
	if repl == "" {
		repl = postgres.ReplicationUser
	}
	s.hba = postgres.Policy{Allow: slices.Concat(s.acc.v4, s.acc.v6), Replicas: s.acc.replicas, ReplicationUser: repl}
	_, err := n.marks.hba.run(fingerprint(n.marks.instance.key, s.hba), func() error {
		return n.inst.WriteHBA(s.hba)
	})
	return err
}

// applyRunning starts the server, or has the running one load the
// configuration and pg_hba the steps before wrote.
func (n *node) applyRunning(ctx context.Context, s *spec) error {
	if s.restore != nil {
		if err := n.resumeRecovery(); err != nil {
			return err
		}
	}
	key := fingerprint(n.marks.instance.key, n.marks.hba.key)
	if !n.inst.Running() {
		n.marks.reload = mark{}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := n.inst.Start(sctx)
		cancel()
		if err != nil {
			return err
		}
		n.marks.reload.key = key // it read them as it started
		return nil
	}
	_, err := n.marks.reload.run(key, func() error {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return n.inst.Reload(rctx)
	})
	return err
}

// applySessions cuts the client sessions the node's whole access no
// longer admits, whatever removed it: a source outside the allowed ones
// (an allowlist change, a peering deleted or a customer CIDR removed,
// which narrow them), or a session to an address the node no longer has
// (a detach or a move, which take its old address away while the new
// allowlist may still cover the old source).
func (n *node) applySessions(ctx context.Context, s *spec) error {
	acc := postgres.Access{Allowed: s.hba.Allow, Local: []netip.Addr{s.addr}}
	_, err := n.marks.sessions.run(fingerprint(n.marks.hba.key, acc), func() error {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		k, err := n.inst.TerminateSessions(tctx, acc)
		if k > 0 {
			n.a.log.Info("revoked sessions terminated", "node", n.id, "revision", s.rev, "sessions", k)
		}
		return err
	})
	return err
}

// applyRestored waits for a restored server's promotion. Once it has
// promoted, the next apply rewrites moat.conf without the recovery
// settings (the instance step's key includes the restore).
func (n *node) applyRestored(ctx context.Context, s *spec) error {
	if s.restore == nil {
		return nil
	}
	return n.promoted(ctx)
}

// applyRoles creates the roles and the database and sets the admin
// password, on a primary (a restored one once it promoted itself).
func (n *node) applyRoles(ctx context.Context, s *spec) error {
	want := s.want
	if !s.primary {
		return nil
	}
	if want.AdminUser != "" && want.AdminUser != postgres.AdminUser {
		return fmt.Errorf("admin user %q: this agent creates %q", want.AdminUser, postgres.AdminUser)
	}
	if want.Database != "" && want.Database != postgres.Database {
		return fmt.Errorf("database %q: this agent creates %q", want.Database, postgres.Database)
	}
	_, err := n.marks.bootstrap.run(fingerprint(n.marks.instance.key, s.hba.ReplicationUser), func() error {
		bctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return n.inst.Bootstrap(bctx, s.hba.ReplicationUser)
	})
	if err != nil || want.AdminVerifier == "" {
		return err
	}
	_, err = n.marks.password.run(fingerprint(want.AdminVerifier), func() error {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return n.inst.SetVerifier(pctx, postgres.AdminUser, want.AdminVerifier)
	})
	return err
}

// Paths under the node's directory.
func (n *node) dataDir() string {
	if n.a.hasVolume() {
		return filepath.Join(n.volumeMount(), "pgdata")
	}
	return filepath.Join(n.dir, "pgdata")
}
func (n *node) tlsDir() string    { return filepath.Join(n.dir, "tls") }
func (n *node) socketDir() string { return filepath.Join(n.dir, "run") }
func (n *node) logFile() string   { return filepath.Join(n.dir, "postgres.log") }

// hasCluster reports whether the node's data directory holds a cluster.
func (n *node) hasCluster() bool {
	_, err := os.Stat(filepath.Join(n.dataDir(), "PG_VERSION"))
	return err == nil
}

// ensureDirs makes the node's directory: root's, mode 0710 and group the
// node user's o, so that only that user enters it; 0711 when the agent is
// not root (o unchanged). The root of the node's volume, once mounted
// (mkfs makes it 0755), gets the same.
func (n *node) ensureDirs(o owner) error {
	if err := mkdir0711(n.a.nodesDir); err != nil {
		return err
	}
	dirs := []string{n.dir}
	if n.a.hasVolume() {
		if _, err := os.Stat(n.volumeMount()); err == nil {
			dirs = append(dirs, n.volumeMount())
		}
	}
	for _, d := range dirs {
		if o == unchanged {
			if err := mkdir0711(d); err != nil {
				return err
			}
			continue
		}
		if err := os.Mkdir(d, 0o710); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := os.Chown(d, -1, o.gid); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o710); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) pgConfig(want apitype.NodeDesired, addr netip.Addr, port int, primary bool) (postgres.Config, error) {
	t := want.TLS
	if t.CertPEM == "" || t.KeyPEM == "" {
		return postgres.Config{}, errors.New("tls: no server certificate or key")
	}
	cfg := postgres.Config{
		Name:      n.id,
		BinDir:    n.a.cfg.PGBinDir,
		DataDir:   n.dataDir(),
		TLSDir:    n.tlsDir(),
		SocketDir: n.socketDir(),
		LogFile:   n.logFile(),
		// Every address of the node's own namespace: it holds only the
		// node's interfaces, and an attach or detach then changes the
		// node's address without restarting PostgreSQL.
		ListenAddresses: []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()},
		Port:            port,
		ServerCertPEM:   []byte(t.CertPEM),
		ServerKeyPEM:    []byte(t.KeyPEM),
		CAPEM:           []byte(t.InternalCAPEM),
		Exec:            []string{"ip", "netns", "exec", want.Namespace},
		User:            n.osUser(),
		NoSync:          n.a.cfg.NoSync,
		Logger:          n.a.log.With("node", n.id),
	}
	// The tenant's settings first: Moat's own below overwrite any
	// (postgres refuses the names it writes itself).
	cfg.Settings = maps.Clone(want.Settings)
	if cfg.Settings == nil {
		cfg.Settings = map[string]string{}
	}
	if n.a.cfg.NoSync {
		maps.Copy(cfg.Settings, map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
	}
	if primary && want.SyncStandbyNames != "" {
		// A commit waits for the standbys' flush, even without fsync.
		cfg.Settings["synchronous_standby_names"] = want.SyncStandbyNames
		cfg.Settings["synchronous_commit"] = "on"
	}
	// A replica that is to be promoted, or follows no one for now (a
	// failover's detach step), keeps its data directory as it is.
	cfg.KeepStandby = primary || want.PrimaryAddress == ""
	if !primary && want.PrimaryAddress == "" {
		return cfg, nil
	}
	if !primary {
		if t.ReplCertPEM == "" || t.ReplKeyPEM == "" || t.ProjectCAPEM == "" {
			return cfg, errors.New("tls: a replica needs its replication client certificate and the project CA")
		}
		// The primary's certificate carries its address: verify-full
		// checks it against the address we connect to.
		cfg.Primary = &postgres.Upstream{
			Host:          want.PrimaryAddress,
			Port:          port,
			User:          want.ReplicationUser,
			ClientCertPEM: []byte(t.ReplCertPEM),
			ClientKeyPEM:  []byte(t.ReplKeyPEM),
			CAPEM:         []byte(t.ProjectCAPEM),
		}
	}
	return cfg, nil
}

// wipe ends the node, in this order: its tasks are cancelled and waited
// for (they use the server), PostgreSQL is stopped, then its files and the
// node's directory are removed, then its user, then its firewall is closed. The
// firewall's table stays in force (the agent never opens or removes one):
// the provider deletes the namespace.
func (n *node) wipe(ctx context.Context) error {
	n.stopTasks()
	n.closeArchive()
	inst := n.inst
	if inst == nil {
		if _, err := os.Stat(n.dir); errors.Is(err, os.ErrNotExist) {
			if err := n.destroyVolume(); err != nil {
				return err
			}
			if err := n.a.plat.users.Remove(n.osUser()); err != nil {
				return err
			}
			n.forgetTasks()
			n.wiped = true
			return nil
		}
		var err error
		if inst, err = n.bareInstance(); err != nil {
			return err
		}
		defer n.closeInstance(inst)
	}
	// On a volume whose server died the files are unreadable (EIO):
	// destroying the volume is the wipe.
	lost := n.volumeGone()
	if lost {
		n.killOnLostVolume()
	}
	if err := inst.Stop(ctx); err != nil && !lost {
		return err
	}
	if err := inst.Wipe(); err != nil && !lost {
		return err
	}
	if err := n.destroyVolume(); err != nil {
		return err
	}
	if err := os.RemoveAll(n.dir); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	// Its user last: nothing of the node is left for a later user of
	// the same uid. (A failure here is retried: the node's directory is
	// gone, so the next wipe only destroys the volume and removes it.)
	if err := n.a.plat.users.Remove(n.osUser()); err != nil {
		return err
	}
	n.a.log.Info("node wiped", "node", n.id)
	n.closeInstance(n.inst)
	n.inst, n.marks = nil, marks{}
	n.appliedRev, n.wiped, n.lostCleared = -1, true, false
	n.forgetTasks()
	n.closeNetwork()
	return nil
}

// bareInstance returns an instance for the node's directories, to stop
// and wipe a node whose desired state is unknown. Its certificate is a
// placeholder: it is never written. It runs as the node's user, or as
// Config.PGUser for a node made before nodes had their own.
func (n *node) bareInstance() (instance, error) {
	u := n.osUser()
	if _, err := n.owner(); err != nil {
		u = n.a.cfg.PGUser
	}
	return n.a.plat.newInstance(postgres.Config{
		BinDir:        n.a.cfg.PGBinDir,
		DataDir:       n.dataDir(),
		TLSDir:        n.tlsDir(),
		SocketDir:     n.socketDir(),
		LogFile:       n.logFile(),
		ServerCertPEM: []byte("unused"),
		ServerKeyPEM:  []byte("unused"),
		User:          u,
		Logger:        n.a.log.With("node", n.id),
	})
}

// closeInstance closes in, if not nil (the server it started runs on).
func (n *node) closeInstance(in instance) {
	if in == nil {
		return
	}
	if err := in.Close(); err != nil {
		n.a.log.Warn("close postgres instance", "node", n.id, "err", err)
	}
}

// openNetwork opens the node's namespace, or opens it again if it was
// recreated under the same name since.
func (n *node) openNetwork(name string) error {
	if n.net != nil && n.net.Name() == name && n.net.Current() {
		return nil
	}
	net, err := n.a.plat.openNetwork(name)
	if err != nil {
		return err
	}
	if n.net != nil {
		n.a.log.Warn("network namespace changed; applying the node again", "node", n.id, "namespace", name)
	}
	n.closeNetwork()
	n.net = net
	return nil
}

// nsChanged reports whether the node's namespace is no longer the one the
// node was applied in (deleted, or recreated under the same name).
func (n *node) nsChanged() bool {
	return n.net != nil && !n.net.Current()
}

func (n *node) closeNetwork() {
	if n.net == nil {
		return
	}
	if err := n.net.Close(); err != nil {
		n.a.log.Warn("close network namespace", "node", n.id, "err", err)
	}
	n.net = nil
}
