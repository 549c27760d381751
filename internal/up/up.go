// Package up assembles everything `moat up` runs on one machine: the
// control plane on its embedded store with the local provider, the host
// agent, and the simulated customer cloud with its internet host "laptop".
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
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// Host is the agent host name of the single machine.
const Host = "local"

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
	// DNSListen is the host loopback address of the platform DNS server
	// (default 127.0.0.1:8053; "127.0.0.1:0" picks a port). It also
	// answers inside the internet namespace on the bridge's address, port
	// 53, and the sim hosts use it as their resolver.
	DNSListen string
	// MoatBinary is the moat binary PostgreSQL runs to archive WAL
	// (default: this executable; tests pass theirs, see agent.Config).
	MoatBinary string
	// VolumeSize, when positive, puts every node's data on its own
	// encrypted volume of that many bytes (agent.Config.VolumeSize).
	VolumeSize int64
}

// Stack is a running machine's worth of Moat.
type Stack struct {
	cfg   Config
	CP    *controlplane.ControlPlane
	Agent *agent.Agent
	Cloud *localcloud.Cloud
	// Provider is the control plane's local provider; Run runs it (its
	// moved-address responders) and closes it.
	Provider *local.Provider
	Sim      *sim.Sim
	// Laptop is the internet host clients run on.
	Laptop sim.Host
	// DNS is the platform's authoritative server; DNSAddr its loopback
	// address and InternetDNS its address on the simulated internet.
	DNS         *dns.Server
	DNSAddr     string
	InternetDNS netip.AddrPort
	dnsSockets  []dnsSocket
}

type dnsSocket struct {
	pc net.PacketConn
	ln net.Listener
}

// Cloud returns the local cloud for prefix ("" means "moat-").
func Cloud(prefix string) (*localcloud.Cloud, error) {
	if prefix == "" {
		prefix = "moat-"
	}
	return localcloud.New(localcloud.Config{Prefix: prefix})
}

// New prepares the data directory, the simulated internet, the control
// plane, the agent and the laptop host. It starts nothing that runs.
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
	s := &Stack{cfg: cfg}
	var err error
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
	s.Provider = local.New(s.Cloud, Host)
	cfg.ControlPlane.Provider = s.Provider
	cfg.ControlPlane.AgentHost = Host
	if s.CP, err = controlplane.New(ctx, cfg.ControlPlane); err != nil {
		return nil, err
	}
	if err := s.CP.Listen(); err != nil {
		return nil, err
	}
	cl, err := s.Client(controlplane.AgentTokenFile)
	if err != nil {
		return nil, err
	}
	s.Agent, err = agent.New(agent.Config{Host: Host, Source: agent.APISource{Client: cl}, DataDir: filepath.Join(dir, "agent"),
		Logger: cfg.ControlPlane.Logger.With("component", "agent"), NoSync: cfg.NoSync, MoatBinary: cfg.MoatBinary, VolumeSize: cfg.VolumeSize})
	if err != nil {
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

// listenDNS opens the DNS server's sockets on loopback and inside the
// internet namespace, and makes the laptop resolve through it.
func (s *Stack) listenDNS(ctx context.Context, cfg Config) error {
	zone := cfg.ControlPlane.Domain
	if zone == "" {
		zone = dns.DefaultDomain
	}
	var err error
	if s.DNS, err = dns.New(dns.Config{Domain: zone, Logger: cfg.ControlPlane.Logger.With("component", "dns")}); err != nil {
		return err
	}
	addr := cfg.DNSListen
	if addr == "" {
		addr = "127.0.0.1:8053"
	}
	pc, ln, err := dns.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("dns on %s: %w", addr, err)
	}
	s.DNSAddr = pc.LocalAddr().String()
	s.dnsSockets = append(s.dnsSockets, dnsSocket{pc, ln})
	s.InternetDNS = netip.AddrPortFrom(localcloud.InternetGateway, 53)
	err = s.Cloud.Do(s.Cloud.InternetNS(), func() error {
		pc, ln, err := dns.Listen(ctx, s.InternetDNS.String())
		if err == nil {
			s.dnsSockets = append(s.dnsSockets, dnsSocket{pc, ln})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("dns on the simulated internet: %w", err)
	}
	return s.Cloud.SetResolver(s.Laptop.NS, s.InternetDNS.Addr())
}

// Client returns an API client authenticated with the token in the data
// directory's file (controlplane.AdminTokenFile or AgentTokenFile).
func (s *Stack) Client(tokenFile string) (*client.Client, error) {
	dir := s.cfg.ControlPlane.DataDir
	tok, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{URL: s.CP.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile)})
}

// Run runs the control plane, its provider and the agent until ctx ends
// or one fails. Nodes keep running after it returns (moved addresses keep
// their namespaces, without their responders); Down removes them.
func (s *Stack) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 4 + len(s.dnsSockets)
	errc := make(chan error, n)
	go func() { errc <- s.CP.Run(ctx) }()
	go func() { errc <- s.Provider.Run(ctx) }()
	go func() { errc <- s.Agent.Run(ctx) }()
	go func() { errc <- s.DNS.Watch(ctx, s.CP.Store, nil) }()
	for _, d := range s.dnsSockets {
		go func() { errc <- s.DNS.Serve(ctx, d.pc, d.ln) }()
	}
	err := <-errc
	cancel()
	for range n - 1 {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	return err
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
// servers), removes the nodes' operating-system users and removes the namespaces of the stack of dataDir (and with
// them their nftables tables): those of prefix, or when prefix is "" those
// of the prefix dataDir's record names. A data directory without a record
// removes no namespace (ErrNoStack): another directory's stack is never
// touched. It reports what it stopped.
func Down(ctx context.Context, dataDir, prefix string, timeout time.Duration) (postmasters int, err error) {
	pids, _ := filepath.Glob(filepath.Join(dataDir, "agent", "nodes", "*", "pgdata", "postmaster.pid"))
	onVolumes, _ := filepath.Glob(filepath.Join(dataDir, "agent", "volumes", "*", "pgdata", "postmaster.pid"))
	pids = append(pids, onVolumes...)
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
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
	volErr := errors.Join(agent.DestroyVolumes(filepath.Join(dataDir, "agent")), agent.RemoveNodeUsers(filepath.Join(dataDir, "agent")))
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
