// Package agent is the per-host agent: it follows its host's desired state
// (a long poll on the control plane) and applies, per node, PostgreSQL
// (initdb or a base backup, TLS-only configuration, start, reload), the TLS
// files, pg_hba and the nftables firewall in the node's network namespace;
// it reports what it applied.
//
// It is fail-static: when the control plane is unreachable it keeps what
// it last applied (it never removes or opens a firewall), keeps
// supervising PostgreSQL (restarting it if it dies), and it persists the
// last desired state so that a restarted agent does the same without the
// control plane.
//
// Every node is applied by its own goroutine, so nodes are independent,
// in ordered steps (firewall, encrypted volume, instance files, pg_hba, start or reload,
// revoked sessions, restore, roles and password; see node.apply), each
// redone only when its input changed: an allowlist change reaches the
// firewall within milliseconds of the long poll returning, before pg_hba
// is rewritten and revoked sessions are terminated. The steps act on a
// node's network namespace, firewall and PostgreSQL through small
// interfaces (platform.go), which the unit tests fake. A node's tasks
// (base backups, WAL switches) run beside its worker and are cancelled
// when the node is wiped or the agent stops.
//
// With Config.OpsListen it also runs each node's operator SSH endpoint on
// that address, and keeps the temporary PostgreSQL role of its project's
// support grant (ops.go; design 0012).
//
// Files, under Config.DataDir:
//
//	agent-state.json          the last desired state (mode 0600), its nodes' secrets sealed
//	                          (private keys, backup authentication keys, support-role passwords)
//	agent-state.key           the host key they are sealed with (mode 0600)
//	nodes/<node-id>/          root's, mode 0710, group the node user's (osuser.go)
//	nodes/<node-id>/pgdata    the cluster (without volumes)
//	volumes/<node-id>.luks    the node's encrypted volume (Config.VolumeSize)
//	volumes/<node-id>/        the volume's file system: root's, mode 0710, group the node user's
//	volumes/<node-id>/pgdata  the cluster, on the volume's file system
//	volumes/<node-id>.log     the volume server's log
//	nodes/<node-id>/tls       server certificate and key, CAs, replication client cert
//	nodes/<node-id>/run       the Unix socket, the management path
//	nodes/<node-id>/postgres.log
//	nodes/<node-id>/archive.sock  the node's archive socket: see backup.go
//	bin/moat                  the moat binary PostgreSQL's archive_command runs
//	ops-spool/                operator endpoints' audit events and recordings, until sent (ops.Spool)
//
// It serves its own Prometheus metrics (Config.MetricsListen) and sends
// each node's PostgreSQL statistics, read as the monitoring role, for the
// tenants' metrics (metrics.go).
//
// It is imported by internal/cli (moat agent, moat up) and by tests.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/volume"
)

// Source is where the agent gets its host's desired state and sends its
// reports: the control plane's API (internal/client's Client satisfies
// it), or a fake in tests.
type Source interface {
	// Desired long-polls host's desired state: it returns as soon as its
	// revision is greater than after, or after a server-side timeout with
	// the same revision.
	Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error)
	// Report sends what the agent applied.
	Report(ctx context.Context, host string, r apitype.HostReport) error
}

// Config configures an Agent.
type Config struct {
	// Host is the name of the host whose nodes the agent runs.
	Host string
	// Source gives the desired state and takes reports.
	Source Source
	// DataDir holds the agent's state and the nodes' data. It must be
	// absolute and every directory above it traversable by other users
	// (the nodes' users; so not under /root); the agent creates it (mode
	// 0711).
	DataDir string
	// PGBinDir holds initdb, postgres and pg_basebackup. Default:
	// $MOAT_PG_BINDIR, else `pg_config --bindir`.
	PGBinDir string
	// PGUser is the operating-system user that stands for "another user"
	// in the check that DataDir's parents are traversable. Default
	// "postgres". Each node's PostgreSQL runs as its own user when the
	// agent runs as root (osuser.go).
	PGUser string
	// Logger receives the agent's events. Default: discard.
	Logger *slog.Logger
	// NoSync skips fsync (initdb, base backups, the state file, and the
	// server's own fsync): for tests only.
	NoSync bool
	// MoatBinary is the moat binary PostgreSQL runs as archive_command
	// and restore_command (copied under DataDir/bin for the postgres
	// user). Default: this process's executable.
	MoatBinary string
	// Version is the agent's version, sent with every report (default:
	// Version()).
	Version string
	// HeartbeatEvery is how often the agent reports when nothing changed:
	// the host's heartbeat. Zero: what the control plane asks for in the
	// desired state (HostDesired.HeartbeatMillis), and
	// domain.DefaultHeartbeatInterval until it answers.
	HeartbeatEvery time.Duration
	// VolumeSize, when positive, gives every node its own encrypted
	// volume of that many bytes (a sparse LUKS2 file under
	// DataDir/volumes, its key only in the memory of its `moat volume
	// serve` process), where its PostgreSQL data lives. Zero: the data
	// lives in the node's directory, unencrypted.
	VolumeSize int64
	// MetricsListen, when set, is the HOST:PORT the agent serves its
	// Prometheus metrics on (plain HTTP, /metrics): loopback only unless
	// MetricsPublic (metrics.Listen).
	MetricsListen string
	MetricsPublic bool
	// StatsInterval is how often each node's PostgreSQL statistics are
	// read and sent to the control plane for the tenants' metrics
	// (DefaultStatsInterval when zero; only with a Source that is a
	// StatsSink).
	StatsInterval time.Duration
	// OpsListen, when set, is the IP address on the operator path (loopback
	// for moat up) where each node's operator SSH endpoint listens, one
	// port per node (ops.go; design 0012). The Source must then be an
	// OpsSource.
	OpsListen string
	// OpsUser is the dedicated account operators' shells run as (default
	// DefaultOpsUser, created when missing).
	OpsUser string
}

// DefaultVolumeSize is the size of a node's volume where a setting asks
// for volumes without a size.
const DefaultVolumeSize = 10 << 30

// Agent runs one host's nodes.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	nodesDir string
	// volumesDir holds the nodes' volumes (Config.VolumeSize).
	volumesDir string

	mu    sync.Mutex
	nodes map[string]*node
	wg    sync.WaitGroup

	reportKick chan struct{}
	// contact is when the agent sent the last report the control plane
	// acknowledged (Unix ns; the agent's start before): the lease of the
	// nodes' primaries counts from it. The control plane recorded that
	// report as the host's heartbeat no earlier, so the lease runs out
	// here no later than the control plane counts on.
	contact atomic.Int64
	// beatEvery is the heartbeat interval in force (ns): Config's, else
	// the control plane's.
	beatEvery atomic.Int64

	binMu   sync.Mutex
	binPath string // the installed moat binary, once installed

	// archiveEvery is how often a primary's archiving is read (tests
	// shorten it).
	archiveEvery time.Duration

	// plat makes the nodes' networks and instances and runs their
	// tasks (tests replace it with fakes).
	plat platform

	// onFirewall, when set (tests), is called after a node's firewall
	// enforces the desired state of revision rev; took is how long the
	// firewall's transaction took.
	onFirewall func(nodeID string, rev int64, took time.Duration)
	// obs holds the agent's metrics (metrics.go).
	obs observer

	// onVolumeKey, when set (tests), sees a new volume's key before it is
	// handed to its server, to check that it is written nowhere.
	onVolumeKey func(container string, key []byte)

	// ops runs the nodes' operator endpoints (nil without OpsListen).
	ops *opsEndpoints
	// volumeCheckTimeout, when set (tests), replaces volumeCheckTimeout.
	volumeCheckTimeout time.Duration
}

// stateFile is the last desired state, under DataDir.
const stateFile = "agent-state.json"

// Retry timing.
const (
	pollBackoffMin = 50 * time.Millisecond
	pollBackoffMax = 2 * time.Second
	superviseEvery = time.Second
	// retryMax caps the wait before a failed node apply is retried.
	retryMax = 10 * time.Second
	// creatingGrace is how long the failures of a node still being
	// created (a replica waiting for its primary, say) go unreported.
	creatingGrace = time.Minute
)

// New checks cfg and prepares DataDir. It starts nothing.
func New(cfg Config) (*Agent, error) {
	if cfg.Host == "" {
		return nil, errors.New("agent config: no host name")
	}
	if cfg.Source == nil {
		return nil, errors.New("agent config: no source of desired state")
	}
	if cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir) {
		return nil, fmt.Errorf("agent config: data directory %q is not an absolute path", cfg.DataDir)
	}
	cfg.DataDir = filepath.Clean(cfg.DataDir)
	a := newAgent(cfg, hostPlatform())
	a.plat.vol = &hostVolumes{a: a}
	if cfg.OpsListen != "" {
		var err error
		if a.ops, err = newOpsEndpoints(a); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 {
		if err := checkTraversable(filepath.Dir(a.cfg.DataDir), a.cfg.PGUser); err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
	}
	for _, d := range []string{a.cfg.DataDir, a.nodesDir} {
		if err := mkdir0711(d); err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
	}
	if a.hasVolume() {
		if err := mkdir0711(a.volumesDir); err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
		// Shared before any node namespace is made, so that those
		// namespaces' copies of the volumes' mounts do not pin them.
		if err := volume.Share(a.volumesDir); err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
	}
	if err := a.listenMetrics(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	return a, nil
}

// newAgent returns an Agent for cfg, checked, on plat.
func newAgent(cfg Config, plat platform) *Agent {
	if cfg.PGUser == "" {
		cfg.PGUser = "postgres"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = Version()
	}
	a := &Agent{
		cfg:          cfg,
		log:          cfg.Logger,
		nodesDir:     filepath.Join(cfg.DataDir, "nodes"),
		volumesDir:   filepath.Join(cfg.DataDir, "volumes"),
		nodes:        map[string]*node{},
		reportKick:   make(chan struct{}, 1),
		archiveEvery: 10 * time.Second,
		plat:         plat,
		obs:          newObserver(),
	}
	a.renew(time.Now())
	a.beatEvery.Store(int64(cmp.Or(max(cfg.HeartbeatEvery, 0), domain.DefaultHeartbeatInterval)))
	return a
}

// mkdir0711 makes dir if missing and sets it to mode 0711: the postgres
// user may traverse it, nobody else may list it.
func mkdir0711(dir string) error {
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Chmod(dir, 0o711)
}

// Run follows the desired state until ctx ends, then returns nil, leaving
// every node as it is: PostgreSQL running, firewalls in force.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		a.wg.Wait()
	}()
	a.wg.Add(4)
	go func() {
		defer a.wg.Done()
		a.reporter(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.heartbeater(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.serveMetrics(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.scrapeLoop(ctx)
	}()

	var after int64
	if d, err := a.loadState(); err != nil {
		a.log.Error("agent state unreadable; waiting for the control plane", "path", filepath.Join(a.cfg.DataDir, stateFile), "err", err)
	} else if d != nil {
		a.log.Info("agent state loaded", "revision", d.Revision, "nodes", len(d.Nodes))
		a.dispatch(ctx, *d)
		// Ask for the current state anyway (after=0): it may be newer, or
		// older after a control-plane restore.
	}

	backoff := pollBackoffMin
	failing := false
	var applied int64 = -1
	for ctx.Err() == nil {
		d, err := a.cfg.Source.Desired(ctx, a.cfg.Host, after)
		if err == nil && d.Host != "" && d.Host != a.cfg.Host {
			err = fmt.Errorf("desired state is for host %q, not %q", d.Host, a.cfg.Host)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !failing {
				a.log.Warn("control plane unreachable; keeping the applied state", "err", err)
				failing = true
			}
			sleep(ctx, backoff)
			backoff = min(backoff*2, pollBackoffMax)
			continue
		}
		if ms := d.HeartbeatMillis; ms > 0 && a.cfg.HeartbeatEvery <= 0 {
			a.beatEvery.Store(int64(time.Duration(ms) * time.Millisecond))
		}
		if failing {
			a.log.Info("control plane reachable again", "revision", d.Revision)
			failing = false
		}
		backoff = pollBackoffMin
		after = d.Revision
		if d.Revision == applied {
			continue // the server's wait ended with nothing new
		}
		applied = d.Revision
		a.dispatch(ctx, d)
		if err := a.saveState(d); err != nil {
			a.log.Error("save agent state", "err", err)
		}
	}
	return nil
}

// dispatch hands each node its part of d and starts a worker for new
// nodes. A node is wiped only when d says so (its state is deleting, or
// d.Deleted names it): a node absent from d and not named deleted, or a
// node directory nobody knows, is kept as it is and reported as an error
// (a wrong --host, or a control plane restored from an older backup,
// must not wipe a host). The operator
// endpoints follow d too.
func (a *Agent) dispatch(ctx context.Context, d apitype.HostDesired) {
	if a.ops != nil {
		a.ops.sync(ctx, d)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	for _, nd := range d.Nodes {
		seen[nd.NodeID] = true
		a.nodeLocked(ctx, nd.NodeID).set(nd, d.Revision, false)
	}
	deleted := map[string]bool{}
	for _, id := range d.Deleted {
		deleted[id] = true
	}
	var kept []string
	for id, n := range a.nodes {
		switch {
		case seen[id]:
		case deleted[id]:
			n.set(apitype.NodeDesired{}, d.Revision, true)
		default:
			n.hold()
			if exists(n.dir) {
				kept = append(kept, id)
			}
		}
	}
	entries, err := os.ReadDir(a.nodesDir)
	if err != nil {
		a.log.Error("list node directories", "err", err)
		return
	}
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || seen[id] || a.nodes[id] != nil || !nodeIDRE.MatchString(id) {
			continue
		}
		if !deleted[id] {
			kept = append(kept, id)
			continue
		}
		a.nodeLocked(ctx, id).set(apitype.NodeDesired{}, d.Revision, true)
	}
	if len(kept) > 0 {
		slices.Sort(kept)
		a.log.Error("nodes on this host are neither in its desired state nor named deleted: kept as they are, not wiped; check the agent's --host",
			"host", a.cfg.Host, "revision", d.Revision, "nodes", kept, "desired_nodes", len(d.Nodes))
	}
}

// nodeIDRE is what a node ID may be: it names a directory and a process
// title.
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,62}$`)

// nodeLocked returns the node id, starting its worker if it is new. a.mu
// is held.
func (a *Agent) nodeLocked(ctx context.Context, id string) *node {
	if n := a.nodes[id]; n != nil {
		return n
	}
	n := newNode(a, id)
	a.nodes[id] = n
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		n.run(ctx)
	}()
	return n
}

// forget removes n once its worker is done with it (wiped, or held and
// wiped before), unless it was given a new desired state meanwhile; it
// reports whether it did.
func (a *Agent) forget(n *node) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if (!n.gone && !n.held) || a.nodes[n.id] != n {
		return false
	}
	delete(a.nodes, n.id)
	a.obs.rec.ForgetNode(n.id)
	return true
}

// kickReport asks the reporter to send the nodes' reports.
func (a *Agent) kickReport() {
	select {
	case a.reportKick <- struct{}{}:
	default:
	}
}

// reporter sends the reports of the nodes in the desired state whenever
// one changes, retrying with backoff. (The host's heartbeat is the
// heartbeater's.)
func (a *Agent) reporter(ctx context.Context) {
	backoff := pollBackoffMin
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportKick:
		case <-retry:
		}
		retry = nil
		r := apitype.HostReport{AgentVersion: a.cfg.Version}
		a.mu.Lock()
		for _, n := range a.nodes {
			if rep, ok := n.currentReport(); ok {
				r.Nodes = append(r.Nodes, rep)
			}
		}
		a.mu.Unlock()
		if len(r.Nodes) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sent := time.Now()
		err := a.cfg.Source.Report(rctx, a.cfg.Host, r)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if backoff == pollBackoffMin {
				a.log.Warn("report to control plane", "err", err)
			}
			retry = time.After(backoff)
			backoff = min(backoff*2, pollBackoffMax)
			continue
		}
		a.renew(sent)
		backoff = pollBackoffMin
		a.observeReport(r)
	}
}

// maxHeartbeatsInFlight bounds the heartbeats waiting for an answer.
const maxHeartbeatsInFlight = 4

// heartbeater sends the host's heartbeat (a report without nodes) at once
// and then every heartbeat interval, without waiting for the previous
// one's answer: a slow control plane delays each acknowledgement but not
// the next heartbeat, so the lease — renewed from the sending of each
// acknowledged report — holds while answers take up to the lease less an
// interval (a heartbeat waiting for the previous one's answer would space
// the renewals by the whole round trip).
func (a *Agent) heartbeater(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var inflight atomic.Int32
	var failing atomic.Bool
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(time.Duration(a.beatEvery.Load()))
		if inflight.Load() >= maxHeartbeatsInFlight {
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			sent := time.Now()
			if err := a.cfg.Source.Report(rctx, a.cfg.Host, apitype.HostReport{AgentVersion: a.cfg.Version}); err != nil {
				if ctx.Err() == nil && !failing.Swap(true) {
					a.log.Warn("heartbeat to control plane", "err", err)
				}
				return
			}
			if failing.Swap(false) {
				a.log.Info("heartbeat answered again")
			}
			a.renew(sent)
		}()
	}
}

// Version is this binary's version: its module version, else its VCS
// revision (12 hex digits, "+dirty" when modified), else "dev".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) >= 12 {
		return rev[:12] + dirty
	}
	return "dev"
}

// renew records that the control plane acknowledged a report sent at
// sent: the primaries' lease counts from then.
func (a *Agent) renew(sent time.Time) {
	for {
		old := a.contact.Load()
		if sent.UnixNano() <= old || a.contact.CompareAndSwap(old, sent.UnixNano()) {
			return
		}
	}
}

// lastContact is when the agent sent the last report the control plane
// acknowledged (the agent's start, before it first does).
func (a *Agent) lastContact() time.Time { return time.Unix(0, a.contact.Load()) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// checkTraversable reports an error if an existing directory on the way
// to dir (dir included) cannot be searched by the user named pgUser.
func checkTraversable(dir, pgUser string) error {
	u, uid, gid, err := lookupUser(pgUser)
	if err != nil {
		return err
	}
	groups := map[uint32]bool{gid: true}
	gids, err := u.GroupIds()
	if err != nil {
		return fmt.Errorf("groups of the postgres user %s: %w", pgUser, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return fmt.Errorf("groups of the postgres user %s: gid %q: %w", pgUser, g, err)
		}
		groups[uint32(n)] = true
	}
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err == nil {
			var bit uint32 = 0o001
			switch {
			case st.Uid == uid:
				bit = 0o100
			case groups[st.Gid]:
				bit = 0o010
			}
			if st.Mode&bit == 0 {
				return fmt.Errorf("%s (mode %#o, owner %d) is not traversable by the postgres user %s; put the data directory elsewhere (not under /root or another private directory) or run chmod o+x %s",
					d, st.Mode&0o777, st.Uid, pgUser, d)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if d == "/" {
			return nil
		}
	}
}

// lookupUser returns the operating-system user PostgreSQL runs as, with
// its uid and gid.
func lookupUser(name string) (*user.User, uint32, uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("postgres user: %w (running as root, PostgreSQL must run as %s)", err, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, 0, 0, fmt.Errorf("postgres user %s has uid %q gid %q", name, u.Uid, u.Gid)
	}
	return u, uint32(uid), uint32(gid), nil
}
