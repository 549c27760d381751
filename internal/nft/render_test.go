package nft

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestRender(t *testing.T) {
	many := []netip.Prefix{}
	for i := range 20 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24))
	}
	tests := []struct {
		name string
		p    Policy
	}{
		{"empty", Policy{Port: 5432}},
		{"refuse", Policy{Port: 5432, Refuse: true}},
		{"public", Policy{
			Port:    5432,
			AllowV4: prefixes("203.0.113.0/24 198.51.100.7/32 198.51.100.6/32 203.0.113.128/25"),
			AllowV6: prefixes("2001:db8:1::/48"),
			Peers:   prefixes("198.18.5.2/32 198.18.5.3/32 2001:2::5/128"),
		}},
		{"ranges", Policy{Port: 6432, AllowV4: append(many, prefixes("10.0.1.0/24 10.0.2.0/24 10.0.3.0/24")...)}},
		{"everything", Policy{Port: 5432, AllowV4: prefixes("0.0.0.0/0"), AllowV6: prefixes("::/0")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Render(%s) differs from %s (-want +got):\n%s", tt.name, path, diff)
			}
		})
	}
}

func TestRenderInvalid(t *testing.T) {
	p := Policy{Port: 5432, AllowV4: prefixes("2001:db8::/32")}
	if got, err := Render(p); err == nil {
		t.Errorf("Render(%+v) = %q, want an error", p, got)
	}
}
