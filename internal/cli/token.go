package cli

import (
	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "API tokens of a project"}
	var in apitype.TokenCreate
	create := &cobra.Command{
		Use:   "create --role admin|member|viewer [--name N]",
		Short: "Create an API token; its secret is printed once",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			t, err := cl.CreateToken(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			return a.print(t)
		},
	}
	create.Flags().StringVar(&in.Role, "role", "", "role: admin, member or viewer")
	create.Flags().StringVar(&in.Name, "name", "", "a name to recognise the token by")
	create.MarkFlagRequired("role")
	cmd.AddCommand(
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the project's API tokens",
			Args:  args(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				ts, err := cl.ListTokens(cmd.Context(), p)
				if err != nil {
					return err
				}
				return a.print(ts)
			},
		},
		&cobra.Command{
			Use:   "delete ID",
			Short: "Revoke an API token",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				t, err := cl.DeleteToken(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(t)
			},
		},
	)
	return cmd
}
