package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) quotaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Project quotas (operator)"}
	var vpcs, services, nodes int
	set := &cobra.Command{
		Use:   "set --project P [--vpcs N] [--services N] [--nodes N]",
		Short: "Set a project's quotas of VPCs, services and nodes (operator token)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in apitype.QuotaUpdate
			for name, dst := range map[string]**int{"vpcs": &in.VPCs, "services": &in.Services, "nodes": &in.Nodes} {
				if f := cmd.Flags().Lookup(name); f.Changed {
					v, _ := cmd.Flags().GetInt(name)
					*dst = &v
				}
			}
			if in.VPCs == nil && in.Services == nil && in.Nodes == nil {
				return withHint(fmt.Errorf("nothing to set"), "give --vpcs, --services or --nodes")
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			out, err := cl.SetQuota(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			return a.print(out)
		},
	}
	set.Flags().IntVar(&vpcs, "vpcs", 0, "how many VPCs the project may have")
	set.Flags().IntVar(&services, "services", 0, "how many services the project may have")
	set.Flags().IntVar(&nodes, "nodes", 0, "how many nodes its services may have in all")
	cmd.AddCommand(set)
	return cmd
}
