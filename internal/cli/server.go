//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/agent"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/console"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// pidFile marks a running `moat up` in its data directory.
const pidFile = "moat-up.pid"

// serverCommands returns the daemon commands: server, agent, up, down.
func serverCommands() []*cobra.Command {
	return []*cobra.Command{serverCmd(), agentCmd(), upCmd(), downCmd()}
}

func agentCmd() *cobra.Command {
	var url, tokenFile, caFile, host, dataDir, logLevel, metricsListen, opsListen, moatBinary string
	var volumeGiB int64
	var metricsPublic, noSync bool
	var statsInterval, heartbeat time.Duration
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: PostgreSQL, pg_hba and firewall of this host's nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return withHint(errors.New("moat agent needs root (network namespaces, nftables, each node's PostgreSQL as its own user)"), "run it as root")
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return withHint(usageErrorf("--log-level %q is not a level", logLevel), "use debug, info, warn or error")
			}
			if host == "" {
				return withHint(usageErrorf("--host is required"), "give the name the host was registered with (moat host list)")
			}
			if heartbeat < 0 {
				return withHint(usageErrorf("--heartbeat-interval %s is negative", heartbeat), "give 0 (the control plane's, 500ms by default) or a duration under the control plane's --lease")
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return withHint(fmt.Errorf("read agent token: %w", err), "register the host with an operator token (moat host add NAME --region R --az AZ --token-out F), or make a new token (moat host token create --host NAME), and pass --token-file F")
			}
			cl, err := client.New(client.Config{URL: url, Token: strings.TrimSpace(string(tok)), CAFile: caFile})
			if err != nil {
				return err
			}
			ag, err := agent.New(agent.Config{Host: host, Source: agent.APISource{Client: cl}, DataDir: dataDir, VolumeSize: volumeGiB << 30, OpsListen: opsListen,
				MetricsListen: metricsListen, MetricsPublic: metricsPublic, StatsInterval: statsInterval, NoSync: noSync, MoatBinary: moatBinary, HeartbeatEvery: heartbeat,
				Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))})
			if err != nil {
				return err
			}
			return ag.Run(cmd.Context())
		},
	}
	c.Flags().StringVar(&url, "server", "https://127.0.0.1:8443", "the control plane's API URL")
	c.Flags().StringVar(&url, "url", "https://127.0.0.1:8443", "the control plane's API URL")
	c.Flags().MarkDeprecated("url", "use --server")
	c.Flags().StringVar(&moatBinary, "moat-binary", "", "the moat binary PostgreSQL runs to archive and restore WAL (default: this executable)")
	c.Flags().BoolVar(&noSync, "no-sync", false, "skip fsync (tests only: a crash may lose the nodes' data)")
	c.Flags().MarkHidden("no-sync")
	c.Flags().DurationVar(&statsInterval, "stats-interval", 0, "how often the nodes' PostgreSQL statistics are read for the tenants' metrics (default 15s)")
	c.Flags().MarkHidden("stats-interval")
	c.Flags().DurationVar(&heartbeat, "heartbeat-interval", 0, "how often to report when nothing changed (0: what the control plane asks, its --heartbeat-interval)")
	c.Flags().StringVar(&tokenFile, "token-file", filepath.Join(DefaultDataDir, controlplane.AgentTokenFile), "file holding the agent token")
	c.Flags().StringVar(&caFile, "ca", filepath.Join(DefaultDataDir, controlplane.APICAFile), "the API's CA certificate")
	c.Flags().StringVar(&host, "host", "", "this host's name, as registered (moat host add NAME); nodes are placed on hosts by name")
	c.Flags().StringVar(&dataDir, "data-dir", filepath.Join(DefaultDataDir, "agent"), "where the nodes' data lives")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	c.Flags().StringVar(&opsListen, "ops-listen", up.OpsListen, "the IP address on the operator path where the nodes' operator SSH endpoints listen, one port each (\"\": none)")
	c.Flags().Int64Var(&volumeGiB, "volume-gib", 0, "put each node's data on its own encrypted volume of this many GiB (10 is a good size; 0: unencrypted, in the node's directory)")
	c.Flags().StringVar(&metricsListen, "metrics-listen", "", "HOST:PORT to serve the agent's Prometheus metrics on, plain HTTP at /metrics (default: off; loopback only unless --metrics-public)")
	c.Flags().BoolVar(&metricsPublic, "metrics-public", false, "allow --metrics-listen on a non-loopback address (the metrics are unauthenticated)")
	return c
}

type daemonFlags struct {
	dataDir  string
	listen   string
	storeDSN string
	domain   string
	regions  string
	maxAllow int
	logLevel string

	backupDir      string
	backupInterval time.Duration
	backupKeep     int
	backupKeepAge  time.Duration

	metricsListen string
	metricsPublic bool

	// Detection and fencing (domain.FailoverPolicy).
	heartbeat, hostTimeout, lease, leaseMargin, grace time.Duration
}

func (f *daemonFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.dataDir, "data-dir", DefaultDataDir, "directory for the master key, API CA, operator token and embedded store (moat up: MOAT_DATA_DIR when set)")
	c.Flags().StringVar(&f.listen, "listen", "127.0.0.1:8443", "HOST:PORT of the HTTPS API")
	c.Flags().StringVar(&f.domain, "domain", "moat.test", "DNS domain services are published under")
	c.Flags().StringVar(&f.regions, "regions", "", "supported regions as CODE:AZ,AZ;CODE:AZ,... (default us-east-1 and eu-west-1 with AZs a, b, c)")
	c.Flags().IntVar(&f.maxAllow, "max-allowlist", domain.DefaultMaxAllowEntries, "maximum entries in a service allowlist")
	c.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	c.Flags().StringVar(&f.backupDir, "backup-dir", "", "the backup store, a directory the control plane and the agents alone open (default DATA-DIR/backups; - turns backups off)")
	c.Flags().DurationVar(&f.backupInterval, "backup-interval", 24*time.Hour, "take a base backup of a service when its newest is this old (0: only on request)")
	c.Flags().IntVar(&f.backupKeep, "backup-keep", 7, "keep at least this many base backups per service")
	c.Flags().DurationVar(&f.backupKeepAge, "backup-keep-age", 0, "also keep every base backup younger than this")
	c.Flags().StringVar(&f.metricsListen, "metrics-listen", "", "HOST:PORT to serve the control plane's Prometheus metrics on, plain HTTP at /metrics (default: off; loopback only unless --metrics-public)")
	c.Flags().BoolVar(&f.metricsPublic, "metrics-public", false, "allow --metrics-listen on a non-loopback address (the metrics are unauthenticated)")
	d := domain.DefaultFailoverPolicy()
	c.Flags().DurationVar(&f.heartbeat, "heartbeat-interval", d.HeartbeatInterval, "how often agents report when nothing changed (sent to them in the desired state)")
	c.Flags().DurationVar(&f.hostTimeout, "host-timeout", d.HostTimeout, "a host whose agent has not reported for this long is down: its primaries fail over (longer than --lease + --lease-margin)")
	c.Flags().DurationVar(&f.lease, "lease", d.Lease, "an agent that has not reached the control plane for this long closes its primaries' firewalls (at least three heartbeats)")
	c.Flags().DurationVar(&f.leaseMargin, "lease-margin", d.LeaseMargin, "how long after the lease the control plane counts a silent host's primaries fenced")
	c.Flags().DurationVar(&f.grace, "failover-grace", d.Grace, "how long an agent may report a node's PostgreSQL down before its service fails over")
}

// timingFlags names the flag of each domain.FailoverPolicy field.
var timingFlags = map[string]string{"heartbeat_interval": "--heartbeat-interval", "host_timeout": "--host-timeout",
	"lease": "--lease", "lease_margin": "--lease-margin", "grace": "--failover-grace"}

// failover returns the detection and fencing timings of the flags,
// checked (domain.FailoverPolicy.Check), an incoherent set an error
// naming the flag to change.
func (f *daemonFlags) failover() (domain.FailoverPolicy, error) {
	p := domain.DefaultFailoverPolicy()
	p.HeartbeatInterval, p.HostTimeout, p.Lease, p.LeaseMargin, p.Grace = f.heartbeat, f.hostTimeout, f.lease, f.leaseMargin, f.grace
	if p.HostTimeout > p.ReportTimeout {
		// A replica's report counts as long as its host's heartbeat.
		p.ReportTimeout = p.HostTimeout
	}
	if err := p.Check(); err != nil {
		e := domain.AsError(err)
		if e == nil {
			return p, err
		}
		flag := timingFlags[e.Field]
		if flag == "" {
			flag = "--host-timeout"
		}
		return p, withHint(usageErrorf("%s: %s", flag, flagText(e.Msg)), flagText(e.Hint))
	}
	return p, nil
}

// timingField matches the field names in domain.FailoverPolicy's errors.
var timingField = regexp.MustCompile(`\b(heartbeat_interval|host_timeout|lease_margin|lease|grace)\b`)

// flagText writes a domain.FailoverPolicy message in flags' names.
func flagText(s string) string {
	return timingField.ReplaceAllStringFunc(s, func(f string) string { return timingFlags[f] })
}

func (f *daemonFlags) config(stderr io.Writer) (controlplane.Config, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return controlplane.Config{}, withHint(usageErrorf("--log-level %q is not a level", f.logLevel), "use debug, info, warn or error")
	}
	cat, err := parseRegions(f.regions)
	if err != nil {
		return controlplane.Config{}, err
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return controlplane.Config{}, err
	}
	interval := f.backupInterval
	switch {
	case interval < 0:
		return controlplane.Config{}, withHint(usageErrorf("--backup-interval %s is negative", interval), "give a duration such as 24h, or 0 for backups on request only")
	case interval == 0:
		interval = -1 // the control plane's "never on schedule"
	}
	if f.backupKeep < 1 {
		return controlplane.Config{}, withHint(usageErrorf("--backup-keep %d: at least one base backup is kept", f.backupKeep), "give 1 or more")
	}
	if f.backupKeepAge < 0 {
		return controlplane.Config{}, withHint(usageErrorf("--backup-keep-age %s is negative", f.backupKeepAge), "give a duration such as 168h, or 0")
	}
	failover, err := f.failover()
	if err != nil {
		return controlplane.Config{}, err
	}
	return controlplane.Config{
		DataDir:         dir,
		Listen:          f.listen,
		StoreDSN:        f.storeDSN,
		Domain:          f.domain,
		Catalog:         cat,
		MaxAllowEntries: f.maxAllow,
		BackupDir:       f.backupDir,
		BackupInterval:  interval,
		BackupKeep:      f.backupKeep,
		BackupKeepAge:   f.backupKeepAge,
		MetricsListen:   f.metricsListen,
		MetricsPublic:   f.metricsPublic,
		Failover:        failover,
		Logger:          slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
	}, nil
}

// parseRegions parses --regions: "us-east-1:us-east-1a,us-east-1b;eu-west-1:...".
func parseRegions(s string) (domain.Catalog, error) {
	if s == "" {
		return domain.DefaultCatalog(), nil
	}
	var cat domain.Catalog
	for _, part := range strings.Split(s, ";") {
		code, azs, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !domain.IsAWSRegion(code) || azs == "" {
			return cat, withHint(usageErrorf("--regions entry %q is not CODE:AZ,AZ,...", part), "write e.g. us-east-1:us-east-1a,us-east-1b,us-east-1c")
		}
		cat.Regions = append(cat.Regions, domain.Region{Code: code, AZs: strings.Split(azs, ",")})
	}
	return cat, nil
}

func serverCmd() *cobra.Command {
	var f daemonFlags
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (API over HTTPS, store, audit)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cp, err := controlplane.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := cp.Listen(); err != nil {
				return err
			}
			printServer(cmd.OutOrStdout(), cp.URL(), cp.OperatorSignInLink(), cfg.DataDir)
			return cp.Run(cmd.Context())
		},
	}
	f.register(c)
	c.Flags().StringVar(&f.storeDSN, "store", "", "PostgreSQL DSN for a shared store (postgres://...); default: SQLite in the data directory")
	return c
}

func upCmd() *cobra.Command {
	var f daemonFlags
	var (
		dnsListen    string
		volumeGiB    int64
		agentMetrics string
		hostsPerAZ   int
		dnsServers   int
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run everything on this machine: control plane, a fleet of hosts, local provider, simulator",
		Long: "moat up runs the control plane on its embedded SQLite store in --data-dir, a\n" +
			"fleet of hosts (--hosts-per-az per AZ of every region, named like us-east-1a-1,\n" +
			"each a separate `moat agent` process with its own token and state directory under\n" +
			"DATA-DIR/agents), the local provider (every node is a network namespace) and the\n" +
			"simulated customer cloud with an internet host named laptop, and prints how to\n" +
			"point the CLI at it. It needs root. It runs until interrupted; nodes keep running\n" +
			"and are reattached by the next `moat up`; `moat down` removes everything.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return withHint(errors.New("moat up needs root: nodes are network namespaces with nftables firewalls, and each node's PostgreSQL runs as its own user"), "run it as root (sudo moat up)")
			}
			if d := os.Getenv("MOAT_DATA_DIR"); d != "" && !cmd.Flags().Changed("data-dir") {
				f.dataDir = d
			}
			cfg, err := f.config(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if dnsServers < 1 || dnsServers > up.MaxDNSServers {
				return withHint(usageErrorf("--dns-servers %d: want 1 to %d DNS server processes", dnsServers, up.MaxDNSServers), fmt.Sprintf("give 1 to %d (default %d)", up.MaxDNSServers, up.DefaultDNSServers))
			}
			if err := installMissing(cmd.Context(), cmd.OutOrStdout()); err != nil {
				return err
			}
			if hostsPerAZ < 1 {
				return withHint(usageErrorf("--hosts-per-az %d: at least one host per AZ", hostsPerAZ), "give 1 or more")
			}
			return runUp(cmd.Context(), cmd.OutOrStdout(), up.Config{ControlPlane: cfg, CloudPrefix: os.Getenv("MOAT_LOCALCLOUD_PREFIX"),
				DNSListen: dnsListen, DNSServers: dnsServers, VolumeSize: volumeGiB << 30, HostsPerAZ: hostsPerAZ, AgentMetricsListen: agentMetrics, AgentLogLevel: f.logLevel})
		},
	}
	f.register(c)
	c.Flags().Int64Var(&volumeGiB, "volume-gib", 10, "size of each node's encrypted volume in GiB (sparse; 0: nodes keep their data in plain directories)")
	c.Flags().StringVar(&agentMetrics, "agent-metrics-listen", "", "HOST:PORT to serve the agent's Prometheus metrics on (default: off; loopback only unless --metrics-public)")
	c.Flags().IntVar(&hostsPerAZ, "hosts-per-az", 1, "hosts (agent processes) per AZ of every region")
	c.Flags().IntVar(&dnsServers, "dns-servers", up.DefaultDNSServers, "DNS server processes answering on the same sockets (names keep resolving when one dies)")
	c.Flags().StringVar(&dnsListen, "dns-listen", "127.0.0.1:8053", "HOST:PORT of the platform DNS server on this host (it also answers on the simulated internet at 198.18.0.1:53)")
	return c
}

// installMissing installs the Debian packages moat up needs and lacks,
// one progress line per package, or says which are missing and how to
// install them.
func installMissing(ctx context.Context, out io.Writer) error {
	missing := up.Missing(false)
	if len(missing) == 0 {
		return nil
	}
	names := strings.Join(up.Names(missing), " ")
	err := up.Install(ctx, &prefixWriter{w: out, prefix: "moat up: "}, missing)
	if errors.Is(err, up.ErrCannotInstall) {
		return withHint(fmt.Errorf("missing on this machine: %s (%w)", names, err), "install them: apt-get install "+names+" (or make deps, as root)")
	}
	if err != nil {
		return withHint(err, "install them yourself: apt-get install "+names)
	}
	if still := up.Missing(false); len(still) > 0 {
		return fmt.Errorf("still missing after installing: %s", strings.Join(up.Names(still), " "))
	}
	return nil
}

// prefixWriter starts every line written to w with prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// runUp runs moat up's components until ctx ends.
func runUp(ctx context.Context, stdout io.Writer, upCfg up.Config) error {
	cfg := upCfg.ControlPlane
	pidPath := filepath.Join(cfg.DataDir, pidFile)
	if pid, alive := readPid(pidPath); alive && pid != os.Getpid() {
		return withHint(fmt.Errorf("moat up is already running in %s (pid %d)", cfg.DataDir, pid), "run `moat down --data-dir "+cfg.DataDir+"` first, or use another --data-dir")
	}
	st, err := up.New(ctx, upCfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	defer os.Remove(pidPath)
	// Remember the data directory for the commands that read the
	// simulator (moat sim, service psql, explain, verify, down).
	err = os.MkdirAll(filepath.Dir(lastUpFile), 0o755)
	if err == nil {
		err = os.WriteFile(lastUpFile, []byte(cfg.DataDir+"\n"), 0o644)
	}
	if err != nil {
		fmt.Fprintf(stdout, "note: could not remember the data directory (%v): pass --data-dir or set MOAT_DATA_DIR\n", err)
	}
	// A one-time link signs the operator into the console: a code that
	// stands for the operator token once, for a short time (the token
	// never goes in a URL).
	go func() {
		if st.WaitReady(ctx) == nil {
			printUp(stdout, st.CP.URL(), st.CP.OperatorSignInLink(), cfg.DataDir, st.Laptop.Addr.String(), st.DNSAddr, st.Hosts(), st.MetricsURLs())
		}
	}()
	return st.Run(ctx)
}

// printServer tells the operator where moat server answers and how to
// sign in to its console.
func printServer(w io.Writer, url, link, dir string) {
	fmt.Fprintf(w, "moat server: API at %s (CA %s)\n  console:         %s/console/\n", url, filepath.Join(dir, controlplane.APICAFile), url)
	printLink(w, link)
}

// printLink prints a one-time operator sign-in link ("" prints nothing).
func printLink(w io.Writer, link string) {
	if link != "" {
		fmt.Fprintf(w, "  sign in:         %s\n                   (as the operator, once, within %d minutes; then with the operator token, or a new link: moat console link)\n",
			link, int(console.DefaultLinkTTL.Minutes()))
	}
}

func printUp(w io.Writer, url, link, dir, laptop, dnsAddr string, hosts []up.FleetHost, metricsURLs []up.MetricsURL) {
	ca := filepath.Join(dir, controlplane.APICAFile)
	tok := filepath.Join(dir, controlplane.AdminTokenFile)
	fmt.Fprintf(w, "Moat is up.\n  console:         %s/console/\n", url)
	printLink(w, link)
	fmt.Fprintf(w, `  API:             %s
  API CA:          %s
  operator token:  %s
  hosts:           %d agents (%s ... %s; moat host list), logs in %s

Point the CLI at it (in another shell):
  export MOAT_URL=%s MOAT_CA=%s MOAT_TOKEN=$(cat %s)
  export MOAT_PROJECT=$(moat project create demo -o id)
  export SVC=$(moat service create --name db --region us-east-1 --wait -o id)   # open to the internet until its allowlist is set
  moat service psql $SVC -- -c 'select version()'

The simulated internet host "laptop" (%s) runs psql; moat sim host list shows the others.
The moat sim, service psql, explain and verify commands use this data directory
(or MOAT_DATA_DIR, or --data-dir).
Service names resolve through the platform DNS server (on this host: %s).
Stop it with Ctrl-C (nodes keep running and are reattached), or remove everything:
  moat down --data-dir %s
`, url, ca, tok, len(hosts), hosts[0].Name, hosts[len(hosts)-1].Name, filepath.Join(dir, up.AgentsDir), url, ca, tok, laptop, dnsAddr, dir)
	for _, m := range metricsURLs {
		fmt.Fprintf(w, "Prometheus metrics (%s): %s\n", m.What, m.URL)
	}
}

func downCmd() *cobra.Command {
	var dataDir, prefix string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "down",
		Short: "Stop the `moat up` of a data directory and remove the namespaces, processes and firewalls it created",
		Long: `Stop the moat up of a data directory and remove what its stack created: its
node PostgreSQL processes and the namespaces (with their firewalls) of the
prefix its data directory records. Another data directory's stack is never
touched; a data directory that records no stack removes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			dataDir := dataDir
			if dataDir == "" {
				dataDir = first(os.Getenv("MOAT_DATA_DIR"), DefaultDataDir)
			}
			pidPath := filepath.Join(dataDir, pidFile)
			if pid, alive := readPid(pidPath); alive {
				if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
					return fmt.Errorf("stop pid %d: %w", pid, err)
				}
				if err := up.WaitGone(cmd.Context(), pid, timeout); err != nil {
					return withHint(err, fmt.Sprintf("kill it with: kill -9 %d", pid))
				}
				fmt.Fprintf(out, "stopped moat up (pid %d)\n", pid)
			}
			os.Remove(pidPath)
			if os.Geteuid() != 0 {
				return withHint(errors.New("removing network namespaces needs root"), "run moat down as root")
			}
			if prefix == "" {
				r, err := up.ReadRecord(dataDir)
				if errors.Is(err, up.ErrNoStack) {
					fmt.Fprintf(out, "no stack of moat up in %s: nothing removed\n", dataDir)
					return nil
				}
				if err != nil {
					return err
				}
				prefix = r.Prefix
			}
			n, err := up.Down(cmd.Context(), dataDir, prefix, timeout)
			if n > 0 {
				fmt.Fprintf(out, "stopped %d PostgreSQL node(s)\n", n)
			}
			if err != nil {
				return err
			}
			if b, err := os.ReadFile(lastUpFile); err == nil && strings.TrimSpace(string(b)) == dataDir {
				os.Remove(lastUpFile)
			}
			fmt.Fprintf(out, "removed the namespaces (and their firewalls) of %s*\n", prefix)
			return nil
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", "", "the data directory moat up used (default: MOAT_DATA_DIR, else "+DefaultDataDir+")")
	c.Flags().StringVar(&prefix, "prefix", "", "remove the namespaces of this prefix (moat- or moat-TAG-) whatever the data directory records: for a stack whose data directory is gone")
	c.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for processes to stop")
	return c
}

// readPid returns the pid in path and whether that process is alive.
func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	err = syscall.Kill(pid, 0)
	return pid, err == nil || errors.Is(err, syscall.EPERM)
}
