package nft

import (
	"strings"
	"testing"
)

// TestOnlyPostgresFromOutside: whatever the policy, a node's input chain
// accepts TCP only to the policy's port; everything else from another
// interface (an operator SSH port included: design 0012 puts none in the
// node) meets the chain's drop policy. Only loopback is accepted whole.
func TestOnlyPostgresFromOutside(t *testing.T) {
	for _, p := range []Policy{
		{Port: 5432},
		{Port: 5432, AllowV4: prefixes("0.0.0.0/0"), AllowV6: prefixes("::/0"), Peers: prefixes("198.18.5.2/32")},
	} {
		out, err := Render(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "policy drop;") {
			t.Fatalf("Render(%+v): the input chain does not drop by default:\n%s", p, out)
		}
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l)
			if !strings.HasSuffix(l, "accept") {
				continue
			}
			switch {
			case l == `iifname "lo" accept`, l == "ct direction reply accept",
				strings.Contains(l, "ct state related accept"), strings.Contains(l, "hoplimit 255 accept"),
				strings.Contains(l, "echo-request accept"):
			case strings.Contains(l, "tcp dport 5432 accept"):
			default:
				t.Errorf("Render(%+v): rule %q accepts more than the PostgreSQL port", p, l)
			}
		}
	}
}
