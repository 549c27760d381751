package cli

import (
	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) quotaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Project quotas (operator)"}
	var vpcs int
	set := &cobra.Command{
		Use:   "set --project P --vpcs N",
		Short: "Set a project's VPC quota (operator token)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			out, err := cl.SetQuota(cmd.Context(), p, apitype.QuotaUpdate{VPCs: &vpcs})
			if err != nil {
				return err
			}
			return a.print(out)
		},
	}
	set.Flags().IntVar(&vpcs, "vpcs", 0, "how many VPCs the project may have")
	set.MarkFlagRequired("vpcs")
	cmd.AddCommand(set)
	return cmd
}
