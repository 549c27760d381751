package cli

import (
	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) projectCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Projects: the tenant boundary"}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "create NAME",
			Short: "Create a project (operator token)",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, _, err := a.client()
				if err != nil {
					return err
				}
				p, err := cl.CreateProject(cmd.Context(), apitype.ProjectCreate{Name: args[0]})
				if err != nil {
					return err
				}
				return a.print(p)
			},
		},
		&cobra.Command{
			Use:   "list",
			Short: "List the projects the token may see",
			Args:  args(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error {
				cl, _, err := a.client()
				if err != nil {
					return err
				}
				ps, err := cl.ListProjects(cmd.Context())
				if err != nil {
					return err
				}
				return a.print(ps)
			},
		},
		&cobra.Command{
			Use:   "get [PROJECT]",
			Short: "Show a project (default: --project or MOAT_PROJECT)",
			Args:  args(cobra.MaximumNArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) == 1 {
					a.project = args[0]
				}
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				out, err := cl.GetProject(cmd.Context(), p)
				if err != nil {
					return err
				}
				return a.print(out)
			},
		},
	)
	return cmd
}
