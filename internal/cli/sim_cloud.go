//go:build linux

package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/sim"
)

// This file holds the `moat sim` groups of the simulated customer
// account: account, vpc, peering (the inbox), route, sg and clock. Each
// command calls one internal/sim method and prints what it returns; the
// errors it can meet are given hints with simHints.

// simHints says what the user should do about each kind of error of
// internal/sim a command can meet; an empty hint leaves the error as it is
// (a validation error carries its own field and hint, see describe).
type simHints struct {
	notFound, exists, inUse, state string
}

// wrap returns err with the hint for its kind.
func (h simHints) wrap(err error) error {
	if err == nil {
		return nil
	}
	var hint string
	switch {
	case errors.Is(err, sim.ErrNotFound), errors.Is(err, localcloud.ErrNotFound):
		hint = h.notFound
	case errors.Is(err, sim.ErrExists), errors.Is(err, localcloud.ErrExists):
		hint = h.exists
	case errors.Is(err, sim.ErrInUse):
		hint = h.inUse
	case errors.Is(err, localcloud.ErrState):
		hint = h.state
	}
	if hint == "" {
		return err
	}
	return withHint(err, hint)
}

// Hints shared by several commands.
const (
	hintAccounts = "moat sim account list shows the accounts; moat sim account create makes one"
	hintVPCs     = "moat sim vpc list shows the customer VPCs"
	hintHosts    = "moat sim host list shows the hosts"
)

// parseDays parses a duration for `moat sim clock advance`: a Go duration
// ("36h", "90m") or a number of days with the suffix d, optionally
// followed by a Go duration without a sign ("8d", "7d12h"). It must be
// positive: the clock only moves forward.
func parseDays(s string) (time.Duration, error) {
	bad := fmt.Errorf("duration %q: write it as 8d, 7d12h, 36h or 90m", s)
	var d time.Duration
	rest := s
	if days, after, ok := strings.Cut(s, "d"); ok {
		// ParseUint takes digits only: no sign, no spaces.
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > maxDays {
			return 0, bad
		}
		if after != "" && (after[0] < '0' || after[0] > '9') {
			return 0, bad
		}
		d, rest = time.Duration(n)*24*time.Hour, after
	}
	if rest != "" || s == "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r > math.MaxInt64-d {
			return 0, bad
		}
		d += r
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q: the clock only moves forward; give a positive duration such as 8d", s)
	}
	return d, nil
}

// maxDays bounds the days of parseDays, well within a time.Duration.
const maxDays = 100_000

// checkEgressFlags checks --protocol and --port of an egress rule, so
// that a mistake names the flag (internal/sim checks the rule again).
func checkEgressFlags(proto string, port int) error {
	switch proto {
	case "":
		// Missing: cobra's check of required flags says so.
	case "tcp", "udp":
		if port < 1 || port > 65535 {
			return fmt.Errorf("--port %d: protocol %s needs a port from 1 to 65535", port, proto)
		}
	case "all":
		if port != 0 {
			return fmt.Errorf("--port %d: protocol all covers every port; leave --port out", port)
		}
	default:
		return fmt.Errorf("--protocol %q: use tcp, udp or all", proto)
	}
	return nil
}

// simAccount is a customer account as `moat sim` prints it.
type simAccount struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// simVPC is a customer VPC as `moat sim` prints it.
type simVPC struct {
	ID      string `json:"id"`
	Account string `json:"account"`
	Region  string `json:"region"`
	CIDR    string `json:"cidr"`
	// NATAddress is empty when the router's namespace is gone.
	NATAddress      string    `json:"nat_address"`
	RouterNamespace string    `json:"router_namespace"`
	Created         time.Time `json:"created"`
}

func simVPCOut(v sim.VPC) simVPC {
	out := simVPC{ID: v.ID, Account: v.Account, Region: v.Region, CIDR: v.CIDR.String(), RouterNamespace: v.RouterNS, Created: v.Created}
	if v.NATAddr.IsValid() {
		out.NATAddress = v.NATAddr.String()
	}
	return out
}

// simPeering is a peering request in a customer account's inbox.
type simPeering struct {
	ID string `json:"id"`
	// RequesterVPC is the requester's VPC (Moat's side).
	RequesterVPC    string    `json:"requester_vpc"`
	AccepterAccount string    `json:"accepter_account"`
	AccepterVPC     string    `json:"accepter_vpc"`
	AccepterRegion  string    `json:"accepter_region"`
	DeclaredCIDRs   []string  `json:"declared_cidrs"`
	State           string    `json:"state"`
	Reason          string    `json:"reason,omitempty"`
	Created         time.Time `json:"created"`
	Expires         time.Time `json:"expires"`
	Updated         time.Time `json:"updated"`
}

func simPeeringOut(p localcloud.Peering) simPeering {
	out := simPeering{
		ID: p.ID, RequesterVPC: p.RequesterVPC,
		AccepterAccount: p.AccepterAccount, AccepterVPC: p.AccepterVPC, AccepterRegion: p.AccepterRegion,
		DeclaredCIDRs: make([]string, len(p.DeclaredCIDRs)),
		State:         string(p.State), Reason: p.Reason,
		Created: p.CreatedAt, Expires: p.ExpiresAt, Updated: p.UpdatedAt,
	}
	for i, c := range p.DeclaredCIDRs {
		out.DeclaredCIDRs[i] = c.String()
	}
	return out
}

// simRoute is a route of a customer VPC's route table.
type simRoute struct {
	VPC         string `json:"vpc"`
	Destination string `json:"destination"`
	Target      string `json:"target"`
	State       string `json:"state"`
}

func simRouteOut(vpc string, r sim.Route) simRoute {
	return simRoute{VPC: vpc, Destination: r.Destination.String(), Target: r.Target, State: r.State}
}

// simEgress is an egress rule of a customer host's security group.
type simEgress struct {
	Host     string `json:"host"`
	Protocol string `json:"protocol"`
	// Port is 0 for protocol all.
	Port int    `json:"port"`
	CIDR string `json:"cidr"`
}

func simEgressOut(host string, r sim.EgressRule) simEgress {
	return simEgress{Host: host, Protocol: r.Protocol, Port: r.Port, CIDR: r.CIDR.String()}
}

// simClock is the cloud's clock.
type simClock struct {
	Now time.Time `json:"now"`
}

func (a *app) simAccountCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "account", Short: "Simulated customer (AWS) accounts"}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "create",
			Short: "Create a customer account with a random 12-digit ID",
			Args:  args(cobra.NoArgs),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
				acc, err := sm.CreateAccount(cmd.Context())
				if err != nil {
					return err
				}
				return a.print(simAccount{ID: acc.ID, Created: acc.Created})
			}),
		},
		&cobra.Command{
			Use:   "list",
			Short: "List the customer accounts",
			Args:  args(cobra.NoArgs),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
				accs, err := sm.ListAccounts(cmd.Context())
				if err != nil {
					return err
				}
				out := make([]simAccount, len(accs))
				for i, acc := range accs {
					out[i] = simAccount{ID: acc.ID, Created: acc.Created}
				}
				return a.print(out)
			}),
		},
	)
	return cmd
}

func (a *app) simVPCCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "vpc", Short: "Customer VPCs: a router with a NAT uplink to the internet"}
	var account, region, cidr string
	create := &cobra.Command{
		Use:     "create --account A --region R --cidr C",
		Short:   "Create a customer VPC (RFC 1918, /16 to /28, canonical) with its router and NAT",
		Example: `  moat sim vpc create --account 123456789012 --region eu-west-1 --cidr 172.31.0.0/16`,
		Args:    args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			v, err := sm.CreateVPC(cmd.Context(), account, region, cidr)
			if err != nil {
				return simHints{notFound: hintAccounts}.wrap(err)
			}
			return a.print(simVPCOut(v))
		}),
	}
	create.Flags().StringVar(&account, "account", "", "the customer account's 12-digit ID (moat sim account list)")
	create.Flags().StringVar(&region, "region", "", "an AWS region code, e.g. eu-west-1")
	create.Flags().StringVar(&cidr, "cidr", "", "the VPC's IPv4 range, e.g. 172.31.0.0/16")
	for _, f := range []string{"account", "region", "cidr"} {
		create.MarkFlagRequired(f)
	}
	cmd.AddCommand(
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the customer VPCs of every account",
			Args:  args(cobra.NoArgs),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
				vs, err := sm.ListVPCs(cmd.Context())
				if err != nil {
					return err
				}
				out := make([]simVPC, len(vs))
				for i, v := range vs {
					out[i] = simVPCOut(v)
				}
				return a.print(out)
			}),
		},
		&cobra.Command{
			Use:   "delete VPC",
			Short: "Delete a customer VPC, its router and NAT (it must have no hosts and no pending or active peerings)",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				hints := simHints{
					notFound: hintVPCs,
					inUse:    "delete its hosts first (moat sim host delete NAME), and reject or delete its peerings (moat sim peering list --account A)",
				}
				v, err := sm.VPC(cmd.Context(), args[0])
				if err == nil {
					err = sm.DeleteVPC(cmd.Context(), args[0])
				}
				if err != nil {
					return hints.wrap(err)
				}
				return a.print(simVPCOut(v))
			}),
		},
	)
	return cmd
}

func (a *app) simPeeringCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "peering", Short: "The peering inbox of a customer account: requests made to its VPCs"}
	var account string
	list := &cobra.Command{
		Use:   "list --account A",
		Short: "List the peering requests made to an account's VPCs, in any state",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			ps, err := sm.Peerings(cmd.Context(), account)
			if err != nil {
				return simHints{notFound: hintAccounts}.wrap(err)
			}
			out := make([]simPeering, len(ps))
			for i, p := range ps {
				out[i] = simPeeringOut(p)
			}
			return a.print(out)
		}),
	}
	list.Flags().StringVar(&account, "account", "", "the customer account's 12-digit ID")
	list.MarkFlagRequired("account")
	hints := simHints{
		notFound: "moat sim peering list --account A shows the requests made to an account",
		state:    "only a pending-acceptance request can be accepted or rejected; moat sim peering list --account A shows its state",
	}
	cmd.AddCommand(
		list,
		&cobra.Command{
			Use: "accept PCX",
			Long: `Accept a pending peering request. PCX is the cloud's ID of the request (Moat's
cloud_peering_id), or Moat's ID of the peering, which is looked up through the
API (MOAT_URL, MOAT_TOKEN, MOAT_PROJECT).`,
			Short: "Accept a pending peering request: it becomes active (or failed, with the reason, when its declared ranges are not this VPC's)",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				id, err := a.cloudPeeringID(cmd, args[0])
				if err != nil {
					return err
				}
				p, err := sm.Accept(cmd.Context(), id)
				if err != nil {
					return hints.wrap(err)
				}
				if err := a.print(simPeeringOut(p)); err != nil {
					return err
				}
				if p.State == localcloud.PeeringFailed {
					return withHint(fmt.Errorf("peering %s failed: %s", p.ID, p.Reason),
						"the requester must delete it and request again with ranges inside "+p.AccepterVPC+"'s CIDR ("+p.AccepterCIDR.String()+")")
				}
				return nil
			}),
		},
		&cobra.Command{
			Use:   "reject PCX",
			Short: "Reject a pending peering request; its link is removed",
			Args:  args(cobra.ExactArgs(1)),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				id, err := a.cloudPeeringID(cmd, args[0])
				if err != nil {
					return err
				}
				p, err := sm.Reject(cmd.Context(), id)
				if err != nil {
					return hints.wrap(err)
				}
				return a.print(simPeeringOut(p))
			}),
		},
	)
	return cmd
}

// cloudPeeringID returns the ID the customer cloud knows a peering by. A
// peering has two: Moat's (pcx- and 16 base32 characters) and the cloud's
// (pcx- and 17 hex digits, Moat's cloud_peering_id). Given Moat's, it asks
// the API for the cloud's and says so on stderr; the cloud's is returned
// as it is.
func (a *app) cloudPeeringID(cmd *cobra.Command, id string) (string, error) {
	if !domain.ValidID(domain.PrefixPeering, id) {
		return id, nil
	}
	hint := id + " is Moat's ID of the peering; the customer cloud knows it by its cloud_peering_id: moat peering get " + id
	cl, p, err := a.projectClient()
	if err != nil {
		return "", withHint(fmt.Errorf("peering %s: not a peering ID of the customer cloud, and the API to look it up is not configured: %w", id, err), hint)
	}
	pc, err := cl.GetPeering(cmd.Context(), p, id)
	if err != nil {
		return "", withHint(fmt.Errorf("look up Moat's peering %s: %w", id, err), hint)
	}
	if pc.CloudPeeringID == "" {
		return "", withHint(fmt.Errorf("peering %s has not reached the customer cloud yet (it is %s)", id, pc.State),
			"wait for it: moat peering get "+id+" shows its cloud_peering_id once it has")
	}
	fmt.Fprintf(a.stderr, "moat: note: %s is Moat's ID; using the cloud's ID %s (its cloud_peering_id)\n", id, pc.CloudPeeringID)
	return pc.CloudPeeringID, nil
}

// simVPCExists fails with a hint naming --vpc unless customer VPC id
// exists, so that a later not-found error is about another flag.
func simVPCExists(cmd *cobra.Command, sm *sim.Sim, id string) error {
	if _, err := sm.VPC(cmd.Context(), id); err != nil {
		return simHints{notFound: "check --vpc: " + hintVPCs}.wrap(err)
	}
	return nil
}

func (a *app) simRouteCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "route", Short: "Route tables of customer VPCs: routes to peered ranges"}
	var vpc, destination, target string
	vpcFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&vpc, "vpc", "", "the customer VPC's ID (vpc-…)")
		c.MarkFlagRequired("vpc")
	}
	destFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&destination, "destination", "", "the destination range, canonical IPv4, e.g. 10.0.0.0/17")
		c.MarkFlagRequired("destination")
	}
	add := &cobra.Command{
		Use:     "add --vpc V --destination CIDR --target PCX",
		Short:   "Add a route to a range via a peering connection (a blackhole until the peering is active)",
		Example: `  moat sim route add --vpc vpc-0123456789abcdef0 --destination 10.0.0.0/17 --target pcx-0123456789abcdef0`,
		Args:    args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := simVPCExists(cmd, sm, vpc); err != nil {
				return err
			}
			pcx, err := a.cloudPeeringID(cmd, target)
			if err != nil {
				return err
			}
			r, err := sm.AddRoute(cmd.Context(), vpc, destination, pcx)
			if err != nil {
				return simHints{
					notFound: "check --target: it must be a pending or active peering of " + vpc + " (moat sim peering list --account A)",
					exists:   "delete the route first: moat sim route delete --vpc " + vpc + " --destination " + destination,
				}.wrap(err)
			}
			return a.print(simRouteOut(vpc, r))
		}),
	}
	vpcFlag(add)
	destFlag(add)
	add.Flags().StringVar(&target, "target", "", "the peering connection's ID (pcx-…: the cloud's, or Moat's, which is looked up)")
	add.MarkFlagRequired("target")
	list := &cobra.Command{
		Use:   "list --vpc V",
		Short: "List a customer VPC's routes to peered ranges, with their state (active or blackhole)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := simVPCExists(cmd, sm, vpc); err != nil {
				return err
			}
			rs, err := sm.ListRoutes(cmd.Context(), vpc)
			if err != nil {
				return err
			}
			out := make([]simRoute, len(rs))
			for i, r := range rs {
				out[i] = simRouteOut(vpc, r)
			}
			return a.print(out)
		}),
	}
	vpcFlag(list)
	del := &cobra.Command{
		Use:   "delete --vpc V --destination CIDR",
		Short: "Delete a route from a customer VPC's route table",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := simVPCExists(cmd, sm, vpc); err != nil {
				return err
			}
			rs, err := sm.ListRoutes(cmd.Context(), vpc)
			if err != nil {
				return err
			}
			if err := sm.DeleteRoute(cmd.Context(), vpc, destination); err != nil {
				return simHints{notFound: "check --destination: moat sim route list --vpc " + vpc + " shows the routes"}.wrap(err)
			}
			for _, r := range rs {
				if r.Destination.String() == destination {
					return a.print(simRouteOut(vpc, r))
				}
			}
			return nil
		}),
	}
	vpcFlag(del)
	destFlag(del)
	cmd.AddCommand(add, list, del)
	return cmd
}

func (a *app) simSGCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "sg", Short: "Security groups of hosts in customer VPCs"}
	egress := &cobra.Command{
		Use:   "egress",
		Short: "Egress rules: without one, a customer host reaches only its own VPC and the internet",
	}
	var host, proto, cidr string
	var port int
	hostFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&host, "host", "", "the host's name (a host in a customer VPC)")
		c.MarkFlagRequired("host")
	}
	ruleFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&proto, "protocol", "", "tcp, udp, or all (with no --port)")
		c.Flags().IntVar(&port, "port", 0, "destination port, 1 to 65535 (none for protocol all)")
		c.Flags().StringVar(&cidr, "cidr", "", "destination range, canonical IPv4, e.g. 10.0.0.0/17")
		c.MarkFlagRequired("protocol")
		c.MarkFlagRequired("cidr")
		c.PreRunE = func(cmd *cobra.Command, _ []string) error {
			if err := checkEgressFlags(proto, port); err != nil {
				return &usageError{err: err, cmd: cmd.CommandPath()}
			}
			return nil
		}
	}
	// hostOf fails with a hint naming --host unless host is a customer
	// VPC host, so that a later not-found error is about the rule.
	hostOf := func(cmd *cobra.Command, sm *sim.Sim) error {
		h, err := sm.Host(cmd.Context(), host)
		if err != nil {
			return simHints{notFound: "check --host: " + hintHosts}.wrap(err)
		}
		if h.Network == sim.NetworkInternet {
			return withHint(fmt.Errorf("host %s is on the internet, which has no security groups", host),
				"security groups are on hosts in customer VPCs: moat sim host create NAME --vpc V")
		}
		return nil
	}
	add := &cobra.Command{
		Use:     "add --host H --protocol P [--port N] --cidr C",
		Short:   "Allow a customer host to open connections to a range and port",
		Example: `  moat sim sg egress add --host app --protocol tcp --port 5432 --cidr 10.0.0.0/17`,
		Args:    args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := hostOf(cmd, sm); err != nil {
				return err
			}
			r, err := sm.AddEgress(cmd.Context(), host, proto, port, cidr)
			if err != nil {
				return simHints{exists: "moat sim sg egress list --host " + host + " shows the rules"}.wrap(err)
			}
			return a.print(simEgressOut(host, r))
		}),
	}
	hostFlag(add)
	ruleFlags(add)
	list := &cobra.Command{
		Use:   "list --host H",
		Short: "List a customer host's egress rules, in the order they were added",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := hostOf(cmd, sm); err != nil {
				return err
			}
			rs, err := sm.ListEgress(cmd.Context(), host)
			if err != nil {
				return err
			}
			out := make([]simEgress, len(rs))
			for i, r := range rs {
				out[i] = simEgressOut(host, r)
			}
			return a.print(out)
		}),
	}
	hostFlag(list)
	del := &cobra.Command{
		Use:   "delete --host H --protocol P [--port N] --cidr C",
		Short: "Delete a customer host's egress rule; new connections it allowed are dropped",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
			if err := hostOf(cmd, sm); err != nil {
				return err
			}
			if err := sm.DeleteEgress(cmd.Context(), host, proto, port, cidr); err != nil {
				return simHints{notFound: "check --protocol, --port and --cidr: moat sim sg egress list --host " + host + " shows the rules"}.wrap(err)
			}
			return a.print(simEgress{Host: host, Protocol: proto, Port: port, CIDR: cidr})
		}),
	}
	hostFlag(del)
	ruleFlags(del)
	egress.AddCommand(add, list, del)
	cmd.AddCommand(egress)
	return cmd
}

func (a *app) simClockCmd(run simRunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: "clock", Short: "The cloud's clock, which peering requests expire by (after 7 days)"}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "show",
			Short: "Show the cloud's clock",
			Args:  args(cobra.NoArgs),
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, _ []string) error {
				now, err := sm.Now(cmd.Context())
				if err != nil {
					return err
				}
				return a.print(simClock{Now: now})
			}),
		},
		&cobra.Command{
			Use:   "advance DURATION",
			Short: "Move the cloud's clock forward (8d, 7d12h, 36h, 90m); overdue peering requests expire at once",
			Long: `Move the cloud's clock forward by DURATION: a Go duration (36h, 90m) or a
number of days with the suffix d, optionally followed by one (8d, 7d12h).
Every process on this cloud, moat up's provider included, sees the move at
once; pending peering requests whose 7 days are up expire right away.`,
			Example: `  moat sim clock advance 8d`,
			Args:    args(cobra.ExactArgs(1)),
			PreRunE: func(cmd *cobra.Command, args []string) error {
				if _, err := parseDays(args[0]); err != nil {
					return &usageError{err: err, cmd: cmd.CommandPath()}
				}
				return nil
			},
			RunE: run(func(cmd *cobra.Command, sm *sim.Sim, args []string) error {
				d, err := parseDays(args[0])
				if err != nil {
					return err
				}
				now, err := sm.Advance(cmd.Context(), d)
				if err != nil {
					return err
				}
				return a.print(simClock{Now: now})
			}),
		},
	)
	return cmd
}
