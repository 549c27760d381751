package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/domain"
)

func (a *app) explainCmd() *cobra.Command {
	var from, dataDir string
	cmd := &cobra.Command{
		Use:   "explain SVC --from IP|HOST",
		Short: "Say whether a source can connect to a service, and the deciding reason (from the model, no probe)",
		Long: `Say whether a client at IP can open a connection to the service, and the
first thing on the packet's path that decides it, computed from the model
(the API's service, VPC and peerings, and the simulated customer cloud's
route tables and security groups), without sending a packet.

It prints "allowed", or "refused: REASON: DETAIL" where REASON is one of
public-access-disabled, not-peered, peering-not-active,
customer-route-missing, security-group, allowlist, no-path. It exits 0
either way: it answers a question. -o json prints the verdict.

Run as root on the machine of moat up, the source is looked up among the
simulated hosts (and customer NAT addresses) of --data-dir, and --from may
name a simulated host, as moat service psql --from does. Otherwise the
source's network is judged from its address alone, and explain says so.`,
		Example: `  moat explain svc-... --from 198.19.0.2
  moat explain svc-... --from cust
  moat explain svc-... --from 172.31.0.5 -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			in, err := cl.ExplainInput(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			src, note, err := a.explainSource(cmd.Context(), dataDir, from)
			if err != nil {
				return err
			}
			in.Source = src
			v := domain.Explain(in)
			if note != "" {
				fmt.Fprintf(a.stderr, "moat: note: %s\n", note)
			}
			if v.Note != "" {
				fmt.Fprintf(a.stderr, "moat: note: %s\n", v.Note)
			}
			if v.Health != "" {
				fmt.Fprintf(a.stderr, "moat: note: %s\n", v.Health)
			}
			if a.output == "json" {
				return a.print(v)
			}
			_, err = fmt.Fprintln(a.stdout, verdictLine(v))
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the source: an address (a simulated host's, a NAT's, or any) or a simulated host's name")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", dataDirUsage)
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

// verdictLine is a verdict as explain prints it.
func verdictLine(v domain.Verdict) string {
	if v.Allowed {
		return "allowed"
	}
	return "refused: " + v.Reason + ": " + v.Detail
}
