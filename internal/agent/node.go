package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/moatdb/moat/internal/apitype"
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
	gone bool // absent from the desired state: wipe and forget
	rep  apitype.NodeReport
	// hasRep: rep is to be sent (the node is in the desired state and
	// something was applied or failed).
	hasRep bool

	// The worker's own state.
	appliedRev int64 // revision of the last successful apply; -1 none
	failedAt   time.Time
	failures   int
	nextTry    time.Time
	retry      <-chan time.Time // a waiting node's next try
	nsName     string
	ns         netns.NsHandle
	fw         *nft.Firewall
	fwFP       string
	inst       *postgres.Instance
	instFP     string
	restartFP  string
	hbaFP      string
	bootFP     string
	pwFP       string
	wiped      bool

	// tasks are the tasks of the desired state started, with their
	// reports once finished (nil while running); under mu. taskMu runs
	// them one at a time.
	tasks  map[string]*apitype.TaskReport
	taskMu sync.Mutex

	// archive is the primary's WAL archiving as last read (under mu);
	// archiveAt when the worker read it.
	archive   *apitype.ArchiveStatus
	archiveAt time.Time
}

func newNode(a *Agent, id string) *node {
	return &node{
		a: a, id: id, dir: filepath.Join(a.nodesDir, id),
		kick: make(chan struct{}, 1), appliedRev: -1, ns: -1,
	}
}

// set gives the node its desired state at revision rev (gone: the node is
// not in it) and wakes its worker.
func (n *node) set(nd apitype.NodeDesired, rev int64, gone bool) {
	n.mu.Lock()
	n.want, n.rev, n.gone = nd, rev, gone
	if gone {
		n.hasRep = false
	}
	n.mu.Unlock()
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
	return rep, n.hasRep && !n.gone
}

// setReport records the node's report and wakes the reporter if it
// changed.
func (n *node) setReport(rev int64, allowRev int64, state, msg string) {
	n.mu.Lock()
	old, had := n.rep, n.hasRep
	if n.gone {
		n.mu.Unlock()
		return
	}
	n.rep = apitype.NodeReport{NodeID: n.id, Revision: rev, AllowlistRevision: allowRev, State: state, Message: msg, AppliedAt: time.Now().UTC()}
	n.hasRep = true
	changed := !had || old.Revision != rev || old.AllowlistRevision != allowRev || old.State != state || old.Message != msg
	n.mu.Unlock()
	if changed {
		n.a.kickReport()
	}
}

// run is the node's worker: it applies each new desired state, retries
// failures with backoff, and restarts PostgreSQL when it dies.
func (n *node) run(ctx context.Context) {
	defer n.closeNS()
	tick := time.NewTicker(superviseEvery)
	defer tick.Stop()
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
			kicked = true
		case <-n.retry:
			n.retry, kicked = nil, true
		case <-tick.C:
		}
		n.mu.Lock()
		want, rev, gone := n.want, n.rev, n.gone
		n.mu.Unlock()

		if gone || want.State == stateDeleting {
			if !n.wiped {
				if err := n.wipe(ctx); err != nil {
					n.a.log.Error("wipe node", "node", n.id, "err", err)
					continue
				}
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
	}
}

func (n *node) applyAndReport(ctx context.Context, want apitype.NodeDesired, rev int64) {
	t0 := time.Now()
	err := n.apply(ctx, want, rev)
	if ctx.Err() != nil {
		return
	}
	if errors.Is(err, errWaiting) {
		// Not a failure: the node waits for the control plane.
		n.a.log.Debug("node waits", "node", n.id, "revision", rev, "reason", err)
		n.nextTry, n.retry = time.Now().Add(waitRetry), time.After(waitRetry)
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
	n.a.log.Debug("node applied", "node", n.id, "revision", rev, "allowlist_revision", want.AllowlistRevision, "duration", time.Since(t0))
	n.setReport(rev, want.AllowlistRevision, apitype.NodeReportRunning, "")
}

// supervise restarts PostgreSQL if it is not running, and applies the
// node again if its namespace was recreated.
func (n *node) supervise(ctx context.Context, want apitype.NodeDesired, rev int64) {
	if n.nsChanged() {
		n.appliedRev = -1 // until applied again; failures back off
		n.applyAndReport(ctx, want, rev)
		return
	}
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

// apply makes the node match want. The firewall comes first: it is the
// fast, decisive step of an allowlist change, and PostgreSQL never starts
// before it is in force.
func (n *node) apply(ctx context.Context, want apitype.NodeDesired, rev int64) error {
	if want.State != stateCreating && want.State != stateRunning && want.State != stateFailed {
		return fmt.Errorf("node state %q is neither creating, running, failed nor deleting", want.State)
	}
	if want.Namespace == "" {
		return errors.New("no network namespace")
	}
	addr, err := netip.ParseAddr(want.Address)
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	port := want.Port
	if port == 0 {
		port = 5432
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d out of range", port)
	}
	acc, err := parseAccess(want)
	if err != nil {
		return err
	}

	// 1. The firewall, in the node's namespace.
	if err := n.openNS(want.Namespace); err != nil {
		return err
	}
	pol := nft.Policy{Port: uint16(port), AllowV4: acc.v4, AllowV6: acc.v6, Peers: acc.peers}
	if fp := fingerprint(pol); fp != n.fwFP {
		t0 := time.Now()
		err := n.fw.Apply(pol)
		if err != nil {
			n.fwFP = ""
			return err
		}
		took := time.Since(t0)
		n.fwFP = fp
		n.a.log.Info("firewall applied", "node", n.id, "revision", rev, "allowlist_revision", want.AllowlistRevision,
			"v4", len(acc.v4), "v6", len(acc.v6), "peers", len(acc.peers), "duration", took)
		if f := n.a.onFirewall; f != nil {
			f(n.id, rev, took)
		}
	}

	// 2. The instance: TLS files, moat.conf, the cluster itself.
	primary := want.Role == apitype.RolePrimary || want.Role == ""
	if !primary && want.Role != apitype.RoleReplica {
		return fmt.Errorf("role %q is neither primary nor replica", want.Role)
	}
	// The namespace's identity, not only its name: a namespace recreated
	// under the same name needs PostgreSQL restarted inside it.
	nsID := n.ns.UniqueId()
	restore := n.restoring(want, primary)
	if restore == nil {
		// Restored (or never a restore): no key of another service stays.
		if err := os.RemoveAll(filepath.Join(n.dir, restoreDirName)); err != nil {
			return fmt.Errorf("remove the restore key: %w", err)
		}
	} else if restore.PrivateKeyPEM == "" {
		return n.abandonRestore(ctx)
	}
	archiving := want.Archive != nil
	instFP := fingerprint(want.Namespace, nsID, addr, port, want.Role, want.PrimaryAddress, want.PrimaryName, want.ReplicationUser, want.TLS,
		want.Archive, want.BackupPublicKeyPEM, restore)
	restartFP := fingerprint(want.Namespace, nsID, port, want.Role, want.PrimaryAddress, want.PrimaryName, want.ReplicationUser, archiving)
	reload := false
	if instFP != n.instFP {
		if err := n.ensureDirs(); err != nil {
			return err
		}
		cfg, err := n.pgConfig(want, addr, port, primary)
		if err != nil {
			return err
		}
		set, pr, err := n.backupSettings(want, restore)
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
		inst, err := postgres.New(cfg)
		if err != nil {
			return err
		}
		if n.inst != nil && n.restartFP != restartFP && n.inst.Running() {
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
			return err
		}
		n.inst, n.instFP, n.restartFP, n.hbaFP, n.bootFP = inst, instFP, restartFP, "", ""
		reload = true
	}

	// 3. pg_hba.
	repl := want.ReplicationUser
	if repl == "" {
		repl = postgres.ReplicationUser
	}
	hbaPol := postgres.Policy{Allow: slices.Concat(acc.v4, acc.v6), Replicas: acc.peers, ReplicationUser: repl}
	hbaChanged := false
	if fp := fingerprint(hbaPol); fp != n.hbaFP {
		if err := n.inst.WriteHBA(hbaPol); err != nil {
			return err
		}
		n.hbaFP, hbaChanged = fp, true
	}

	// 4. Running, with the new configuration.
	if restore != nil {
		if err := n.resumeRecovery(); err != nil {
			return err
		}
	}
	if n.inst.Running() {
		if reload || hbaChanged {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := n.inst.Reload(rctx)
			cancel()
			if err != nil {
				n.hbaFP = ""
				return err
			}
		}
	} else {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := n.inst.Start(sctx)
		cancel()
		if err != nil {
			return err
		}
	}
	if hbaChanged {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := n.inst.TerminateSessions(tctx, hbaPol.Allow)
		cancel()
		if err != nil {
			n.hbaFP = ""
			return err
		}
	}

	// 5. Roles, database and password, on a primary (a restored one once
	// it has replayed its archive and promoted itself).
	if restore != nil {
		if err := n.promoted(ctx); err != nil {
			return err
		}
		n.instFP = "" // rewrite moat.conf without the recovery settings
	}
	if primary {
		if want.AdminUser != "" && want.AdminUser != postgres.AdminUser {
			return fmt.Errorf("admin user %q: this agent creates %q", want.AdminUser, postgres.AdminUser)
		}
		if want.Database != "" && want.Database != postgres.Database {
			return fmt.Errorf("database %q: this agent creates %q", want.Database, postgres.Database)
		}
		if fp := fingerprint(repl); fp != n.bootFP {
			bctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := n.bootstrap(bctx, repl)
			cancel()
			if err != nil {
				return err
			}
			n.bootFP = fp
		}
		if fp := fingerprint(want.AdminVerifier); want.AdminVerifier != "" && fp != n.pwFP {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := n.setVerifier(pctx, postgres.AdminUser, want.AdminVerifier)
			cancel()
			if err != nil {
				return err
			}
			n.pwFP = fp
		}
	}
	return nil
}

// Paths under the node's directory.
func (n *node) dataDir() string   { return filepath.Join(n.dir, "pgdata") }
func (n *node) tlsDir() string    { return filepath.Join(n.dir, "tls") }
func (n *node) socketDir() string { return filepath.Join(n.dir, "run") }
func (n *node) logFile() string   { return filepath.Join(n.dir, "postgres.log") }

// ensureDirs makes the node's directory, traversable by the postgres user.
func (n *node) ensureDirs() error {
	if err := mkdir0711(n.a.nodesDir); err != nil {
		return err
	}
	return mkdir0711(n.dir)
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
		User:            n.a.cfg.PGUser,
		NoSync:          n.a.cfg.NoSync,
		Logger:          n.a.log.With("node", n.id),
	}
	if n.a.cfg.NoSync {
		cfg.Settings = map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
	}
	if !primary {
		if want.PrimaryAddress == "" {
			return cfg, errors.New("replica without a primary address")
		}
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

// wipe stops the node's PostgreSQL and removes its directory. The
// firewall stays: the provider deletes the namespace.
func (n *node) wipe(ctx context.Context) error {
	inst := n.inst
	if inst == nil {
		if _, err := os.Stat(n.dir); errors.Is(err, os.ErrNotExist) {
			n.wiped = true
			return nil
		}
		var err error
		if inst, err = n.bareInstance(); err != nil {
			return err
		}
	}
	if err := inst.Stop(ctx); err != nil {
		return err
	}
	if err := inst.Wipe(); err != nil {
		return err
	}
	if err := os.RemoveAll(n.dir); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	n.a.log.Info("node wiped", "node", n.id)
	n.inst, n.instFP, n.restartFP, n.hbaFP, n.bootFP, n.pwFP = nil, "", "", "", "", ""
	n.appliedRev, n.wiped = -1, true
	n.closeNS()
	return nil
}

// bareInstance returns an Instance for the node's directories, to stop
// and wipe a node whose desired state is unknown. Its certificate is a
// placeholder: it is never written.
func (n *node) bareInstance() (*postgres.Instance, error) {
	return postgres.New(postgres.Config{
		BinDir:        n.a.cfg.PGBinDir,
		DataDir:       n.dataDir(),
		TLSDir:        n.tlsDir(),
		SocketDir:     n.socketDir(),
		LogFile:       n.logFile(),
		ServerCertPEM: []byte("unused"),
		ServerKeyPEM:  []byte("unused"),
		User:          n.a.cfg.PGUser,
		Logger:        n.a.log.With("node", n.id),
	})
}

// openNS opens the node's namespace, or reopens it if it was recreated
// under the same name since (the firewall is then written again).
func (n *node) openNS(name string) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	if n.nsName == name && n.ns.Equal(h) {
		h.Close()
		return nil
	}
	if n.nsName != "" {
		n.a.log.Warn("network namespace changed; applying the node again", "node", n.id, "namespace", name)
	}
	n.closeNS()
	n.ns, n.nsName, n.fw, n.fwFP = h, name, nft.New(h), ""
	return nil
}

// nsChanged reports whether the node's namespace is no longer the one the
// node was applied in (deleted, or recreated under the same name).
func (n *node) nsChanged() bool {
	if n.nsName == "" {
		return false
	}
	h, err := netns.GetFromName(n.nsName)
	if err != nil {
		return true
	}
	defer h.Close()
	return !n.ns.Equal(h)
}

func (n *node) closeNS() {
	if n.ns >= 0 {
		n.ns.Close()
	}
	n.ns, n.nsName, n.fw, n.fwFP = -1, "", nil, ""
}
