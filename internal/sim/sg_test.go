package sim

import (
	"net/netip"
	"testing"
)

func TestRenderSG(t *testing.T) {
	got := renderSG(netip.MustParsePrefix("172.31.0.0/16"), []EgressRule{
		{Protocol: "tcp", Port: 5432, CIDR: netip.MustParsePrefix("10.0.0.0/17")},
		{Protocol: "all", CIDR: netip.MustParsePrefix("192.168.1.0/24")},
	})
	want := `add table ip moat_sim_sg
delete table ip moat_sim_sg
table ip moat_sim_sg {
	chain output {
		type filter hook output priority filter; policy accept;
		ct state established,related accept
		oifname "lo" accept
		ip daddr 172.31.0.0/16 accept
		ip daddr 10.0.0.0/17 tcp dport 5432 accept
		ip daddr 192.168.1.0/24 accept
		ip daddr { 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16 } drop
	}
}
`
	if got != want {
		t.Errorf("renderSG() =\n%s\nwant\n%s", got, want)
	}
}
