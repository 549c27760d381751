package domain

import (
	"net/netip"
	"strings"
	"testing"
)

// explainFixture is the seed's situation: VPC 10.0.0.0/17 with a service at
// 10.0.0.10, a customer VPC 172.31.0.0/16 peered with it.
type explainFixture struct {
	svc     *Service
	vpc     *VPC
	pcx     *Peering
	cust    *CustomerVPC
	natAddr netip.Addr
}

func newExplainFixture() explainFixture {
	nat := netip.MustParseAddr("198.19.7.7")
	return explainFixture{
		svc: &Service{Meta: Meta{ID: "svc-a", State: StateRunning}, VPCID: "vpc-a",
			AllowedIPs: []AllowEntry{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}},
		vpc: &VPC{Meta: Meta{ID: "vpc-a"}, CIDR: "10.0.0.0/17"},
		pcx: &Peering{Meta: Meta{ID: "pcx-a", State: StateActive}, VPCID: "vpc-a", PeerVPCID: "vpc-0c", CloudPeeringID: "pcx-0123",
			PeerCIDRs: []string{"172.31.0.0/16"}},
		cust: &CustomerVPC{ID: "vpc-0c", CIDR: netip.MustParsePrefix("172.31.0.0/16"), NAT: nat,
			Routes: []CustomerRoute{{Destination: netip.MustParsePrefix("10.0.0.0/17"), PeeringCloudID: "pcx-0123", Active: true}},
			Egress: []EgressRule{{Proto: "tcp", Port: 5432, CIDR: netip.MustParsePrefix("10.0.0.0/17")}}},
		natAddr: nat,
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	node := []netip.Addr{netip.MustParseAddr("10.0.0.10")}
	pub := []netip.Addr{netip.MustParseAddr("198.18.0.4")}
	laptop := Source{Addr: netip.MustParseAddr("198.19.0.2"), Internet: true}
	custAddr := netip.MustParseAddr("172.31.0.5")
	for _, tc := range []struct {
		name       string
		change     func(f *explainFixture)
		nodes      []netip.Addr
		src        func(f *explainFixture) Source
		want       string
		wantSource string
		detail     string
	}{
		{name: "attached, from the internet", want: ReasonPublicAccessDisabled, detail: "no public access",
			src: func(*explainFixture) Source { return laptop }},
		{name: "attached, unknown public address", want: ReasonPublicAccessDisabled,
			src: func(*explainFixture) Source { return Source{Addr: netip.MustParseAddr("203.0.113.9")} }},
		{name: "attached, customer, all in place", want: ReasonAllowed, wantSource: "172.31.0.5"},
		{name: "attached, customer, pending", want: ReasonPeeringNotActive, detail: "is pending-acceptance",
			change: func(f *explainFixture) { f.pcx.State = StatePendingAcceptance }},
		{name: "attached, customer, rejected", want: ReasonPeeringNotActive, detail: "is rejected",
			change: func(f *explainFixture) { f.pcx.State = StateRejected }},
		{name: "attached, customer, deleted", want: ReasonNotPeered,
			change: func(f *explainFixture) { f.pcx.State = StateDeleted }},
		{name: "attached, customer, no peering", want: ReasonNotPeered, detail: "is not peered",
			change: func(f *explainFixture) { f.pcx.VPCID = "vpc-b" }},
		{name: "attached, same CIDR, another customer VPC", want: ReasonNotPeered, detail: "not to the source's vpc-0other",
			change: func(f *explainFixture) { f.cust.ID = "vpc-0other" }},
		{name: "attached, customer, no route", want: ReasonCustomerRouteMissing, detail: "has no route to 10.0.0.0/17",
			change: func(f *explainFixture) { f.cust.Routes = nil }},
		{name: "attached, customer, route elsewhere", want: ReasonCustomerRouteMissing, detail: "goes to pcx-other",
			change: func(f *explainFixture) { f.cust.Routes[0].PeeringCloudID = "pcx-other" }},
		{name: "attached, customer, narrower route elsewhere wins", want: ReasonCustomerRouteMissing,
			change: func(f *explainFixture) {
				f.cust.Routes = append(f.cust.Routes, CustomerRoute{Destination: netip.MustParsePrefix("10.0.0.0/24"), PeeringCloudID: "pcx-other", Active: true})
			}},
		{name: "attached, customer, blackhole", want: ReasonCustomerRouteMissing, detail: "blackhole",
			change: func(f *explainFixture) { f.cust.Routes[0].Active = false }},
		{name: "attached, customer, no egress", want: ReasonSecurityGroup, detail: "tcp/5432 to 10.0.0.10",
			change: func(f *explainFixture) { f.cust.Egress = nil }},
		{name: "attached, customer, egress to another port", want: ReasonSecurityGroup,
			change: func(f *explainFixture) { f.cust.Egress[0].Port = 5433 }},
		{name: "attached, customer, egress all to the node", want: ReasonAllowed,
			change: func(f *explainFixture) {
				f.cust.Egress = []EgressRule{{Proto: "all", CIDR: netip.MustParsePrefix("10.0.0.10/32")}}
			}},
		{name: "attached, customer, allowlist", want: ReasonAllowlist, detail: "not admitted",
			change: func(f *explainFixture) { f.svc.AllowedIPs = []AllowEntry{{CIDR: "172.31.9.0/24"}} }},
		{name: "attached, customer, public allowlist only", want: ReasonAllowlist,
			change: func(f *explainFixture) { f.svc.AllowedIPs = []AllowEntry{{CIDR: "198.19.0.0/16"}} }},
		{name: "attached, unknown private source, peered", want: ReasonAllowed,
			src: func(*explainFixture) Source { return Source{Addr: custAddr} }},
		{name: "attached, unknown private source, not peered", want: ReasonNotPeered, detail: "no peering of VPC vpc-a",
			src: func(*explainFixture) Source { return Source{Addr: netip.MustParseAddr("192.168.1.1")} }},
		{name: "attached, inside the VPC", want: ReasonAllowed,
			src: func(*explainFixture) Source { return Source{Addr: netip.MustParseAddr("10.0.0.99")} }},
		{name: "attached, no address", want: ReasonNoPath, nodes: []netip.Addr{{}}},
		{name: "attached, VPC unknown", want: ReasonNoPath, change: func(f *explainFixture) { f.vpc = nil }},

		{name: "public, laptop", want: ReasonAllowed, nodes: pub, wantSource: "198.19.0.2",
			change: func(f *explainFixture) { f.svc.VPCID = "" }, src: func(*explainFixture) Source { return laptop }},
		{name: "public, laptop refused", want: ReasonAllowlist, nodes: pub, detail: "not in the allowlist",
			change: func(f *explainFixture) { f.svc.VPCID, f.svc.AllowedIPs = "", []AllowEntry{{CIDR: "203.0.113.0/24"}} },
			src:    func(*explainFixture) Source { return laptop }},
		{name: "public, customer host via NAT", want: ReasonAllowed, nodes: pub, wantSource: "198.19.7.7",
			change: func(f *explainFixture) { f.svc.VPCID = "" }},
		{name: "public, customer host, NAT not allowed", want: ReasonAllowlist, nodes: pub, wantSource: "198.19.7.7",
			change: func(f *explainFixture) { f.svc.VPCID, f.svc.AllowedIPs = "", []AllowEntry{{CIDR: "172.31.0.0/16"}} }},
		{name: "public, customer host, no NAT", want: ReasonNoPath, nodes: pub,
			change: func(f *explainFixture) { f.svc.VPCID, f.cust.NAT = "", netip.Addr{} }},
		{name: "public, NAT address itself", want: ReasonAllowed, nodes: pub, wantSource: "198.19.7.7",
			change: func(f *explainFixture) { f.svc.VPCID = "" },
			src:    func(f *explainFixture) Source { return Source{Addr: f.natAddr, Internet: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newExplainFixture()
			if tc.change != nil {
				tc.change(&f)
			}
			src := Source{Addr: custAddr, CustomerVPC: f.cust}
			if tc.src != nil {
				src = tc.src(&f)
			}
			nodes := node
			if tc.nodes != nil {
				nodes = tc.nodes
			}
			var vpc *VPC
			if f.svc.VPCID != "" {
				vpc = f.vpc
			}
			got := Explain(ExplainInput{Service: f.svc, VPC: vpc, Peerings: []*Peering{f.pcx}, NodeAddrs: nodes, Source: src})
			if got.Reason != tc.want || got.Allowed != (tc.want == ReasonAllowed) {
				t.Fatalf("Explain(%s) = %+v, want %s", tc.name, got, tc.want)
			}
			if tc.wantSource != "" && got.Source.String() != tc.wantSource {
				t.Errorf("Explain(%s).Source = %v, want %s", tc.name, got.Source, tc.wantSource)
			}
			if !strings.Contains(got.Detail, tc.detail) || got.Detail == "" {
				t.Errorf("Explain(%s).Detail = %q, want it to contain %q", tc.name, got.Detail, tc.detail)
			}
		})
	}
}

// TestExplainPrefersActivePeering: of two peerings covering the source, the
// active one decides.
func TestExplainPrefersActivePeering(t *testing.T) {
	t.Parallel()
	f := newExplainFixture()
	old := *f.pcx
	old.ID, old.State, old.CloudPeeringID = "pcx-old", StateExpired, "pcx-0old"
	got := Explain(ExplainInput{Service: f.svc, VPC: f.vpc, Peerings: []*Peering{&old, f.pcx},
		NodeAddrs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Source: Source{Addr: netip.MustParseAddr("172.31.0.5"), CustomerVPC: f.cust}})
	if !got.Allowed {
		t.Errorf("Explain with an expired and an active peering = %+v, want allowed", got)
	}
}

// FuzzExplain: Explain never says "allowed" for a source the compiled
// policy does not admit (seen as the service sees it), never lets an
// internet source reach an attached service, and always gives one of its
// codes, allowed exactly when Allowed.
func FuzzExplain(f *testing.F) {
	f.Add(uint32(0), uint8(0), uint32(0xac1f0005), uint8(0), uint8(0xff), true, false)
	f.Add(uint32(0xac1f0000), uint8(24), uint32(0xac1f0005), uint8(1), uint8(0x3f), true, false)
	f.Add(uint32(0xc6130000), uint8(16), uint32(0xc6130002), uint8(2), uint8(0), false, true)
	f.Fuzz(func(t *testing.T, allowIP uint32, allowBits uint8, srcIP uint32, peerState uint8, flags uint8, attached, internet bool) {
		mk := func(ip uint32, bits uint8) netip.Prefix {
			p, _ := addr4(ip).Prefix(int(bits % 33))
			return p
		}
		fx := newExplainFixture()
		fx.svc.AllowedIPs = []AllowEntry{{CIDR: mk(allowIP, allowBits).String()}}
		fx.pcx.State = []string{StateActive, StatePendingAcceptance, StateRejected, StateDeleted, StateDeleting}[int(peerState)%5]
		if flags&1 == 0 {
			fx.cust.Routes = nil
		}
		if flags&2 == 0 {
			fx.cust.Routes = append(fx.cust.Routes, CustomerRoute{Destination: mk(srcIP, flags), PeeringCloudID: "pcx-0123", Active: flags&4 != 0})
		}
		if flags&8 == 0 {
			fx.cust.Egress = nil
		}
		if flags&16 == 0 {
			fx.cust.NAT = addr4(srcIP ^ allowIP)
		}
		nodes := []netip.Addr{netip.MustParseAddr("10.0.0.10")}
		var vpc *VPC
		if attached {
			vpc = fx.vpc
		} else {
			fx.svc.VPCID = ""
			nodes = []netip.Addr{netip.MustParseAddr("198.18.0.4")}
		}
		src := Source{Addr: addr4(srcIP), Internet: internet}
		if flags&32 == 0 && !internet {
			src.CustomerVPC = fx.cust
		}
		v := Explain(ExplainInput{Service: fx.svc, VPC: vpc, Peerings: []*Peering{fx.pcx}, NodeAddrs: nodes, Source: src})
		switch v.Reason {
		case ReasonAllowed, ReasonAllowlist, ReasonPublicAccessDisabled, ReasonNotPeered, ReasonPeeringNotActive,
			ReasonCustomerRouteMissing, ReasonSecurityGroup, ReasonNoPath:
		default:
			t.Fatalf("Explain = %+v: unknown reason", v)
		}
		if v.Allowed != (v.Reason == ReasonAllowed) || v.Detail == "" {
			t.Fatalf("Explain = %+v: Allowed and Reason disagree, or no detail", v)
		}
		if !v.Allowed {
			return
		}
		if !CompileAccess(fx.svc, vpc, []*Peering{fx.pcx}, nil).Admits(v.Source) {
			t.Fatalf("Explain = %+v, but the compiled policy does not admit %v", v, v.Source)
		}
		if attached && internet {
			t.Fatalf("Explain = %+v for an internet source to an attached service", v)
		}
		if attached && src.CustomerVPC != nil && fx.pcx.State != StateActive {
			t.Fatalf("Explain = %+v over a %s peering", v, fx.pcx.State)
		}
	})
}

func addr4(ip uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)})
}
