package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/sim"
)

// defaultProbeTimeout is how long verify waits for a SYN to be answered.
const defaultProbeTimeout = time.Second

func (a *app) explainCmd() *cobra.Command {
	var from, dataDir string
	cmd := &cobra.Command{
		Use:   "explain SVC --from IP",
		Short: "Say whether a source can connect to a service, and the deciding reason (from the model, no probe)",
		Long: `Say whether a client at IP can open a connection to the service, and the
first thing on the packet's path that decides it, computed from the model
(the API's service, VPC and peerings, and the simulated customer cloud's
route tables and security groups), without sending a packet.

It prints "allowed", or "refused: REASON: DETAIL" where REASON is one of
public-access-disabled, not-peered, peering-not-active,
customer-route-missing, security-group, allowlist, no-path. It exits 0
either way: it answers a question. -o json prints the verdict.

Run as root on the machine of moat up, the source is looked up among the
simulated hosts (and customer NAT addresses) of --data-dir. Otherwise the
source's network is judged from its address alone, and explain says so.`,
		Example: `  moat explain svc-... --from 198.19.0.2
  moat explain svc-... --from 172.31.0.5 -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(from)
			if err != nil {
				return usageErrorf("--from %q is not an IP address", from)
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			var sm *sim.Sim
			note := ""
			euid := os.Geteuid
			if a.geteuid != nil {
				euid = a.geteuid
			}
			if euid() != 0 {
				note = "not root: the simulated cloud was not read; the source is judged from its address and the API alone"
			} else if sm, _, err = openSim(a.getenv, dataDir); err != nil {
				sm, note = nil, fmt.Sprintf("no simulated cloud (%v); the source is judged from its address and the API alone", err)
			}
			v, err := ExplainSource(cmd.Context(), cl, p, args[0], addr, sm)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintf(a.stderr, "moat: note: %s\n", note)
			}
			if v.Note != "" {
				fmt.Fprintf(a.stderr, "moat: note: %s\n", v.Note)
			}
			if a.output == "json" {
				return a.print(v)
			}
			_, err = fmt.Fprintln(a.stdout, verdictLine(v))
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the source address (a simulated host's, a NAT's, or any)")
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the data directory of moat up (holds the simulator's state)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func (a *app) verifyCmd() *cobra.Command {
	var dataDir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "verify SVC",
		Short: "Probe a service from every simulated host and check that explain agrees (moat up, as root)",
		Long: `Probe the service's primary on TCP 5432 from every simulated host of moat up
(a SYN answered is reachable; from a customer host toward a public service
the probe goes out through the VPC's NAT, as the host's would), explain the
same source from the model, and print one row per host:
HOST, ADDRESS, EXPLAIN, PROBE, AGREE.

It exits 1 when explain and a probe disagree: that is a bug in Moat's model
or in its enforcement. Runs on the machine of moat up, as root.`,
		Example: `  moat verify svc-...
  moat verify svc-... -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.needRoot("moat verify"); err != nil {
				return err
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			sm, cloud, err := openSim(a.getenv, dataDir)
			if err != nil {
				return err
			}
			rows, err := Verify(cmd.Context(), VerifyConfig{Client: cl, Project: p, Service: args[0], Sim: sm, Cloud: cloud, Timeout: timeout})
			if err != nil {
				return err
			}
			if a.output == "json" {
				if err := a.print(rows); err != nil {
					return err
				}
			} else if err := writeVerifyTable(a.stdout, rows); err != nil {
				return err
			}
			var bad []string
			for _, r := range rows {
				if !r.Agree {
					bad = append(bad, r.Host)
					fmt.Fprintf(a.stderr, "moat: %s: explain says %s; the probe %s\n", r.Host, verdictLine(r.Explain), probeWord(r))
				}
			}
			if len(bad) > 0 {
				return withHint(fmt.Errorf("explain and the probes disagree for %s", strings.Join(bad, ", ")),
					"a change may not be applied yet (run verify again); if it persists, the model or the enforcement is wrong: report it")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "the data directory of moat up (holds the simulator's state)")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultProbeTimeout, "how long a probe waits for an answer")
	return cmd
}

// verdictLine is a verdict as explain prints it.
func verdictLine(v domain.Verdict) string {
	if v.Allowed {
		return "allowed"
	}
	return "refused: " + v.Reason + ": " + v.Detail
}

// VerifyConfig configures Verify.
type VerifyConfig struct {
	Client  *client.Client
	Project string
	Service string
	// Sim is the simulated cloud whose hosts probe; Cloud the local cloud
	// it stands on.
	Sim   *sim.Sim
	Cloud *localcloud.Cloud
	// Timeout is a probe's (defaultProbeTimeout when 0).
	Timeout time.Duration
}

// VerifyRow is one simulated host's verdict and probe.
type VerifyRow struct {
	Host    string         `json:"host"`
	Address string         `json:"address"`
	Explain domain.Verdict `json:"explain"`
	// Reachable is the probe's outcome; ProbeError why it failed.
	Reachable  bool   `json:"reachable"`
	ProbeError string `json:"probe_error,omitempty"`
	Agree      bool   `json:"agree"`
}

// Verify explains the service from every simulated host with an address
// and probes it from there for real (a TCP connection to the primary's
// port 5432, in parallel), returning a row per host by name. It is moat
// verify without the printing; tests call it.
func Verify(ctx context.Context, cfg VerifyConfig) ([]VerifyRow, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultProbeTimeout
	}
	m, err := loadModel(ctx, cfg.Client, cfg.Project, cfg.Service)
	if err != nil {
		return nil, err
	}
	hosts, err := cfg.Sim.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("simulated hosts: %w", err)
	}
	var rows []VerifyRow
	for _, h := range hosts {
		if !h.Addr.IsValid() {
			continue
		}
		src, err := hostSource(ctx, cfg.Sim, h)
		if err != nil {
			return nil, err
		}
		rows = append(rows, VerifyRow{Host: h.Name, Address: h.Addr.String(), Explain: domain.Explain(m.input(src))})
	}
	if !m.target.IsValid() {
		for i := range rows {
			rows[i].ProbeError = "the service has no address"
			rows[i].Agree = !rows[i].Explain.Allowed
		}
		return rows, nil
	}
	dst := netip.AddrPortFrom(m.target, domain.ServicePort)
	var wg sync.WaitGroup
	for i := range rows {
		h := hosts[indexHost(hosts, rows[i].Host)]
		wg.Go(func() {
			err := probe(cfg.Cloud, h.NS, dst, timeout)
			rows[i].Reachable = err == nil
			if err != nil {
				rows[i].ProbeError = err.Error()
			}
			rows[i].Agree = rows[i].Reachable == rows[i].Explain.Allowed
		})
	}
	wg.Wait()
	return rows, nil
}

func indexHost(hosts []sim.Host, name string) int {
	for i, h := range hosts {
		if h.Name == name {
			return i
		}
	}
	return -1
}

// probe opens a TCP connection from namespace ns to dst: nil when the SYN
// is answered. A reset is an answer too (the path is open, nothing
// listens): every filter on the way drops, none rejects.
func probe(cloud *localcloud.Cloud, ns string, dst netip.AddrPort, timeout time.Duration) error {
	var conn net.Conn
	err := cloud.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	})
	if conn != nil {
		conn.Close()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

// ExplainSource explains whether addr can connect to service svc of
// project p: the service, its VPC and peerings from the API; the source's
// network from sm when it is not nil (a simulated host with that address,
// or a customer VPC's NAT address), else from the address alone.
func ExplainSource(ctx context.Context, cl *client.Client, p, svc string, addr netip.Addr, sm *sim.Sim) (domain.Verdict, error) {
	m, err := loadModel(ctx, cl, p, svc)
	if err != nil {
		return domain.Verdict{}, err
	}
	src := domain.Source{Addr: addr}
	if sm != nil {
		if src, err = simSource(ctx, sm, addr); err != nil {
			return domain.Verdict{}, err
		}
	}
	return domain.Explain(m.input(src)), nil
}

// model is the API's view of a service, as Explain wants it.
type model struct {
	svc      *domain.Service
	vpc      *domain.VPC
	peerings []*domain.Peering
	target   netip.Addr
	nodes    []netip.Addr
}

func (m model) input(src domain.Source) domain.ExplainInput {
	return domain.ExplainInput{Service: m.svc, VPC: m.vpc, Peerings: m.peerings, NodeAddrs: m.nodes, Source: src}
}

func loadModel(ctx context.Context, cl *client.Client, p, id string) (model, error) {
	s, err := cl.GetService(ctx, p, id)
	if err != nil {
		return model{}, err
	}
	m := model{svc: &domain.Service{Meta: domain.Meta{ID: s.ID, Name: s.Name, State: s.State}, VPCID: s.VPCID}}
	for _, e := range s.AllowedIPs {
		m.svc.AllowedIPs = append(m.svc.AllowedIPs, domain.AllowEntry{CIDR: e.CIDR, Description: e.Description})
	}
	if s.Connection != nil {
		m.target, _ = netip.ParseAddr(s.Connection.Address)
	}
	m.nodes = append(m.nodes, m.target)
	for _, n := range s.NodeList {
		if a, err := netip.ParseAddr(n.Address); err == nil && a != m.target {
			m.nodes = append(m.nodes, a)
		}
	}
	if s.VPCID == "" {
		return m, nil
	}
	v, err := cl.GetVPC(ctx, p, s.VPCID)
	if err != nil {
		return model{}, fmt.Errorf("vpc %s of service %s: %w", s.VPCID, s.ID, err)
	}
	m.vpc = &domain.VPC{Meta: domain.Meta{ID: v.ID, Name: v.Name, State: v.State}, Region: v.Region, CIDR: v.CIDR, CloudVPCID: v.CloudVPCID}
	ps, err := cl.ListPeerings(ctx, p, v.ID)
	if err != nil {
		return model{}, fmt.Errorf("peerings of %s: %w", v.ID, err)
	}
	for _, pc := range ps {
		m.peerings = append(m.peerings, domainPeering(pc))
	}
	return m, nil
}

func domainPeering(pc apitype.Peering) *domain.Peering {
	return &domain.Peering{Meta: domain.Meta{ID: pc.ID, State: pc.State}, VPCID: pc.VPCID, PeerAccountID: pc.PeerAccountID,
		PeerVPCID: pc.PeerVPCID, PeerRegion: pc.PeerRegion, PeerCIDRs: pc.PeerCIDRs, CloudPeeringID: pc.CloudPeeringID}
}

// simSource describes addr as the simulated cloud knows it: a simulated
// host's address, a customer VPC's NAT address (on the internet), or
// neither (the address alone).
func simSource(ctx context.Context, sm *sim.Sim, addr netip.Addr) (domain.Source, error) {
	addr = addr.Unmap()
	hosts, err := sm.ListHosts(ctx)
	if err != nil {
		return domain.Source{}, fmt.Errorf("simulated hosts: %w", err)
	}
	for _, h := range hosts {
		if h.Addr == addr {
			return hostSource(ctx, sm, h)
		}
	}
	vpcs, err := sm.ListVPCs(ctx)
	if err != nil {
		return domain.Source{}, fmt.Errorf("customer VPCs: %w", err)
	}
	for _, v := range vpcs {
		if v.NATAddr == addr {
			return domain.Source{Addr: addr, Internet: true}, nil
		}
	}
	return domain.Source{Addr: addr}, nil
}

// hostSource describes simulated host h: on the internet, or in a customer
// VPC with its routes and h's egress rules.
func hostSource(ctx context.Context, sm *sim.Sim, h sim.Host) (domain.Source, error) {
	src := domain.Source{Addr: h.Addr}
	if h.Network == sim.NetworkInternet {
		src.Internet = true
		return src, nil
	}
	v, err := sm.VPC(ctx, h.Network)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	cv := &domain.CustomerVPC{ID: v.ID, CIDR: v.CIDR, NAT: v.NATAddr}
	routes, err := sm.ListRoutes(ctx, v.ID)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for _, r := range routes {
		cv.Routes = append(cv.Routes, domain.CustomerRoute{Destination: r.Destination, PeeringCloudID: r.Target, Active: r.State == sim.RouteActive})
	}
	rules, err := sm.ListEgress(ctx, h.Name)
	if err != nil {
		return domain.Source{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for _, r := range rules {
		cv.Egress = append(cv.Egress, domain.EgressRule{Proto: r.Protocol, Port: r.Port, CIDR: r.CIDR})
	}
	src.CustomerVPC = cv
	return src, nil
}

func probeWord(r VerifyRow) string {
	if r.Reachable {
		return "connected"
	}
	if r.ProbeError != "" {
		return "failed: " + r.ProbeError
	}
	return "failed"
}

// writeVerifyTable writes verify's rows as aligned columns.
func writeVerifyTable(w io.Writer, rows []VerifyRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tEXPLAIN\tPROBE\tAGREE")
	for _, r := range rows {
		ex := "allowed"
		if !r.Explain.Allowed {
			ex = "refused: " + r.Explain.Reason
		}
		probe := "unreachable"
		if r.Reachable {
			probe = "reachable"
		}
		agree := "yes"
		if !r.Agree {
			agree = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Host, r.Address, ex, probe, agree)
	}
	return tw.Flush()
}
