package domain

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckCompare(t *testing.T) {
	allowed := Verdict{Allowed: true, Reason: ReasonAllowed}
	refused := Verdict{Reason: ReasonAllowlist}
	for _, tc := range []struct {
		name    string
		verdict Verdict
		probe   Probe
		agree   bool
	}{
		{"allowed and connected", allowed, Probe{Reachable: true}, true},
		{"refused and dropped", refused, Probe{Err: "i/o timeout"}, true},
		{"allowed but dropped", allowed, Probe{Err: "i/o timeout"}, false},
		{"refused but connected", refused, Probe{Reachable: true}, false},
		{"refused, nothing to probe", refused, Probe{Err: ProbeNoTarget}, true},
	} {
		c := Check{Host: "h", Address: netip.MustParseAddr("198.19.0.2"), Explain: tc.verdict}.Compare(tc.probe)
		want := Check{Host: "h", Address: netip.MustParseAddr("198.19.0.2"), Explain: tc.verdict,
			Reachable: tc.probe.Reachable, ProbeError: tc.probe.Err, Agree: tc.agree}
		if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("%s: Compare(%+v) (-want +got):\n%s", tc.name, tc.probe, diff)
		}
	}
}

func TestDisagreements(t *testing.T) {
	checks := []Check{{Host: "a", Agree: true}, {Host: "b"}, {Host: "c", Agree: true}, {Host: "d"}}
	var got []string
	for _, c := range Disagreements(checks) {
		got = append(got, c.Host)
	}
	if want := []string{"b", "d"}; !cmp.Equal(got, want) {
		t.Errorf("Disagreements = %v, want %v", got, want)
	}
	if bad := Disagreements(checks[:1]); len(bad) != 0 {
		t.Errorf("Disagreements(all agree) = %v, want none", bad)
	}
}

func TestExplainInputTarget(t *testing.T) {
	primary := netip.MustParseAddr("10.0.0.10")
	for _, tc := range []struct {
		nodes []netip.Addr
		want  netip.Addr
	}{
		{nil, netip.Addr{}},
		{[]netip.Addr{{}, primary, netip.MustParseAddr("10.0.0.11")}, primary},
		{[]netip.Addr{netip.AddrFrom16(primary.As16())}, primary},
	} {
		in := ExplainInput{NodeAddrs: tc.nodes}
		if got := in.Target(); got != tc.want {
			t.Errorf("Target(%v) = %v, want %v", tc.nodes, got, tc.want)
		}
		// Explain connects to the same address.
		if v := Explain(ExplainInput{Service: &Service{}, NodeAddrs: tc.nodes}); v.Target != tc.want {
			t.Errorf("Explain(%v).Target = %v, Target() = %v", tc.nodes, v.Target, tc.want)
		}
	}
}
