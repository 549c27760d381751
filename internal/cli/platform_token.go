package cli

import (
	"github.com/spf13/cobra"
)

// operatorCmd is the operator's commands for operator tokens (moat
// operator token ...); host-bound agent tokens are moat host token ...
// (host.go). Secrets are printed once, on create.
func (a *app) operatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "The platform's operators (operator token)"}
	tok := &cobra.Command{Use: "token", Short: "Operator tokens: create, list, revoke"}
	var name string
	create := &cobra.Command{
		Use:   "create --name N",
		Short: "Create an operator token; its secret is printed once",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			t, err := cl.CreateOperatorToken(cmd.Context(), name)
			if err != nil {
				return err
			}
			return a.print(t)
		},
	}
	create.Flags().StringVar(&name, "name", "", "who holds the token (shown in the audit log)")
	create.MarkFlagRequired("name")
	tok.AddCommand(create, a.platformTokenList(false), a.platformTokenDelete())
	cmd.AddCommand(tok)
	return cmd
}

func (a *app) platformTokenList(byHost bool) *cobra.Command {
	var host string
	c := &cobra.Command{
		Use:   "list",
		Short: "List live operator and agent tokens (no secrets)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ts, err := cl.ListPlatformTokens(cmd.Context(), host)
			if err != nil {
				return err
			}
			return a.print(ts)
		},
	}
	if byHost {
		c.Flags().StringVar(&host, "host", "", "only the agent tokens of this host")
	}
	return c
}

func (a *app) platformTokenDelete() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Revoke a token at once",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			t, err := cl.DeletePlatformToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(t)
		},
	}
}
