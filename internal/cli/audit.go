package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) auditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log of every mutation and every refused one"}
	var all bool
	list := &cobra.Command{
		Use:   "list [--project P] [--all]",
		Short: "List audit entries: a project's, or with --all (or no project) every project's (operator)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, c, err := a.client()
			if err != nil {
				return err
			}
			p := c.project
			if all {
				p = ""
			}
			es, err := cl.ListAudit(cmd.Context(), p)
			if err != nil {
				if p == "" {
					return withHint(err, "the whole log needs the operator token; for a project's entries set MOAT_PROJECT or pass --project")
				}
				return err
			}
			return a.print(es)
		},
	}
	list.Flags().BoolVar(&all, "all", false, "every project's entries (operator token)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit hash chain and signed checkpoints (operator); exit 0 and ok when intact",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			v, err := cl.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			if v.OK {
				return a.print(v)
			}
			if a.output == "json" {
				if err := a.print(v); err != nil {
					return err
				}
			}
			return withHint(fmt.Errorf("the audit log is not intact: first bad entry %d: %s", v.FirstBad, v.Problem),
				"the database was changed behind the server's back; keep a copy and investigate from that entry on")
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}
