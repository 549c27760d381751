package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
)

func (a *app) vpcCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vpc", Short: "Private networks (VPCs) of a project"}
	var (
		in apitype.VPCCreate
		w  waitFlags
	)
	create := &cobra.Command{
		Use:   "create --name N --region R --cidr C [--wait]",
		Short: "Create a VPC (RFC 1918, /16 to /24, canonical)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			v, err := cl.CreateVPC(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			if w.wait {
				err = w.run(cmd.Context(), "VPC "+v.ID+" to be active", "moat vpc get "+v.ID, func(ctx context.Context) error {
					var werr error
					v, werr = cl.WaitVPC(ctx, p, v.ID, a.poll())
					return werr
				})
				var fe *client.VPCFailedError
				if errors.As(err, &fe) {
					return withHint(err, "delete it (moat vpc delete "+v.ID+") and create it again")
				}
				if err != nil {
					return err
				}
			}
			return a.print(v)
		},
	}
	w.add(create, "the VPC is active")
	create.Flags().StringVar(&in.Name, "name", "", "VPC name")
	create.Flags().StringVar(&in.Region, "region", "", "region (moat region list)")
	create.Flags().StringVar(&in.CIDR, "cidr", "", "IPv4 range, e.g. 10.0.0.0/16")
	for _, f := range []string{"name", "region", "cidr"} {
		create.MarkFlagRequired(f)
	}
	cmd.AddCommand(
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the project's VPCs",
			Args:  args(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				vs, err := cl.ListVPCs(cmd.Context(), p)
				if err != nil {
					return err
				}
				return a.print(vs)
			},
		},
		&cobra.Command{
			Use:   "get ID",
			Short: "Show a VPC",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				v, err := cl.GetVPC(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(v)
			},
		},
		&cobra.Command{
			Use:   "delete ID",
			Short: "Delete a VPC (it must have no attached services or live peerings)",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				v, err := cl.DeleteVPC(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(v)
			},
		},
	)
	return cmd
}
