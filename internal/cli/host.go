package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/client"
)

// hostCmd is the operator's commands for hosts (moat host add, list, get,
// drain, activate, remove) and their agent tokens (moat host token ...).
// A host's first agent token comes with its registration, its secret
// printed once (or written to --token-out).
func (a *app) hostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Hosts that run nodes: add, list, get, drain, activate, remove (operator token)"}
	cmd.AddCommand(a.hostAdd(), a.hostList(), a.hostGet(), a.hostUpdate(),
		a.hostAction("drain", "Drain a host: it takes no new node, and its nodes are replaced on other hosts", (*client.Client).DrainHost),
		a.hostAction("activate", "Activate a drained host: it takes new nodes again", (*client.Client).ActivateHost),
		a.hostAction("remove", "Remove an empty host and revoke its agent tokens (refused while it has nodes: drain it first)", (*client.Client).DeleteHost),
		a.hostTokenCmd())
	return cmd
}

func (a *app) hostAdd() *cobra.Command {
	var in apitype.HostCreate
	var tokenOut string
	c := &cobra.Command{
		Use:   "add NAME --region R --az AZ [--capacity N] [--token-out FILE]",
		Short: "Register a host; its agent token is printed once (or written to --token-out)",
		Long: `Register a host: a machine whose agent (moat agent --server URL --host NAME
--token-file F --ca F) runs the nodes placed on it. The answer holds the
agent token bound to the host; its secret is shown once. With --token-out it
is written to that file (mode 0600) instead of printed.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			in.Name = args[0]
			out, err := cl.CreateHost(cmd.Context(), in)
			if err != nil {
				return err
			}
			if tokenOut != "" && out.AgentToken.Secret != "" {
				if err := atomicfile.WriteFile(tokenOut, []byte(out.AgentToken.Secret+"\n"), 0o600); err != nil {
					return withHint(fmt.Errorf("write the agent token: %w", err), "create another one with moat host token create --host "+in.Name+" and revoke "+out.AgentToken.ID)
				}
				out.AgentToken.Secret = ""
				out.AgentToken.SecretShownOnce = "written to " + tokenOut
			}
			return a.print(out)
		},
	}
	c.Flags().StringVar(&in.Region, "region", "", "the host's region (moat region list)")
	c.Flags().StringVar(&in.AZ, "az", "", "the host's availability zone, one of the region's")
	c.Flags().IntVar(&in.Capacity, "capacity", 0, "how many nodes the host may run (default 8)")
	c.Flags().StringVar(&tokenOut, "token-out", "", "write the agent token to this file (mode 0600) instead of printing it")
	c.MarkFlagRequired("region")
	c.MarkFlagRequired("az")
	return c
}

func (a *app) hostList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List hosts: state, last heartbeat, agent version, capacity and load",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			hs, err := cl.ListHosts(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(hs)
		},
	}
}

func (a *app) hostGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a host (by name or ID) and the nodes on it",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			h, err := cl.GetHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(h)
		},
	}
}

func (a *app) hostUpdate() *cobra.Command {
	var in apitype.HostUpdate
	c := &cobra.Command{
		Use:   "update NAME --capacity N",
		Short: "Change a host's capacity in nodes (below its load it takes no new node)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			h, err := cl.UpdateHost(cmd.Context(), args[0], in)
			if err != nil {
				return err
			}
			return a.print(h)
		},
	}
	c.Flags().IntVar(&in.Capacity, "capacity", 0, "how many nodes the host may run (1 to 1000)")
	c.MarkFlagRequired("capacity")
	return c
}

// hostAction is a command that changes the host NAME through do.
func (a *app) hostAction(use, short string, do func(*client.Client, context.Context, string, ...client.CallOption) (apitype.Host, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			h, err := do(cl, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(h)
		},
	}
}

func (a *app) hostTokenCmd() *cobra.Command {
	tok := &cobra.Command{Use: "token", Short: "Agent tokens bound to one host: create, list, revoke"}
	var host, name string
	create := &cobra.Command{
		Use:   "create --host H [--name N]",
		Short: "Create an agent token bound to host H; its secret is printed once",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			t, err := cl.CreateAgentToken(cmd.Context(), host, name)
			if err != nil {
				return err
			}
			return a.print(t)
		},
	}
	create.Flags().StringVar(&host, "host", "", "the host whose agent will use the token")
	create.Flags().StringVar(&name, "name", "", "a name for the token (default agent-HOST)")
	create.MarkFlagRequired("host")
	tok.AddCommand(create, a.platformTokenList(true), a.platformTokenDelete())
	return tok
}

// hostRows is the table of hosts.
func hostRows(w io.Writer, hs ...apitype.Host) {
	row(w, "NAME", "REGION", "AZ", "STATE", "LOAD", "HEARTBEAT", "AGENT")
	for _, h := range hs {
		state := stateOf(h.State, h.StateInfo)
		if h.Cordoned && h.State != "draining" {
			state += ", cordoned"
		}
		row(w, h.Name, h.Region, h.AZ, state, strconv.Itoa(h.Load)+"/"+strconv.Itoa(h.Capacity), ts(h.LastHeartbeatAt), dash(h.AgentVersion))
	}
}

// hostNotes are the lines under one host: its nodes.
func hostNotes(h apitype.Host) []string {
	if len(h.Nodes) == 0 {
		return []string{"no nodes"}
	}
	out := []string{"nodes:"}
	for _, n := range h.Nodes {
		out = append(out, "  "+strings.Join([]string{n.ID, n.Role, n.State, "service " + n.ServiceID, "project " + n.ProjectID}, "  "))
		if n.Volume != nil {
			out = append(out, "    "+volumeText(n.Volume))
		}
	}
	return out
}

// hostCreatedNotes are the lines under a registered host: its token.
func hostCreatedNotes(h apitype.HostCreated) []string {
	t := h.AgentToken
	out := []string{"agent token: " + t.ID}
	switch {
	case t.Secret != "":
		out = append(out, "secret: "+t.Secret, "Store the secret now: it is not shown again.")
	case t.SecretShownOnce != "":
		out = append(out, "secret: "+t.SecretShownOnce)
	}
	return append(out, "Run its agent: moat agent --server URL --host "+h.Host.Name+" --token-file F --ca F")
}
