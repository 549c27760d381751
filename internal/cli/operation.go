package cli

import (
	"github.com/spf13/cobra"
)

func (a *app) operationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operation", Short: "Asynchronous operations (attach, detach)"}
	var w waitFlags
	wait := &cobra.Command{
		Use:   "wait OP [--timeout D]",
		Short: "Wait until an operation has succeeded or failed (exit 1 if it failed)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.GetOperation(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			w.wait = true
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	wait.Flags().DurationVar(&w.timeout, "timeout", defaultWait, "give up waiting after this long")
	var list struct{ target string }
	listCmd := &cobra.Command{
		Use:   "list [--target ID]",
		Short: "List the project's operations",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			ops, err := cl.ListOperations(cmd.Context(), p, list.target)
			if err != nil {
				return err
			}
			return a.print(ops)
		},
	}
	listCmd.Flags().StringVar(&list.target, "target", "", "only the operations on this object")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "get OP",
			Short: "Show an operation",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				op, err := cl.GetOperation(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(op)
			},
		},
		wait,
		listCmd,
	)
	return cmd
}
