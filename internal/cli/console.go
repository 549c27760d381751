package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// consoleCmd is the console group: today one command, a new one-time
// sign-in link for the operator (the one `moat up` and `moat server`
// print is spent by its first use, or dies after 15 minutes).
func (a *app) consoleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "console", Short: "The web console (served at /console/ by moat server and moat up)"}
	link := &cobra.Command{
		Use:   "link",
		Short: "Print a new one-time console sign-in link for the operator token (operator)",
		Long: `Print a new one-time link that signs a browser into the console with the
operator token of MOAT_TOKEN: it works once, within 15 minutes, and holds a
random code, never the token. The link moat up or moat server printed at
start is spent by its first use; this mints another without a restart.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			l, err := cl.CreateConsoleLink(cmd.Context())
			if err != nil {
				return err
			}
			if a.output != "table" {
				return a.print(l)
			}
			_, err = fmt.Fprintf(a.stdout, "%s\n(once, until %s)\n", l.URL, l.ExpiresAt.UTC().Format(time.RFC3339))
			return err
		},
	}
	cmd.AddCommand(link)
	return cmd
}
