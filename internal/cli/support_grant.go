package cli

import (
	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

// supportGrantCmds are the tenant's consent to operator data access (design
// 0012): moat support grant, grants and revoke. They join the support
// command group.
func (a *app) supportGrantCmds() []*cobra.Command {
	var in apitype.SupportGrantCreate
	grant := &cobra.Command{
		Use:   "grant --reason R [--ttl 2h]",
		Short: "Allow the platform's operators data access (moat ops psql) to the project's nodes for a while (admin)",
		Long: `Allow the platform's operators to open read-only SQL sessions on the
project's nodes until --ttl ends or you revoke the grant (moat support
revoke ID). Each session logs in as a temporary role with the privileges
pg_read_all_data and pg_read_all_stats, dropped when the grant ends; every
grant, session and command is in the project's audit log (moat audit list).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			g, err := cl.CreateSupportGrant(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			return a.print(g)
		},
	}
	grant.Flags().StringVar(&in.Reason, "reason", "", `why, for the audit log (e.g. "ticket 77: slow queries")`)
	grant.Flags().StringVar(&in.TTL, "ttl", "2h", "how long operators may access the data (at most 72h)")
	grant.MarkFlagRequired("reason")
	list := &cobra.Command{
		Use:   "grants",
		Short: "List the project's support grants",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			gs, err := cl.ListSupportGrants(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.print(gs)
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a support grant: operators' data access ends at once (admin)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			g, err := cl.RevokeSupportGrant(cmd.Context(), p, argv[0])
			if err != nil {
				return err
			}
			return a.print(g)
		},
	}
	return []*cobra.Command{grant, list, revoke}
}
