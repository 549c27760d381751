package domain

import (
	"net/netip"
	"testing"
)

func TestCompileAccess(t *testing.T) {
	svc := &Service{AllowedIPs: []AllowEntry{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}}
	vpc := &VPC{Meta: Meta{ID: "vpc-a"}, CIDR: "10.0.0.0/17"}
	active := &Peering{Meta: Meta{State: StateActive}, VPCID: "vpc-a", PeerCIDRs: []string{"172.31.0.0/16"}}
	pending := &Peering{Meta: Meta{State: StatePendingAcceptance}, VPCID: "vpc-a", PeerCIDRs: []string{"192.168.0.0/16"}}
	for _, tc := range []struct {
		name   string
		allow  []string
		vpc    *VPC
		peers  []*Peering
		admit  []string
		refuse []string
	}{
		{"public open", []string{"0.0.0.0/0", "::/0"}, nil, nil, []string{"198.19.0.5", "2001:db8::1"}, nil},
		{"public narrow", []string{"198.19.0.5/32"}, nil, nil, []string{"198.19.0.5"}, []string{"198.19.0.6", "2001:db8::1"}},
		{"attached open", []string{"0.0.0.0/0", "::/0"}, vpc, []*Peering{active, pending}, []string{"10.0.0.9", "172.31.4.4"}, []string{"198.19.0.5", "192.168.1.1", "2001:db8::1", "10.0.200.1"}},
		{"attached narrow", []string{"172.31.4.0/24"}, vpc, []*Peering{active}, []string{"172.31.4.4"}, []string{"172.31.5.4", "10.0.0.9"}},
		{"attached public allowlist", []string{"198.19.0.0/16"}, vpc, []*Peering{active}, nil, []string{"198.19.0.5", "10.0.0.9"}},
	} {
		s := *svc
		s.AllowedIPs = nil
		for _, c := range tc.allow {
			s.AllowedIPs = append(s.AllowedIPs, AllowEntry{CIDR: c})
		}
		if tc.vpc != nil {
			s.VPCID = tc.vpc.ID
		}
		acc := CompileAccess(&s, tc.vpc, tc.peers, nil)
		for _, a := range tc.admit {
			if !acc.Admits(netip.MustParseAddr(a)) {
				t.Errorf("%s: CompileAccess = %+v does not admit %s", tc.name, acc, a)
			}
		}
		for _, a := range tc.refuse {
			if acc.Admits(netip.MustParseAddr(a)) {
				t.Errorf("%s: CompileAccess = %+v admits %s", tc.name, acc, a)
			}
		}
	}
}

// FuzzCompileAccess: the compiled policy never admits a source the policy
// does not (allowlist, and for an attached service the VPC and active
// peerings), and admits every source it does.
func FuzzCompileAccess(f *testing.F) {
	f.Add(uint32(0x0a000000), uint8(8), uint32(0xac1f0000), uint8(16), uint32(0x0a000001), true, true)
	f.Add(uint32(0), uint8(0), uint32(0xac1f0000), uint8(16), uint32(0xc6130005), false, true)
	f.Fuzz(func(t *testing.T, allowIP uint32, allowBits uint8, peerIP uint32, peerBits uint8, probe uint32, attached, peerActive bool) {
		mk := func(ip uint32, bits uint8) netip.Prefix {
			a := netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)})
			p, _ := a.Prefix(int(bits % 33))
			return p
		}
		allow := mk(allowIP, allowBits)
		peerCIDR := mk(peerIP, peerBits)
		vpcCIDR := netip.MustParsePrefix("10.0.0.0/17")
		svc := &Service{AllowedIPs: []AllowEntry{{CIDR: allow.String()}, {CIDR: "2001:db8::/32"}}}
		var vpc *VPC
		state := StatePendingAcceptance
		if peerActive {
			state = StateActive
		}
		pcx := []*Peering{{Meta: Meta{State: state}, VPCID: "vpc-a", PeerCIDRs: []string{peerCIDR.String()}}}
		if attached {
			vpc = &VPC{Meta: Meta{ID: "vpc-a"}, CIDR: vpcCIDR.String()}
			svc.VPCID = vpc.ID
		}
		acc := CompileAccess(svc, vpc, pcx, nil)
		addr := netip.AddrFrom4([4]byte{byte(probe >> 24), byte(probe >> 16), byte(probe >> 8), byte(probe)})
		want := allow.Contains(addr)
		if attached {
			want = want && (vpcCIDR.Contains(addr) || (peerActive && peerCIDR.Contains(addr)))
		}
		if got := acc.Admits(addr); got != want {
			t.Fatalf("allow %v peer %v (active %v) attached %v: Admits(%v) = %v, want %v (policy %+v)", allow, peerCIDR, peerActive, attached, addr, got, want, acc)
		}
		if attached && acc.Admits(netip.MustParseAddr("2001:db8::1")) {
			t.Fatalf("attached service admits IPv6 internet source")
		}
	})
}
