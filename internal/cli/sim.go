//go:build linux

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/sim"
	"github.com/moatdb/moat/internal/up"
)

// defaultLocalCloudPrefix names the namespaces of `moat up`'s local cloud.
const defaultLocalCloudPrefix = "moat-"

// lastUpFile remembers the data directory of the last `moat up`, so that
// the commands that read the simulator need no --data-dir.
const lastUpFile = localcloud.DefaultLockDir + "/up-data-dir"

// resolveDataDir returns the data directory of moat up a command works on:
// flag when given, else MOAT_DATA_DIR, else the one the last moat up on
// this machine used, else DefaultDataDir.
func (a *app) resolveDataDir(flag string) string {
	if flag != "" {
		return flag
	}
	if d := a.getenv("MOAT_DATA_DIR"); d != "" {
		return d
	}
	path := a.lastUpPath
	if path == "" {
		path = lastUpFile
	}
	if b, err := os.ReadFile(path); err == nil {
		if d := strings.TrimSpace(string(b)); d != "" {
			return d
		}
	}
	return DefaultDataDir
}

// openLocalCloud returns the local cloud of the `moat up` of dataDir: its
// namespaces' prefix is the one the data directory's record names (see
// up.Record), else MOAT_LOCALCLOUD_PREFIX (read with getenv), else moat-.
// It creates nothing.
func openLocalCloud(getenv func(string) string, dataDir string) (*localcloud.Cloud, error) {
	prefix := defaultLocalCloudPrefix
	if p := getenv("MOAT_LOCALCLOUD_PREFIX"); p != "" {
		prefix = p
	}
	if r, err := up.ReadRecord(dataDir); err == nil {
		prefix = r.Prefix
	}
	c, err := localcloud.New(localcloud.Config{Prefix: prefix})
	if err != nil {
		return nil, withHint(err, "unset MOAT_LOCALCLOUD_PREFIX")
	}
	return c, nil
}

// simDir is where the simulator keeps its state in a data directory.
func simDir(dataDir string) string { return filepath.Join(dataDir, "sim") }

// openSim returns the simulated customer cloud of the `moat up` whose data
// directory is dataDir, and the local cloud it stands on (see
// openLocalCloud). dataDir must exist; the simulator's state directory in
// it is created if missing. It creates nothing in the kernel.
func openSim(getenv func(string) string, dataDir string) (*sim.Sim, *localcloud.Cloud, error) {
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, nil, withHint(fmt.Errorf("data directory of moat up: %w", err), "start moat up first, or pass the --data-dir it uses (or set MOAT_DATA_DIR)")
	}
	cloud, err := openLocalCloud(getenv, dataDir)
	if err != nil {
		return nil, nil, err
	}
	sm, err := sim.Open(sim.Config{Cloud: cloud, Dir: simDir(dataDir)})
	if err != nil {
		return nil, nil, err
	}
	return sm, cloud, nil
}

// needRoot fails unless the process runs as root.
func (a *app) needRoot(what string) error {
	if a.euid() != 0 {
		return withHint(fmt.Errorf("%s needs root: the simulated cloud is network namespaces on this machine", what), "run it as root (sudo), on the machine of moat up")
	}
	return nil
}

// simHost is a simulated host as `moat sim` prints it.
type simHost struct {
	Name      string    `json:"name"`
	Network   string    `json:"network"`
	Address   string    `json:"address"`
	Namespace string    `json:"namespace"`
	Created   time.Time `json:"created"`
}

func simHostOut(h sim.Host) simHost {
	out := simHost{Name: h.Name, Network: h.Network, Namespace: h.NS, Created: h.Created}
	if h.Addr.IsValid() {
		out.Address = h.Addr.String()
	}
	return out
}

// simCmd is `moat sim`: one subcommand group per kind of object of the
// simulated customer cloud (hosts here; accounts, VPCs, the peering inbox,
// routes, security groups and the clock in sim_cloud.go), each built by a
// func like simHostCmd that is given run, which wraps a command's body with
// the root check and the simulator of --data-dir.
func (a *app) simCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "The simulated customer cloud of moat up: accounts, VPCs, hosts, peering inbox (local, needs root)",
		Long: `The simulated customer cloud of moat up, on this machine, made of network
namespaces: hosts on the simulated internet, and customer (AWS) accounts
with VPCs, hosts in them, a peering inbox, route tables and security-group
egress rules, to connect to services from; and the clock peering requests
expire by. These commands work on the local machine, not through the API,
and need root. Failure injection into moat up's fleet: moat sim fail host|az,
moat sim partition host, moat sim recover.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", dataDirUsage)
	// run wraps a subcommand's body: root check, then the simulator.
	run := func(fn func(cmd *cobra.Command, sm *sim.Sim, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if err := a.needRoot("moat sim"); err != nil {
				return err
			}
			sm, _, err := openSim(a.getenv, a.resolveDataDir(dataDir))
			if err != nil {
				return err
			}
			return fn(cmd, sm, args)
		}
	}
	cmd.AddCommand(
		a.simAccountCmd(run),
		a.simVPCCmd(run),
		a.simHostCmd(run),
		a.simPeeringCmd(run),
		a.simRouteCmd(run),
		a.simSGCmd(run),
		a.simClockCmd(run),
		&cobra.Command{
			Use:   "exec HOST -- CMD [ARGS...]",
			Short: "Run a command on a simulated host; its streams and exit code are passed through",
			Example: `  moat sim exec laptop -- ip -4 addr
  moat sim exec laptop -- psql "host=... sslmode=verify-full ..."`,
			Args: dashArgs("HOST", 1),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				return a.execOn(cmd.Context(), sm, args[0], args[1:])
			}),
		},
	)
	cmd.AddCommand(a.simFaultCmds(func() string { return a.resolveDataDir(dataDir) })...)
	return cmd
}

// simRunFunc opens the simulator for a subcommand's body.
type simRunFunc = func(func(cmd *cobra.Command, sm *sim.Sim, args []string) error) func(*cobra.Command, []string) error

func (a *app) simHostCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Simulated hosts"}
	var internet bool
	var vpc string
	create := &cobra.Command{
		Use:   "create NAME (--internet | --vpc V)",
		Short: "Create a host on the simulated internet (an address from 198.19.0.0/16) or in a customer VPC; an existing one is kept",
		Example: `  moat sim host create laptop --internet
  moat sim host create app --vpc vpc-0123456789abcdef0`,
		Args: args(cobra.ExactArgs(1)),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if internet == (vpc != "") {
				return &usageError{err: errors.New("say which network the host is on: --internet or --vpc V, exactly one"), cmd: cmd.CommandPath()}
			}
			return nil
		},
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
			var h sim.Host
			var err error
			if internet {
				h, err = sm.CreateInternetHost(cmd.Context(), args[0])
			} else {
				h, err = sm.CreateHost(cmd.Context(), args[0], vpc)
			}
			if err != nil {
				return simHints{
					notFound: "check --vpc: " + hintVPCs,
					exists:   "choose another name, or delete it first: moat sim host delete " + args[0],
				}.wrap(err)
			}
			return a.print(simHostOut(h))
		}),
	}
	create.Flags().BoolVar(&internet, "internet", false, "put the host on the simulated internet")
	create.Flags().StringVar(&vpc, "vpc", "", "put the host in this customer VPC (vpc-…)")
	cmd.AddCommand(
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the simulated hosts",
			Args:  args(cobra.NoArgs),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
				hs, err := sm.ListHosts(cmd.Context())
				if err != nil {
					return err
				}
				out := make([]simHost, len(hs))
				for i, h := range hs {
					out[i] = simHostOut(h)
				}
				return a.print(out)
			}),
		},
		&cobra.Command{
			Use:   "delete NAME",
			Short: "Delete a simulated host and its namespace",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				h, err := sm.Host(cmd.Context(), args[0])
				if err == nil {
					err = sm.DeleteHost(cmd.Context(), args[0])
				}
				if err != nil {
					return simHints{notFound: hintHosts}.wrap(err)
				}
				return a.print(simHostOut(h))
			}),
		},
	)
	return cmd
}
