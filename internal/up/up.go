// Package up assembles everything `moat up` runs on one machine: the
// control plane on its embedded store with the local provider, a fleet of
// hosts (one per AZ of every region by default, each its own agent
// process; fleet.go), and the simulated customer cloud with its internet
// host "laptop".
// internal/cli runs it for `moat up`; end-to-end tests run it in-process
// with their own data directory and namespace prefix. Needs root.
//
// It also holds what a machine needs for that: the Debian packages
// (packages.txt, which scripts/deps.sh reads too, and Install), and the
// record in a data directory of its stack's namespace prefix, by which
// Down removes that stack and no other.
package up

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/agent"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/dns"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/provider/local"
	"github.com/moatdb/moat/internal/sim"
)

// OpsListen is where the nodes' operator SSH endpoints listen: this
// machine's loopback, the operator path of a single machine (design 0012).
const OpsListen = "127.0.0.1"

// LaptopHost is the simulated internet host every `moat up` has.
const LaptopHost = "laptop"

// Config configures a stack.
type Config struct {
	// ControlPlane configures the control plane; its Provider is set here.
	ControlPlane controlplane.Config
	// CloudPrefix names the namespaces ("moat-" by default).
	CloudPrefix string
	// NoSync makes PostgreSQL skip fsync (tests).
	NoSync bool
	// DNSServers is how many DNS server processes answer, all on the same
	// sockets, so that one may die unnoticed (DefaultDNSServers when 0;
	// 1 to MaxDNSServers).
	DNSServers int
	// DNSListen is the host loopback address of the platform DNS server
	// (default 127.0.0.1:8053; "127.0.0.1:0" picks a port). It also
	// answers inside the internet namespace on the bridge's address, port
	// 53, and the sim hosts use it as their resolver.
	DNSListen string
	// MoatBinary is the moat binary PostgreSQL runs to archive WAL
	// (default: this executable; tests pass theirs, see agent.Config).
	MoatBinary string
	// VolumeSize, when positive, puts every node's data on its own
	// encrypted volume of that many bytes (agent.Config.VolumeSize),
	// rounded to GiB.
	VolumeSize int64
	// AgentMetricsListen, when set, is where the agent serves its
	// Prometheus metrics (agent.Config.MetricsListen; public only with
	// ControlPlane.MetricsPublic).
	AgentMetricsListen string
	// StatsInterval is how often the agent reads its nodes' PostgreSQL
	// statistics (agent.Config.StatsInterval; tests shorten it).
	StatsInterval time.Duration
	// HostsPerAZ is how many hosts the fleet has in each AZ (default 1).
	HostsPerAZ int
	// AgentLogLevel is the agents' log level (default info).
	AgentLogLevel string
}

// Stack is a running machine's worth of Moat.
type Stack struct {
	cfg Config
	// agentMetrics is each host's agent metrics address (HOST:PORT).
	agentMetrics map[string]string
	CP           *controlplane.ControlPlane
	Cloud        *localcloud.Cloud
	// Provider is the control plane's local provider; Run runs it (its
	// moved-address responders) and closes it.
	Provider *local.Provider
	Sim      *sim.Sim
	// Laptop is the internet host clients run on.
	Laptop sim.Host
	// DNS builds the platform's zone and writes it for the DNS server
	// processes (moat dns serve, see startDNS), whose loopback address is
	// DNSAddr and address on the simulated internet InternetDNS.
	DNS         *dns.Server
	DNSAddr     string
	InternetDNS netip.AddrPort
	dnsServers  *dnsGroup // the DNS server processes

	// fleet are the hosts whose agents Run supervises.
	fleet    []FleetHost
	recordMu sync.Mutex
	// ready is closed once every host heartbeat after Run started.
	ready chan struct{}
}

// Cloud returns the local cloud for prefix ("" means "moat-").
func Cloud(prefix string) (*localcloud.Cloud, error) {
	if prefix == "" {
		prefix = "moat-"
	}
	return localcloud.New(localcloud.Config{Prefix: prefix})
}

// New prepares the data directory, the simulated internet, the control
// plane and the laptop host. It starts nothing that runs: Run starts the
// control plane, registers the fleet and starts its agents.
func New(ctx context.Context, cfg Config) (*Stack, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("moat up needs root: nodes are network namespaces with nftables firewalls, and each node's PostgreSQL runs as its own user")
	}
	dir := cfg.ControlPlane.DataDir
	if dir == "" {
		return nil, errors.New("up: no data directory")
	}
	if err := preflight(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// The nodes' users must traverse the data directory to reach their
	// nodes' data; the secrets in it are files of mode 0600.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	if cfg.ControlPlane.Logger == nil {
		cfg.ControlPlane.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HostsPerAZ <= 0 {
		cfg.HostsPerAZ = 1
	}
	if cfg.DNSServers == 0 {
		cfg.DNSServers = DefaultDNSServers
	}
	if cfg.DNSServers < 1 || cfg.DNSServers > MaxDNSServers {
		return nil, fmt.Errorf("up: %d dns servers: want 1 to %d", cfg.DNSServers, MaxDNSServers)
	}
	if cfg.AgentLogLevel == "" {
		cfg.AgentLogLevel = "info"
	}
	s := &Stack{cfg: cfg, fleet: withLegacy(dir, cfg.ControlPlane.Catalog, Fleet(cfg.ControlPlane.Catalog, cfg.HostsPerAZ)), ready: make(chan struct{})}
	var err error
	if s.agentMetrics, err = agentMetricsAddrs(cfg.AgentMetricsListen, s.fleet); err != nil {
		return nil, err
	}
	if s.Cloud, err = Cloud(cfg.CloudPrefix); err != nil {
		return nil, err
	}
	existing, err := s.Cloud.Namespaces()
	if err != nil {
		return nil, err
	}
	if err := writeRecord(dir, s.Cloud.Prefix(), existing); err != nil {
		return nil, err
	}
	if err := s.Cloud.EnsureInternet(ctx); err != nil {
		return nil, fmt.Errorf("create the simulated internet: %w", err)
	}
	s.Provider = local.New(s.Cloud)
	cfg.ControlPlane.Provider = s.Provider
	if s.CP, err = controlplane.New(ctx, cfg.ControlPlane); err != nil {
		return nil, err
	}
	if err := s.CP.Listen(); err != nil {
		return nil, err
	}
	if s.Sim, err = sim.Open(sim.Config{Cloud: s.Cloud, Dir: filepath.Join(dir, "sim")}); err != nil {
		return nil, err
	}
	if s.Laptop, err = s.Sim.CreateInternetHost(ctx, LaptopHost); err != nil {
		return nil, fmt.Errorf("create the laptop host: %w", err)
	}
	if err := s.listenDNS(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// listenDNS makes the platform DNS server answer on loopback and inside
// the internet namespace, from the zone the control plane writes (see
// startDNS), and makes the laptop resolve through it.
func (s *Stack) listenDNS(ctx context.Context, cfg Config) error {
	zone := cfg.ControlPlane.Domain
	if zone == "" {
		zone = dns.DefaultDomain
	}
	var err error
	s.DNS, err = dns.New(dns.Config{Domain: zone, Logger: cfg.ControlPlane.Logger.With("component", "dns"),
		ZoneFile: filepath.Join(cfg.ControlPlane.DataDir, ZoneFile), ZoneWritten: s.zoneWritten})
	if err != nil {
		return err
	}
	s.InternetDNS = netip.AddrPortFrom(localcloud.InternetGateway, 53)
	if err := s.startDNS(ctx, cfg, zone); err != nil {
		return err
	}
	return s.Cloud.SetResolver(s.Laptop.NS, s.InternetDNS.Addr())
}

// Client returns an API client authenticated with the token in the data
// directory's file (controlplane.AdminTokenFile, or a host's TokenFile).
func (s *Stack) Client(tokenFile string) (*client.Client, error) {
	dir := s.cfg.ControlPlane.DataDir
	tok, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{URL: s.CP.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile)})
}

// Run runs the control plane, its provider, the fleet's agent processes
// and the DNS server processes' supervision until ctx ends or one fails;
// it stops the agents (SIGTERM) before it returns. Nodes and the DNS
// server processes keep running after it returns (moved addresses keep
// their namespaces, without their responders); Down removes them.
func (s *Stack) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	// Agents a killed moat up left behind run an old configuration.
	stopAgents(ctx, s.cfg.ControlPlane.DataDir, agentStopTimeout)
	const n = 5
	errc := make(chan error, n)
	go func() { errc <- s.CP.Run(ctx) }()
	go func() { errc <- s.Provider.Run(ctx) }()
	go func() { errc <- s.runFleet(ctx, started) }()
	go func() { errc <- s.DNS.Watch(ctx, s.CP.Store, nil) }()
	go func() { errc <- s.superviseDNS(ctx) }()
	err := <-errc
	cancel()
	for range n - 1 {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	s.dnsServers.close() // the servers keep their sockets
	return err
}

// runFleet registers the fleet's hosts, runs and supervises their agents
// until ctx ends, and closes s.ready once every host heartbeat.
func (s *Stack) runFleet(ctx context.Context, started time.Time) error {
	if err := s.registerHosts(ctx); err != nil {
		return err
	}
	op, err := s.Client(controlplane.AdminTokenFile)
	if err != nil {
		return err
	}
	links := make([]*hostLink, len(s.fleet))
	for i, h := range s.fleet {
		if links[i], err = listenHostLink(s.cfg.ControlPlane.DataDir, h.Name, s.CP.URL()); err != nil {
			for _, l := range links[:i] {
				l.ln.Close()
			}
			return fmt.Errorf("link of host %s: %w", h.Name, err)
		}
	}
	errc := make(chan error, 2*len(s.fleet))
	for i, h := range s.fleet {
		go func() { errc <- links[i].run(ctx) }()
		go func() { errc <- s.superviseAgent(ctx, h, links[i].URL()) }()
	}
	if err := s.waitFleet(ctx, op, started); err == nil {
		close(s.ready)
	}
	var errs []error
	for range 2 * len(s.fleet) {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// PSQLArgs returns the argv that runs psql against a service with
// sslmode=verify-full; caFile holds the project CA.
func PSQLArgs(conn apitype.Connection, caFile string, extra ...string) []string {
	dsn := fmt.Sprintf("host=%s hostaddr=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert=%s",
		conn.Host, conn.Address, conn.Port, conn.Database, conn.User, caFile)
	return append([]string{"psql", dsn}, extra...)
}

// Down stops every node PostgreSQL under dataDir's agent directory,
// destroys the nodes' encrypted volumes (their keys end with their
// servers), removes the nodes' operating-system users, stops the DNS server processes and removes the namespaces of the stack of dataDir (and with
// them their nftables tables): those of prefix, or when prefix is "" those
// of the prefix dataDir's record names. A data directory without a record
// removes no namespace (ErrNoStack): another directory's stack is never
// touched. It reports what it stopped.
func Down(ctx context.Context, dataDir, prefix string, timeout time.Duration) (postmasters int, err error) {
	stopAgents(ctx, dataDir, timeout)
	// The simulator's faults end with the stack (its links are deleted).
	if err := WriteFaults(dataDir, Faults{}); err != nil {
		return 0, err
	}
	agentDirs := agentDirs(dataDir)
	var pids []string
	for _, d := range agentDirs {
		pids = append(pids, postmasterFiles(d)...)
	}
	for _, f := range pids {
		pid := postmasterPID(f)
		if pid == 0 {
			continue
		}
		syscall.Kill(pid, syscall.SIGINT)
		if WaitGone(ctx, pid, timeout) != nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		postmasters++
	}
	if prefix == "" {
		r, err := ReadRecord(dataDir)
		if err != nil {
			return postmasters, err
		}
		prefix = r.Prefix
	}
	var volErr error
	for _, d := range agentDirs {
		volErr = errors.Join(volErr, agent.DestroyVolumes(d), agent.RemoveNodeUsers(d))
	}
	volErr = errors.Join(volErr, stopDNS(ctx, dataDir, timeout))
	cloud, err := Cloud(prefix)
	if err != nil {
		return postmasters, errors.Join(volErr, err)
	}
	if err := cloud.Cleanup(ctx); err != nil {
		return postmasters, errors.Join(volErr, fmt.Errorf("remove namespaces: %w", err))
	}
	if r, err := ReadRecord(dataDir); err == nil && r.Prefix == prefix {
		if err := os.Remove(filepath.Join(dataDir, RecordFile)); err != nil {
			return postmasters, errors.Join(volErr, err)
		}
	}
	return postmasters, volErr
}

// agentDirs are the agent directories under dataDir: the fleet's, and
// LegacyHost's.
func agentDirs(dataDir string) []string {
	dirs := []string{AgentDir(dataDir, LegacyHost)}
	entries, _ := os.ReadDir(filepath.Join(dataDir, AgentsDir))
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(dataDir, AgentsDir, e.Name()))
		}
	}
	return dirs
}

// WaitGone waits until process pid has exited, at most timeout.
func WaitGone(ctx context.Context, pid int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for syscall.Kill(pid, 0) == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d did not stop within %s", pid, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// preflight checks for the packages a machine running Moat needs, so a
// missing one is named before anything is built.
func preflight() error {
	if missing := Missing(false); len(missing) > 0 {
		names := strings.Join(Names(missing), " ")
		return fmt.Errorf("missing on this machine: %s (moat up installs them when run as root on Debian; or: apt-get install %s)", names, names)
	}
	return nil
}
