package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

// supportCmd is the support group: tenants file quota increases, the
// operator approves or declines them (design 0015); tenants' admins grant
// and revoke operators' data access (support_grant.go, design 0012).
func (a *app) supportCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "support", Short: "Support: quota increase requests, and your consent to operator data access"}
	cmd.AddCommand(a.supportRequestCmd(), a.supportListCmd(), a.supportDecideCmd(true), a.supportDecideCmd(false))
	cmd.AddCommand(a.supportGrantCmds()...)
	return cmd
}

func (a *app) supportRequestCmd() *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use:   "request (--vpcs N | --services N | --nodes N) --message TEXT",
		Short: "Ask the operator for a higher quota of VPCs, services or nodes",
		Long: `Ask the platform operator to raise the project's quota of VPCs, services or
nodes to N. The request is open until the operator approves it (the quota
rises at once) or declines it with a reply; moat support list shows both.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := apitype.SupportRequestCreate{Message: message}
			for _, name := range []string{"vpcs", "services", "nodes"} {
				if f := cmd.Flags().Lookup(name); f.Changed {
					if in.Resource != "" {
						return usageErrorf("give one of --vpcs, --services and --nodes per request")
					}
					in.Resource = name
					in.Requested, _ = cmd.Flags().GetInt(name)
				}
			}
			if in.Resource == "" {
				return usageErrorf("say which quota to raise: --vpcs N, --services N or --nodes N")
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			r, err := cl.CreateSupportRequest(cmd.Context(), p, in)
			if err != nil {
				return err
			}
			return a.print(r)
		},
	}
	f := cmd.Flags()
	f.Int("vpcs", 0, "the VPC quota to ask for")
	f.Int("services", 0, "the service quota to ask for")
	f.Int("nodes", 0, "the node quota to ask for (all services' nodes)")
	f.StringVar(&message, "message", "", "what you need it for (required)")
	cmd.MarkFlagRequired("message")
	return cmd
}

func (a *app) supportListCmd() *cobra.Command {
	var all bool
	var state string
	cmd := &cobra.Command{
		Use:   "list [--project P] [--all] [--state open|approved|declined]",
		Short: "List support requests: a project's, or with --all (or no project) every project's (operator)",
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
			rs, err := cl.ListSupportRequests(cmd.Context(), p, state)
			if err != nil {
				if p == "" {
					return withHint(err, "every project's requests need the operator token; for a project's set MOAT_PROJECT or pass --project")
				}
				return err
			}
			return a.print(rs)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every project's requests (operator token)")
	cmd.Flags().StringVar(&state, "state", "", "only requests in this state: open, approved or declined")
	return cmd
}

// supportDecideCmd is "approve" or "decline".
func (a *app) supportDecideCmd(approve bool) *cobra.Command {
	var reply string
	cmd := &cobra.Command{
		Use:   "approve ID [--reply TEXT]",
		Short: "Approve a support request and raise the project's quota (operator)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			var r apitype.SupportRequest
			if approve {
				r, err = cl.ApproveSupportRequest(cmd.Context(), argv[0], reply)
			} else {
				r, err = cl.DeclineSupportRequest(cmd.Context(), argv[0], reply)
			}
			if err != nil {
				return err
			}
			return a.print(r)
		},
	}
	usage := "the answer the requester sees"
	if !approve {
		usage = "why, which the requester sees (required)"
	}
	cmd.Flags().StringVar(&reply, "reply", "", usage)
	if !approve {
		cmd.Use, cmd.Short = "decline ID --reply TEXT", "Decline a support request with a reply saying why (operator)"
		cmd.MarkFlagRequired("reply")
	}
	return cmd
}

func supportRows(tw io.Writer, rs ...apitype.SupportRequest) {
	row(tw, "ID", "PROJECT", "REQUEST", "STATE", "MESSAGE", "REPLY", "CREATED")
	for _, r := range rs {
		row(tw, r.ID, r.ProjectID, fmt.Sprintf("%s %d -> %d", r.Resource, r.Current, r.Requested), r.State, oneLine(r.Message), dash(oneLine(r.Reply)), ts(r.CreatedAt))
	}
}
