package sim_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/sim"
)

// server listens on TCP port inside ns, answers every connection with the
// address it came from, and returns the channel of those addresses.
func server(t *testing.T, c *localcloud.Cloud, ns string, port int) <-chan netip.Addr {
	t.Helper()
	var ln net.Listener
	err := c.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan netip.Addr, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			from := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			_, _ = io.WriteString(conn, from.String()+"\n")
			conn.Close()
			select {
			case seen <- from:
			default:
			}
		}
	}()
	return seen
}

// dial connects from ns to dst and reads the greeting: nil when the path
// is open.
func dial(c *localcloud.Cloud, ns string, dst netip.AddrPort) error {
	var conn net.Conn
	err := c.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", dst.String(), 400*time.Millisecond)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = io.ReadAll(conn)
	return err
}

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	vpcRE     = regexp.MustCompile(`^vpc-[0-9a-f]{17}$`)
)

func TestCustomerVPCAndHosts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c, dir := newSim(t)
	acct, err := s.CreateAccount(ctx)
	if err != nil || !accountRE.MatchString(acct.ID) {
		t.Fatalf("CreateAccount() = %+v, %v; want 12 digits", acct, err)
	}
	accts, err := s.ListAccounts(ctx)
	if err != nil || len(accts) != 1 || accts[0] != acct {
		t.Errorf("ListAccounts() = %+v, %v; want [%+v]", accts, err, acct)
	}

	for _, tc := range []struct{ account, region, cidr, want string }{
		{acct.ID, "us-east-1", "10.0.0.7/17", "10.0.0.0/17"},
		{acct.ID, "mars-1", "172.31.0.0/16", "AWS region"},
		{acct.ID, "us-east-1", "172.16.0.0/12", "/16 to /28"},
		{acct.ID, "us-east-1", "8.8.0.0/16", "RFC 1918"},
		{"000000000000", "us-east-1", "172.31.0.0/16", "not found"},
	} {
		if _, err := s.CreateVPC(ctx, tc.account, tc.region, tc.cidr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateVPC(%s, %s, %s) = %v, want an error naming %q", tc.account, tc.region, tc.cidr, err, tc.want)
		}
	}
	v, err := s.CreateVPC(ctx, acct.ID, "ap-southeast-2", "172.31.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if !vpcRE.MatchString(v.ID) || v.Account != acct.ID || v.CIDR != netip.MustParsePrefix("172.31.0.0/16") ||
		v.RouterNS != c.RouterNS(v.ID) || !localcloud.SimPool.Contains(v.NATAddr) {
		t.Errorf("CreateVPC() = %+v", v)
	}
	h, err := s.CreateHost(ctx, "app", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Network != v.ID || !v.CIDR.Contains(h.Addr) {
		t.Errorf("CreateHost(app) = %+v, want an address in %v", h, v.CIDR)
	}
	if again, err := s.CreateHost(ctx, "app", v.ID); err != nil || again != h {
		t.Errorf("CreateHost(app) again = %+v, %v; want %+v", again, err, h)
	}
	if _, err := s.CreateInternetHost(ctx, "app"); !errors.Is(err, sim.ErrExists) {
		t.Errorf("CreateInternetHost(app) = %v, want ErrExists", err)
	}
	var out strings.Builder
	if code, err := s.Exec(ctx, "app", []string{"ip", "-4", "route", "show", "default"}, nil, &out, nil); err != nil || code != 0 ||
		!strings.Contains(out.String(), "via 172.31.0.1") {
		t.Errorf("Exec(app, ip route) = %d, %v, %q; want the default route via 172.31.0.1", code, err, out.String())
	}

	// Reopened, the sim lists what it made.
	s2, err := sim.Open(sim.Config{Cloud: c, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	vpcs, err := s2.ListVPCs(ctx)
	if err != nil || len(vpcs) != 1 || vpcs[0] != v {
		t.Errorf("ListVPCs() = %+v, %v; want [%+v]", vpcs, err, v)
	}
	hosts, err := s2.ListHosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0] != h {
		t.Errorf("ListHosts() = %+v, %v; want [%+v]", hosts, err, h)
	}

	if err := s.DeleteVPC(ctx, v.ID); !errors.Is(err, sim.ErrInUse) || !strings.Contains(err.Error(), "host app") {
		t.Errorf("DeleteVPC with a host = %v, want ErrInUse naming host app", err)
	}
	if err := s.DeleteHost(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVPC(ctx, v.ID); err != nil {
		t.Fatalf("DeleteVPC: %v", err)
	}
	if _, err := s.VPC(ctx, v.ID); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("VPC after delete = %v, want ErrNotFound", err)
	}
	if vs, err := c.VPCs(ctx); err != nil || len(vs) != 0 {
		t.Errorf("routers after DeleteVPC = %+v, %v; want none", vs, err)
	}
}

func TestNAT(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c, _ := newSim(t)
	acct, err := s.CreateAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVPC(ctx, acct.ID, "us-east-1", "172.31.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.CreateHost(ctx, "app", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	// A public service on the internet, as a public node would be.
	svc, err := c.AddHost(ctx, "svc", localcloud.Internet(localcloud.PublicPool))
	if err != nil {
		t.Fatal(err)
	}
	svcAddr, _ := svc.Addr(localcloud.NetRef{})
	seen := server(t, c, svc.NS, 5432)
	if err := dial(c, h.NS, netip.AddrPortFrom(svcAddr, 5432)); err != nil {
		t.Fatalf("customer host -> public service %v: %v", svcAddr, err)
	}
	if from := <-seen; from != v.NATAddr {
		t.Errorf("public service saw %v, want the NAT's address %v (not %v)", from, v.NATAddr, h.Addr)
	}
}

// peeringFixture is a customer (account, VPC 172.31.0.0/16, host "app")
// and a provider VPC router 10.0.0.0/17 with a node listening on 5432, as
// the local provider would build them.
type peeringFixture struct {
	s      *sim.Sim
	c      *localcloud.Cloud
	acct   sim.Account
	vpc    sim.VPC
	app    sim.Host
	prov   localcloud.VPC
	target netip.AddrPort
}

func newPeeringFixture(t *testing.T) *peeringFixture {
	t.Helper()
	ctx := context.Background()
	f := &peeringFixture{}
	f.s, f.c, _ = newSim(t)
	var err error
	if f.acct, err = f.s.CreateAccount(ctx); err != nil {
		t.Fatal(err)
	}
	if f.vpc, err = f.s.CreateVPC(ctx, f.acct.ID, "eu-west-1", "172.31.0.0/16"); err != nil {
		t.Fatal(err)
	}
	if f.app, err = f.s.CreateHost(ctx, "app", f.vpc.ID); err != nil {
		t.Fatal(err)
	}
	if f.prov, err = f.c.EnsureVPC(ctx, "vpc-prov", netip.MustParsePrefix("10.0.0.0/17")); err != nil {
		t.Fatal(err)
	}
	node, err := f.c.AddHost(ctx, "node", localcloud.InVPC(f.prov.ID))
	if err != nil {
		t.Fatal(err)
	}
	nodeAddr, _ := node.Addr(localcloud.InVPC(f.prov.ID))
	f.target = netip.AddrPortFrom(nodeAddr, 5432)
	server(t, f.c, node.NS, 5432)
	return f
}

// request sends a peering request from the provider VPC to the
// customer's, declaring declared.
func (f *peeringFixture) request(t *testing.T, declared string) localcloud.Peering {
	t.Helper()
	p, err := f.c.RequestPeering(context.Background(), localcloud.PeeringRequest{
		ID:              localcloud.NewPeeringID(),
		RequesterVPC:    f.prov.ID,
		AccepterAccount: f.acct.ID,
		AccepterVPC:     f.vpc.ID,
		AccepterRegion:  f.vpc.Region,
		DeclaredCIDRs:   []netip.Prefix{netip.MustParsePrefix(declared)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *peeringFixture) status(t *testing.T, id string) localcloud.Peering {
	t.Helper()
	p, err := f.c.PeeringStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPeeringPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPeeringFixture(t)
	s, c := f.s, f.c
	reach := func(step string, want bool) {
		t.Helper()
		err := dial(c, f.app.NS, f.target)
		if (err == nil) != want {
			t.Errorf("%s: customer host -> %v: %v, want reachable %v", step, f.target, err, want)
		}
	}

	p := f.request(t, "172.31.0.0/16")
	if p.State != localcloud.PeeringPendingAcceptance {
		t.Fatalf("RequestPeering() = %+v, want pending-acceptance", p)
	}
	inbox, err := s.Peerings(ctx, f.acct.ID)
	if err != nil || len(inbox) != 1 || inbox[0].ID != p.ID || inbox[0].State != localcloud.PeeringPendingAcceptance {
		t.Errorf("Peerings(%s) = %+v, %v; want [%s pending]", f.acct.ID, inbox, err, p.ID)
	}
	// The provider's return route goes in as soon as it likes; it
	// forwards nothing until acceptance.
	if err := c.AddRoute(ctx, f.prov.NS, f.vpc.CIDR, p.AccepterAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRoute(ctx, f.vpc.ID, "10.0.0.7/17", p.ID); err == nil || !strings.Contains(err.Error(), "10.0.0.0/17") {
		t.Errorf("AddRoute(10.0.0.7/17) = %v, want an error naming 10.0.0.0/17", err)
	}
	if _, err := s.AddEgress(ctx, "app", "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	rt, err := s.AddRoute(ctx, f.vpc.ID, "10.0.0.0/17", p.ID)
	if err != nil || rt.State != sim.RouteBlackhole {
		t.Errorf("AddRoute to a pending peering = %+v, %v; want a blackhole", rt, err)
	}
	reach("pending, route and egress in place", false)

	if err := s.DeleteRoute(ctx, f.vpc.ID, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEgress(ctx, "app", "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	a, err := s.Accept(ctx, p.ID)
	if err != nil || a.State != localcloud.PeeringActive {
		t.Fatalf("Accept = %+v, %v; want active", a, err)
	}
	if st := f.status(t, p.ID); st.State != localcloud.PeeringActive {
		t.Errorf("provider sees %s, want active", st.State)
	}
	reach("active, no route, no egress rule", false)
	if _, err := s.AddRoute(ctx, f.vpc.ID, "10.0.0.0/17", p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRoute(ctx, f.vpc.ID, "10.0.0.0/17", p.ID); !errors.Is(err, sim.ErrExists) {
		t.Errorf("AddRoute twice = %v, want ErrExists", err)
	}
	reach("active, route, no egress rule", false)
	if _, err := s.AddEgress(ctx, "app", "tcp", 5433, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	reach("active, route, egress to another port", false)
	if _, err := s.AddEgress(ctx, "app", "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	reach("active, route, egress rule", true)
	routes, err := s.ListRoutes(ctx, f.vpc.ID)
	if want := (sim.Route{Destination: f.prov.CIDR, Target: p.ID, State: sim.RouteActive}); err != nil || len(routes) != 1 || routes[0] != want {
		t.Errorf("ListRoutes() = %+v, %v; want [%+v]", routes, err, want)
	}
	rules, err := s.ListEgress(ctx, "app")
	if err != nil || len(rules) != 2 || rules[1].String() != "tcp/5432 to 10.0.0.0/17" {
		t.Errorf("ListEgress() = %v, %v", rules, err)
	}
	if err := s.DeleteVPC(ctx, f.vpc.ID); !errors.Is(err, sim.ErrInUse) || !strings.Contains(err.Error(), p.ID) {
		t.Errorf("DeleteVPC with an active peering = %v, want ErrInUse naming %s", err, p.ID)
	}

	// The provider deletes the peering: the path is cut at once.
	if d, err := c.DeletePeering(ctx, p.ID); err != nil || d.State != localcloud.PeeringDeleted {
		t.Fatalf("DeletePeering = %+v, %v; want deleted", d, err)
	}
	reach("deleted", false)
	routes, err = s.ListRoutes(ctx, f.vpc.ID)
	if err != nil || len(routes) != 1 || routes[0].State != sim.RouteBlackhole {
		t.Errorf("ListRoutes() after delete = %+v, %v; want one blackhole", routes, err)
	}
}

func TestPeeringRejectExpireMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPeeringFixture(t)
	s := f.s

	// Reject.
	rj := f.request(t, "172.31.0.0/16")
	if r, err := s.Reject(ctx, rj.ID); err != nil || r.State != localcloud.PeeringRejected {
		t.Errorf("Reject = %+v, %v; want rejected", r, err)
	}
	if st := f.status(t, rj.ID); st.State != localcloud.PeeringRejected || st.AccepterAddr.IsValid() {
		t.Errorf("provider sees %+v, want rejected without a link", st)
	}
	if _, err := s.AddRoute(ctx, f.vpc.ID, "10.0.0.0/17", rj.ID); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Errorf("AddRoute to a rejected peering = %v, want an error", err)
	}
	if _, err := s.Accept(ctx, rj.ID); !errors.Is(err, localcloud.ErrState) {
		t.Errorf("Accept(rejected) = %v, want ErrState", err)
	}

	// Declared peer CIDRs that are not the VPC's: failed on acceptance.
	mm := f.request(t, "172.16.0.0/16")
	m, err := s.Accept(ctx, mm.ID)
	if err != nil || m.State != localcloud.PeeringFailed || !strings.Contains(m.Reason, "172.16.0.0/16") {
		t.Errorf("Accept(mismatched) = %+v, %v; want failed naming 172.16.0.0/16", m, err)
	}
	if st := f.status(t, mm.ID); st.State != localcloud.PeeringFailed || st.Reason == "" {
		t.Errorf("provider sees %+v, want failed with a reason", st)
	}

	// Expiry: 8 days on the cloud's clock, seen by the provider's side
	// too.
	ex := f.request(t, "172.31.0.0/16")
	if _, err := s.Advance(ctx, 6*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t, ex.ID); st.State != localcloud.PeeringPendingAcceptance {
		t.Errorf("after 6 days: %s, want pending-acceptance", st.State)
	}
	if _, err := s.Advance(ctx, 2*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t, ex.ID); st.State != localcloud.PeeringExpired || st.AccepterAddr.IsValid() {
		t.Errorf("after 8 days: %+v, want expired without a link", st)
	}
	if _, err := s.Accept(ctx, ex.ID); !errors.Is(err, localcloud.ErrState) {
		t.Errorf("Accept(expired) = %v, want ErrState", err)
	}
	inbox, err := s.Peerings(ctx, f.acct.ID)
	if err != nil || len(inbox) != 3 {
		t.Errorf("Peerings() = %+v, %v; want 3", inbox, err)
	}
	// No live peering left: the VPC can go once its host has.
	if err := s.DeleteHost(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVPC(ctx, f.vpc.ID); err != nil {
		t.Errorf("DeleteVPC with only terminal peerings: %v", err)
	}
}

func TestEgressValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newSim(t)
	if _, err := s.CreateInternetHost(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddEgress(ctx, "laptop", "tcp", 5432, "10.0.0.0/17"); err == nil {
		t.Error("AddEgress on an internet host: want an error")
	}
	for _, tc := range []struct {
		proto string
		port  int
		cidr  string
	}{{"tcp", 5432, "10.0.0.7/17"}, {"tcp", 0, "10.0.0.0/17"}, {"icmp", 0, "10.0.0.0/17"}, {"all", 22, "10.0.0.0/17"}, {"tcp", 5432, "::/0"}} {
		if _, err := s.AddEgress(ctx, "nope", tc.proto, tc.port, tc.cidr); err == nil || errors.Is(err, sim.ErrNotFound) {
			t.Errorf("AddEgress(%s, %d, %s) = %v, want a validation error", tc.proto, tc.port, tc.cidr, err)
		}
	}
}
