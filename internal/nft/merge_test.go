package nft

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func prefixes(s string) []netip.Prefix {
	var out []netip.Prefix
	for _, f := range strings.Fields(s) {
		out = append(out, netip.MustParsePrefix(f))
	}
	return out
}

func TestMerge(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"}, // host bits cleared
		{"10.0.0.0/8 10.1.0.0/16", "10.0.0.0/8"},
		{"10.1.0.0/16 10.0.0.0/8", "10.0.0.0/8"},
		{"10.0.0.0/24 10.0.1.0/24", "10.0.0.0/23"},             // adjacent
		{"10.0.1.0/24 10.0.2.0/24", "10.0.1.0/24 10.0.2.0/24"}, // adjacent, not alignable
		{"10.0.0.0/24 10.0.1.0/24 10.0.2.0/24", "10.0.0.0/23 10.0.2.0/24"},
		{"10.0.0.0/24 10.0.2.0/24", "10.0.0.0/24 10.0.2.0/24"}, // gap
		{"10.0.0.1/32 10.0.0.0/32 10.0.0.2/31", "10.0.0.0/30"},
		{"0.0.0.0/0 10.0.0.0/8", "0.0.0.0/0"},
		{"255.255.255.255/32 255.255.255.254/32", "255.255.255.254/31"},
		{"0.0.0.0/1 128.0.0.0/1", "0.0.0.0/0"},
		{"2001:db8::/33 2001:db8:8000::/33", "2001:db8::/32"},
		{"2001:db8::/32 10.0.0.0/8", "10.0.0.0/8 2001:db8::/32"}, // IPv4 first
		{"::/0 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/0"},
		{"::ffff:10.0.0.0/104 10.0.0.0/8", "10.0.0.0/8 ::ffff:10.0.0.0/104"}, // mapped stays IPv6
		{"198.18.0.0/32 198.18.0.1/32 198.18.0.2/32", "198.18.0.0/31 198.18.0.2/32"},
	}
	for _, tt := range tests {
		in := prefixes(tt.in)
		got := Merge(in)
		if diff := cmp.Diff(prefixes(tt.want), got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("Merge(%v) = %v, want %v", in, got, tt.want)
		}
	}
}

func TestMergeIgnoresInvalid(t *testing.T) {
	in := []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/8")}
	if got, want := Merge(in), prefixes("10.0.0.0/8"); !cmp.Equal(got, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Errorf("Merge(%v) = %v, want %v", in, got, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"ok", Policy{Port: 5432, AllowV4: prefixes("10.0.0.0/8"), AllowV6: prefixes("2001:db8::/32"), Peers: prefixes("10.0.0.1/32 2001:db8::1/128")}, true},
		{"no port", Policy{}, false},
		{"v6 in v4", Policy{Port: 5432, AllowV4: prefixes("2001:db8::/32")}, false},
		{"v4 in v6", Policy{Port: 5432, AllowV6: prefixes("10.0.0.0/8")}, false},
		{"invalid", Policy{Port: 5432, Peers: []netip.Prefix{{}}}, false},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
