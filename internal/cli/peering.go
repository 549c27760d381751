package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) peeringCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "peering", Short: "Peering connections from a VPC to your networks"}
	var (
		in apitype.PeeringCreate
		w  waitFlags
	)
	create := &cobra.Command{
		Use:   "create --vpc V --peer-account A --peer-vpc ID --peer-region R --peer-cidr C [--peer-cidr C2]... [--wait]",
		Short: "Request a peering connection (accept it in your own cloud account)",
		Long: `Request a peering connection from the VPC to a network of yours. A peering
has two IDs: Moat's (id) and the one your cloud knows the request by
(cloud_peering_id, set once the request has reached your account), which you
accept and route to. With --wait the command returns once it has.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			pc, err := cl.CreatePeering(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			if w.wait {
				err = w.run(cmd.Context(), "peering "+pc.ID+" to reach the peer's account", "moat peering get "+pc.ID, func(ctx context.Context) error {
					var werr error
					pc, werr = cl.WaitPeering(ctx, p, pc.ID, a.poll())
					return werr
				})
				if err != nil {
					return err
				}
			}
			return a.print(pc)
		},
	}
	f := create.Flags()
	f.StringVar(&in.VPCID, "vpc", "", "ID of this project's VPC")
	f.StringVar(&in.PeerAccountID, "peer-account", "", "peer AWS account ID (12 digits)")
	f.StringVar(&in.PeerVPCID, "peer-vpc", "", "peer VPC ID (vpc-…)")
	f.StringVar(&in.PeerRegion, "peer-region", "", "peer AWS region code")
	f.StringArrayVar(&in.PeerCIDRs, "peer-cidr", nil, "a CIDR of the peer network (repeatable)")
	w.add(create, "the request is in the peer's account (pending acceptance, with its cloud_peering_id)")
	for _, n := range []string{"vpc", "peer-account", "peer-vpc", "peer-region", "peer-cidr"} {
		create.MarkFlagRequired(n)
	}
	var vpc string
	list := &cobra.Command{
		Use:   "list [--vpc V]",
		Short: "List the project's peering connections",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			ps, err := cl.ListPeerings(cmd.Context(), p, vpc)
			if err != nil {
				return err
			}
			return a.print(ps)
		},
	}
	list.Flags().StringVar(&vpc, "vpc", "", "only the peerings of this VPC")
	cmd.AddCommand(
		create,
		list,
		&cobra.Command{
			Use:   "get ID",
			Short: "Show a peering connection",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				pc, err := cl.GetPeering(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(pc)
			},
		},
		&cobra.Command{
			Use:   "delete ID",
			Short: "Delete a peering connection",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				pc, err := cl.DeletePeering(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(pc)
			},
		},
	)
	return cmd
}
