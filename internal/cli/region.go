package cli

import "github.com/spf13/cobra"

func (a *app) regionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "region", Short: "Regions the platform runs in"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the supported regions and their availability zones",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			rs, err := cl.ListRegions(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(rs)
		},
	})
	return cmd
}
