package up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
)

// The fleet: moat up registers hosts (HostsPerAZ per AZ of every region
// of the catalog, named <az>-<i>) through the API, as an operator would,
// and runs each host's agent as its own process (`moat agent --server URL
// --host NAME --token-file F --ca F`), so that killing one is a host
// failure. Under the data directory:
//
//	agents/<host>/        the agent's state and its nodes' data
//	agents/<host>.token   its host-bound agent token (0600)
//	agents/<host>.log     its log
//
// The agents' PIDs are in the stack record; Down stops them.

// AgentsDir is the directory of the fleet's agents under a data directory.
const AgentsDir = "agents"

// FleetHost is one host of moat up's fleet.
type FleetHost struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	AZ     string `json:"az"`
}

// Fleet lists the hosts moat up runs for cat: perAZ per AZ of every
// region, named <az>-1, <az>-2, ...
func Fleet(cat domain.Catalog, perAZ int) []FleetHost {
	if len(cat.Regions) == 0 {
		cat = domain.DefaultCatalog()
	}
	var out []FleetHost
	for _, r := range cat.Regions {
		for _, az := range r.AZs {
			for i := 1; i <= perAZ; i++ {
				out = append(out, FleetHost{Name: az + "-" + strconv.Itoa(i), Region: r.Code, AZ: az})
			}
		}
	}
	return out
}

// LegacyHost is the one host of a moat up before the fleet: its agent's
// directory is DATA-DIR/agent. A data directory that has one keeps it as
// a drained host (withLegacy), so its nodes keep running and take no
// company.
const LegacyHost = "local"

// AgentDir is host's agent directory under dataDir.
func AgentDir(dataDir, host string) string {
	if host == LegacyHost {
		return filepath.Join(dataDir, "agent")
	}
	return filepath.Join(dataDir, AgentsDir, host)
}

// withLegacy adds LegacyHost to fleet when dataDir holds its agent's state
// (in the first AZ of the catalog's first region: a host has one AZ; its
// nodes keep theirs).
func withLegacy(dataDir string, cat domain.Catalog, fleet []FleetHost) []FleetHost {
	if _, err := os.Stat(filepath.Join(AgentDir(dataDir, LegacyHost), "agent-state.json")); err != nil {
		return fleet
	}
	if len(cat.Regions) == 0 {
		cat = domain.DefaultCatalog()
	}
	r := cat.Regions[0]
	return append(fleet, FleetHost{Name: LegacyHost, Region: r.Code, AZ: r.AZs[0]})
}

// TokenFile is host's agent token file, relative to the data directory
// (for Stack.Client).
func TokenFile(host string) string { return filepath.Join(AgentsDir, host+".token") }

// Hosts are the fleet's hosts.
func (s *Stack) Hosts() []FleetHost { return s.fleet }

// registerHosts registers every host of the fleet that the control plane
// does not know and writes its agent token; a known host whose token file
// is missing gets a new token.
func (s *Stack) registerHosts(ctx context.Context) error {
	dir := s.cfg.ControlPlane.DataDir
	if err := mkdir0711(filepath.Join(dir, AgentsDir)); err != nil {
		return err
	}
	op, err := s.Client(controlplane.AdminTokenFile)
	if err != nil {
		return err
	}
	known, err := op.ListHosts(ctx)
	if err != nil {
		return fmt.Errorf("list hosts: %w", err)
	}
	if err := s.recordFleet(); err != nil {
		return err
	}
	have := map[string]bool{}
	for _, h := range known {
		have[h.Name] = true
	}
	for _, h := range s.fleet {
		path := filepath.Join(dir, TokenFile(h.Name))
		_, statErr := os.Stat(path)
		var secret string
		switch {
		case !have[h.Name]:
			out, err := op.CreateHost(ctx, apitype.HostCreate{Name: h.Name, Region: h.Region, AZ: h.AZ})
			if err != nil {
				return fmt.Errorf("register host %s: %w", h.Name, err)
			}
			secret = out.AgentToken.Secret
			if h.Name == LegacyHost {
				if _, err := op.DrainHost(ctx, h.Name); err != nil {
					return fmt.Errorf("drain host %s: %w", h.Name, err)
				}
			}
		case statErr != nil:
			t, err := op.CreateAgentToken(ctx, h.Name, "")
			if err != nil {
				return fmt.Errorf("agent token of host %s: %w", h.Name, err)
			}
			secret = t.Secret
		default:
			continue
		}
		if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("write the agent token of host %s: %w", h.Name, err)
		}
	}
	return nil
}

// superviseAgent runs host h's agent process until ctx ends, restarting it
// when it exits, except while the simulator holds the host failed (see
// Faults); then it stops the agent (SIGTERM; its nodes keep running).
func (s *Stack) superviseAgent(ctx context.Context, h FleetHost, apiURL string) error {
	dir := s.cfg.ControlPlane.DataDir
	log := s.cfg.ControlPlane.Logger.With("component", "fleet", "host", h.Name)
	for ctx.Err() == nil {
		if f, err := ReadFaults(dir); err == nil && f.IsFailed(h.Name) {
			sleepCtx(ctx, faultPoll)
			continue
		}
		cmd, err := s.agentCommand(h, apiURL)
		if err != nil {
			return err
		}
		if err := startAgent(cmd); err != nil {
			return fmt.Errorf("start the agent of host %s: %w", h.Name, err)
		}
		if err := s.recordAgent(h.Name, cmd.Process.Pid); err != nil {
			log.Error("record agent pid", "err", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-ctx.Done():
			stopProcess(cmd.Process.Pid, exited, agentStopTimeout)
			return nil
		case err := <-exited:
			if f, ferr := ReadFaults(dir); ferr == nil && f.IsFailed(h.Name) {
				log.Info("agent stopped: host failed by the simulator")
				continue
			}
			log.Warn("agent exited; restarting", "err", err, "log", filepath.Join(dir, AgentsDir, h.Name+".log"))
			sleepCtx(ctx, time.Second)
		}
	}
	return nil
}

// Timings of the fleet's supervision.
const (
	faultPoll        = 200 * time.Millisecond
	agentStopTimeout = 10 * time.Second
)

// agentCommand is host h's agent process: this stack's moat binary as
// `moat agent` reaching the API at apiURL (its hostLink), its output
// appended to agents/<host>.log.
func (s *Stack) agentCommand(h FleetHost, apiURL string) (*exec.Cmd, error) {
	dir := s.cfg.ControlPlane.DataDir
	bin := s.cfg.MoatBinary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	args := []string{"moat", "agent", "--server", apiURL, "--host", h.Name,
		"--token-file", filepath.Join(dir, TokenFile(h.Name)), "--ca", filepath.Join(dir, controlplane.APICAFile),
		"--data-dir", AgentDir(dir, h.Name), "--log-level", s.cfg.AgentLogLevel, "--moat-binary", bin}
	if s.cfg.VolumeSize > 0 {
		args = append(args, "--volume-gib", strconv.FormatInt(max(1, s.cfg.VolumeSize>>30), 10))
	}
	if s.cfg.NoSync {
		args = append(args, "--no-sync")
	}
	if OpsListen != "" {
		args = append(args, "--ops-listen", OpsListen)
	}
	if addr := s.agentMetrics[h.Name]; addr != "" {
		args = append(args, "--metrics-listen", addr)
		if s.cfg.ControlPlane.MetricsPublic {
			args = append(args, "--metrics-public")
		}
	}
	if s.cfg.StatsInterval > 0 {
		args = append(args, "--stats-interval", s.cfg.StatsInterval.String())
	}
	logf, err := os.OpenFile(filepath.Join(dir, AgentsDir, h.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: bin, Args: args, Stdout: logf, Stderr: logf,
		// Its own process group: a terminal's Ctrl-C reaches moat up,
		// which stops its agents itself.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	return cmd, nil
}

// startAgent starts cmd; the parent's copy of its log file closes.
func startAgent(cmd *exec.Cmd) error {
	err := cmd.Start()
	if f, ok := cmd.Stdout.(*os.File); ok {
		f.Close()
	}
	return err
}

// recordAgent notes host's agent pid in the stack record.
func (s *Stack) recordAgent(host string, pid int) error {
	s.recordMu.Lock()
	defer s.recordMu.Unlock()
	dir := s.cfg.ControlPlane.DataDir
	r, err := ReadRecord(dir)
	if err != nil {
		return err
	}
	if r.Agents == nil {
		r.Agents = map[string]int{}
	}
	r.Agents[host] = pid
	return putRecord(dir, r)
}

// recordFleet notes the fleet's hosts in the stack record.
func (s *Stack) recordFleet() error {
	s.recordMu.Lock()
	defer s.recordMu.Unlock()
	dir := s.cfg.ControlPlane.DataDir
	r, err := ReadRecord(dir)
	if err != nil {
		return err
	}
	r.Hosts = s.fleet
	return putRecord(dir, r)
}

// stopAgents stops the agent processes dataDir's record names that are
// still running (a previous moat up killed without stopping them), and
// reports how many it stopped.
func stopAgents(ctx context.Context, dataDir string, timeout time.Duration) int {
	r, err := ReadRecord(dataDir)
	if err != nil {
		return 0
	}
	n := 0
	for host, pid := range r.Agents {
		if !isAgent(pid, host) {
			continue
		}
		syscall.Kill(pid, syscall.SIGTERM)
		if WaitGone(ctx, pid, timeout) != nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		n++
	}
	return n
}

// isAgent reports whether process pid is the agent of host (a recorded
// pid may have been reused by another process).
func isAgent(pid int, host string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	return len(args) > 4 && args[1] == "agent" && strings.Contains("\x00"+string(b), "\x00--host\x00"+host+"\x00")
}

// AgentPID returns the pid of host's running agent per dataDir's record,
// or 0.
func AgentPID(dataDir, host string) int {
	r, err := ReadRecord(dataDir)
	if err != nil || !isAgent(r.Agents[host], host) {
		return 0
	}
	return r.Agents[host]
}

// stopProcess asks pid to stop (SIGTERM), and kills it after timeout;
// exited receives its end.
func stopProcess(pid int, exited <-chan error, timeout time.Duration) {
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
}

// waitFleet waits until every host of the fleet heartbeat after since
// (its agent runs and reaches the control plane), but those the simulator
// failed or partitioned (FaultsFile): a stack restarted with a failed host
// is ready without it.
func (s *Stack) waitFleet(ctx context.Context, op *client.Client, since time.Time) error {
	for {
		hosts, err := op.ListHosts(ctx)
		var faults Faults
		if err == nil {
			faults, err = ReadFaults(s.cfg.ControlPlane.DataDir)
		}
		if err == nil && len(notReady(s.fleet, hosts, faults, since)) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// notReady names the hosts of fleet that have not heartbeat since since
// (or are down) among hosts as the API lists them, but those faults
// fail or partition.
func notReady(fleet []FleetHost, hosts []apitype.Host, faults Faults, since time.Time) []string {
	beat := map[string]bool{}
	for _, h := range hosts {
		if !h.LastHeartbeatAt.Before(since) && h.State != domain.StateDown {
			beat[h.Name] = true
		}
	}
	var out []string
	for _, h := range fleet {
		if !beat[h.Name] && !faults.IsFailed(h.Name) && !faults.IsPartitioned(h.Name) {
			out = append(out, h.Name)
		}
	}
	return out
}

// WaitReady waits until the stack's control plane runs and every host of
// its fleet has heartbeat since Run started.
func (s *Stack) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the fleet's agents: %w", ctx.Err())
	}
}

func mkdir0711(dir string) error {
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Chmod(dir, 0o711)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// MetricsURL is one Prometheus endpoint of the stack.
type MetricsURL struct {
	What string // "control plane" or "agent HOST"
	URL  string
}

// MetricsURLs lists the stack's metrics endpoints: the control plane's
// (when it serves them) and each agent's (with Config.AgentMetricsListen).
func (s *Stack) MetricsURLs() []MetricsURL {
	var out []MetricsURL
	if u := s.CP.MetricsURL(); u != "" {
		out = append(out, MetricsURL{What: "control plane", URL: u})
	}
	for _, h := range s.fleet {
		if u := s.AgentMetricsURL(h.Name); u != "" {
			out = append(out, MetricsURL{What: "agent " + h.Name, URL: u})
		}
	}
	return out
}

// AgentMetricsURL is where host's agent serves its metrics ("" when it
// does not).
func (s *Stack) AgentMetricsURL(host string) string {
	if addr := s.agentMetrics[host]; addr != "" {
		return "http://" + addr + "/metrics"
	}
	return ""
}

// agentMetricsAddrs gives each agent of fleet its metrics address from
// listen (HOST:PORT): ports PORT, PORT+1, ... in fleet order, or, for port
// 0, a port free now on HOST for each. An empty listen serves none.
func agentMetricsAddrs(listen string, fleet []FleetHost) (map[string]string, error) {
	if listen == "" {
		return nil, nil
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("agent metrics address %q: %w (give HOST:PORT, e.g. 127.0.0.1:9101)", listen, err)
	}
	base, err := strconv.Atoi(portStr)
	if err != nil || base < 0 || base+len(fleet) > 65535 {
		return nil, fmt.Errorf("agent metrics address %q: the port must leave room for %d agents (give HOST:PORT, e.g. 127.0.0.1:9101)", listen, len(fleet))
	}
	out := make(map[string]string, len(fleet))
	for i, h := range fleet {
		port := base + i
		if base == 0 {
			if port, err = freePort(host); err != nil {
				return nil, err
			}
		}
		out[h.Name] = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return out, nil
}

// freePort is a TCP port free on host now (the agent binds it a moment
// later; a race with another process is possible and fails the agent's
// start loudly).
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port for an agent's metrics: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
