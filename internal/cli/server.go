package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
)

// DefaultDataDir is where `moat up` and `moat server` keep their state.
const DefaultDataDir = "/var/lib/moat"

// pidFile marks a running `moat up` in its data directory.
const pidFile = "moat-up.pid"

// serverCommands returns the daemon commands: server, up, down.
func serverCommands() []*cobra.Command {
	return []*cobra.Command{serverCmd(), upCmd(), downCmd()}
}

type daemonFlags struct {
	dataDir  string
	listen   string
	storeDSN string
	domain   string
	regions  string
	maxAllow int
	logLevel string
}

func (f *daemonFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.dataDir, "data-dir", DefaultDataDir, "directory for the master key, API CA, operator token and embedded store")
	c.Flags().StringVar(&f.listen, "listen", "127.0.0.1:8443", "HOST:PORT of the HTTPS API")
	c.Flags().StringVar(&f.domain, "domain", "moat.test", "DNS domain services are published under")
	c.Flags().StringVar(&f.regions, "regions", "", "supported regions as CODE:AZ,AZ;CODE:AZ,... (default us-east-1 and eu-west-1 with AZs a, b, c)")
	c.Flags().IntVar(&f.maxAllow, "max-allowlist", domain.DefaultMaxAllowEntries, "maximum entries in a service allowlist")
	c.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
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
	return controlplane.Config{
		DataDir:         dir,
		Listen:          f.listen,
		StoreDSN:        f.storeDSN,
		Domain:          f.domain,
		Catalog:         cat,
		MaxAllowEntries: f.maxAllow,
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
			fmt.Fprintf(cmd.OutOrStdout(), "moat server: API at %s (CA %s)\n", cp.URL(), filepath.Join(cfg.DataDir, controlplane.APICAFile))
			return cp.Run(cmd.Context())
		},
	}
	f.register(c)
	c.Flags().StringVar(&f.storeDSN, "store", "", "PostgreSQL DSN for a shared store (postgres://...); default: SQLite in the data directory")
	return c
}

func upCmd() *cobra.Command {
	var f daemonFlags
	c := &cobra.Command{
		Use:   "up",
		Short: "Run everything on this machine: control plane on an embedded store",
		Long: "moat up runs the control plane with its embedded SQLite store in --data-dir and\n" +
			"prints how to point the CLI at it. It runs until interrupted; `moat down` stops it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				return fmt.Errorf("create data directory: %w", err)
			}
			pidPath := filepath.Join(cfg.DataDir, pidFile)
			if pid, alive := readPid(pidPath); alive {
				return withHint(fmt.Errorf("moat up is already running in %s (pid %d)", cfg.DataDir, pid), "run `moat down --data-dir "+cfg.DataDir+"` first, or use another --data-dir")
			}
			cp, err := controlplane.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := cp.Listen(); err != nil {
				return err
			}
			if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
				return fmt.Errorf("write pid file: %w", err)
			}
			defer os.Remove(pidPath)
			printUp(cmd.OutOrStdout(), cp.URL(), cfg.DataDir)
			return cp.Run(cmd.Context())
		},
	}
	f.register(c)
	return c
}

func printUp(w io.Writer, url, dir string) {
	ca := filepath.Join(dir, controlplane.APICAFile)
	tok := filepath.Join(dir, controlplane.AdminTokenFile)
	fmt.Fprintf(w, `Moat is up.
  API:             %s
  API CA:          %s
  operator token:  %s

Point the CLI at it (in another shell):
  export MOAT_URL=%s MOAT_CA=%s MOAT_TOKEN=$(cat %s)
  moat project create demo
  moat region list

Stop it with Ctrl-C or: moat down --data-dir %s
`, url, ca, tok, url, ca, tok, dir)
}

func downCmd() *cobra.Command {
	var dataDir string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "down",
		Short: "Stop what `moat up` started in a data directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pidPath := filepath.Join(dataDir, pidFile)
			pid, alive := readPid(pidPath)
			if !alive {
				os.Remove(pidPath)
				fmt.Fprintf(cmd.OutOrStdout(), "nothing running in %s\n", dataDir)
				return nil
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop pid %d: %w", pid, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for {
				if syscall.Kill(pid, 0) != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "stopped moat up (pid %d)\n", pid)
					return nil
				}
				select {
				case <-ctx.Done():
					return withHint(fmt.Errorf("moat up (pid %d) did not stop within %s", pid, timeout), fmt.Sprintf("kill it with: kill -9 %d", pid))
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the data directory `moat up` used")
	c.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for it to stop")
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
