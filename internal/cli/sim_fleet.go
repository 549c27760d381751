//go:build linux

package cli

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/up"
)

// Failure injection into moat up's fleet (moat sim fail, partition,
// recover): a test and demo harness like the rest of moat sim. The faults
// live in the stack's data directory (up.FaultsFile), so moat up's
// supervisor keeps a failed host's agent down until moat sim recover.

// simFault is what a fault command did.
type simFault struct {
	Action string   `json:"action"`
	Hosts  []string `json:"hosts"`
	Nodes  []string `json:"nodes,omitempty"`
}

// simFaultRows writes a fault as lines.
func simFaultRows(w io.Writer, f simFault) {
	row(w, "ACTION", "HOSTS", "NODES")
	row(w, f.Action, dash(strings.Join(f.Hosts, ",")), dash(strings.Join(f.Nodes, ",")))
}

// simFaultCmds are moat sim fail, partition and recover on the data
// directory dir returns.
func (a *app) simFaultCmds(dir func() string) []*cobra.Command {
	run := func(fn func(ctx context.Context, dataDir string, args []string) (simFault, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if err := a.needRoot("moat sim"); err != nil {
				return err
			}
			f, err := fn(cmd.Context(), dir(), args)
			if err != nil {
				return withHint(err, "moat host list shows the hosts and their AZs")
			}
			return a.print(f)
		}
	}
	fail := &cobra.Command{Use: "fail", Short: "Fail a host or a whole AZ of moat up's fleet (kill its agent and PostgreSQL, cut its links)"}
	fail.AddCommand(
		&cobra.Command{
			Use:   "host NAME",
			Short: "Fail a host: kill its agent (kept down) and its nodes' PostgreSQL, cut its nodes' links",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(ctx context.Context, dataDir string, args []string) (simFault, error) {
				nodes, err := up.FailHost(ctx, dataDir, args[0])
				return simFault{Action: "failed", Hosts: args, Nodes: nodes}, err
			}),
		},
		&cobra.Command{
			Use:   "az AZ",
			Short: "Fail every host of an AZ (as moat sim fail host)",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(ctx context.Context, dataDir string, args []string) (simFault, error) {
				hosts, err := up.FailAZ(ctx, dataDir, args[0])
				return simFault{Action: "failed", Hosts: hosts}, err
			}),
		},
	)
	partition := &cobra.Command{Use: "partition", Short: "Cut a host off the network, its processes left running"}
	partition.AddCommand(&cobra.Command{
		Use:   "host NAME",
		Short: "Partition a host: cut its nodes' links and its agent's link to the control plane; everything keeps running",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(ctx context.Context, dataDir string, args []string) (simFault, error) {
			nodes, err := up.PartitionHost(ctx, dataDir, args[0])
			return simFault{Action: "partitioned", Hosts: args, Nodes: nodes}, err
		}),
	})
	recover := &cobra.Command{
		Use:   "recover",
		Short: "End every injected fault: restore the links; failed hosts' agents start again (and restart their PostgreSQL)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(ctx context.Context, dataDir string, _ []string) (simFault, error) {
			hosts, err := up.Recover(ctx, dataDir)
			return simFault{Action: "recovered", Hosts: hosts}, err
		}),
	}
	return []*cobra.Command{fail, partition, recover}
}
