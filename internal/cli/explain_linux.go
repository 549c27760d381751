//go:build linux

package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/sim"
)

// explainSource describes the source from (an address, or a simulated
// host's name) for explain: as the simulated cloud of dataDir knows it when
// this process is root and that cloud is there, else by its address alone,
// with a note saying so.
func (a *app) explainSource(ctx context.Context, dataDir, from string) (domain.Source, string, error) {
	addr, perr := netip.ParseAddr(from)
	if a.euid() != 0 {
		if perr != nil {
			return domain.Source{}, "", withHint(usageErrorf("--from %q is not an IP address", from), "a simulated host's name is looked up only as root on the machine of moat up")
		}
		return domain.Source{Addr: addr}, "not root: the simulated cloud was not read; the source is judged from its address and the API alone", nil
	}
	sm, _, err := openSim(a.getenv, a.resolveDataDir(dataDir))
	if err != nil {
		if perr != nil {
			return domain.Source{}, "", withHint(fmt.Errorf("--from %q is not an IP address, and the simulated cloud to look it up in is not there: %w", from, err), "pass an address, or the --data-dir of moat up")
		}
		return domain.Source{Addr: addr}, fmt.Sprintf("no simulated cloud (%v); the source is judged from its address and the API alone", err), nil
	}
	if perr != nil {
		h, err := sm.Host(ctx, from)
		if err != nil {
			return domain.Source{}, "", withHint(fmt.Errorf("--from %q: neither an IP address nor a simulated host: %w", from, err), hintHosts)
		}
		addr = h.Addr
	}
	src, err := sm.Source(ctx, addr)
	return src, "", err
}

func (a *app) verifyCmd() *cobra.Command {
	var dataDir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "verify SVC",
		Short: "Probe a service from every simulated host and check that explain agrees (moat up, as root)",
		Long: `Probe the service's primary on TCP 5432 from every simulated host of moat up
(a SYN answered is reachable; from a customer host toward a public service
the probe goes out through the VPC's NAT, as the host's would), explain the
same source from the model, and print one row per host:
HOST, ADDRESS, EXPLAIN, PROBE, AGREE.

It exits 1 when explain and a probe disagree: that is a bug in Moat's model
or in its enforcement. Runs on the machine of moat up, as root.`,
		Example: `  moat verify svc-...
  moat verify svc-... -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.needRoot("moat verify"); err != nil {
				return err
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			sm, _, err := openSim(a.getenv, a.resolveDataDir(dataDir))
			if err != nil {
				return err
			}
			in, err := cl.ExplainInput(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			rows, err := sm.Verify(cmd.Context(), in, timeout)
			if err != nil {
				return err
			}
			if a.output == "json" {
				if err := a.print(rows); err != nil {
					return err
				}
			} else if err := writeVerifyTable(a.stdout, rows); err != nil {
				return err
			}
			var bad []string
			for _, r := range domain.Disagreements(rows) {
				bad = append(bad, r.Host)
				fmt.Fprintf(a.stderr, "moat: %s: explain says %s; the probe %s\n", r.Host, verdictLine(r.Explain), probeWord(r))
			}
			if len(bad) > 0 {
				return withHint(fmt.Errorf("explain and the probes disagree for %s", strings.Join(bad, ", ")),
					"a change may not be applied yet (run verify again); if it persists, the model or the enforcement is wrong: report it")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", dataDirUsage)
	cmd.Flags().DurationVar(&timeout, "timeout", sim.DefaultProbeTimeout, "how long a probe waits for an answer")
	return cmd
}

func probeWord(r domain.Check) string {
	if r.Reachable {
		return "connected"
	}
	if r.ProbeError != "" {
		return "failed: " + r.ProbeError
	}
	return "failed"
}

// writeVerifyTable writes verify's rows as aligned columns.
func writeVerifyTable(w io.Writer, rows []domain.Check) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tEXPLAIN\tPROBE\tAGREE")
	for _, r := range rows {
		ex := "allowed"
		if !r.Explain.Allowed {
			ex = "refused: " + r.Explain.Reason
		}
		probe := "unreachable"
		if r.Reachable {
			probe = "reachable"
		}
		agree := "yes"
		if !r.Agree {
			agree = "NO"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", r.Host, r.Address, ex, probe, agree)
	}
	return tw.Flush()
}
