package postgres

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRenderHBAGolden(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
	}{
		{"empty", Policy{}},
		{"public", Policy{
			Allow:    prefixes("203.0.113.0/24", "198.19.0.7/32", "2001:db8::/32"),
			Replicas: []Replica{{"node-b", netip.MustParsePrefix("198.18.0.3/32")}, {"node-a", netip.MustParsePrefix("198.18.0.2/32")}},
		}},
		{"open", Policy{Allow: prefixes("0.0.0.0/0", "::/0")}},
		// Non-canonical, IPv4-mapped and duplicate prefixes; a keyword as
		// the replication role stays a name (it is quoted).
		{"canonical", Policy{
			Allow:           prefixes("10.1.2.3/8", "::ffff:192.0.2.1/128", "192.0.2.1/32", "10.0.0.0/8"),
			Replicas:        []Replica{{"r.1", netip.MustParsePrefix("::ffff:198.18.0.0/112")}, {"r.1", netip.MustParsePrefix("198.18.0.0/16")}},
			ReplicationUser: "all",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderHBA(tt.p)
			if err != nil {
				t.Fatalf("RenderHBA(%+v): %v", tt.p, err)
			}
			golden := filepath.Join("testdata", "hba", tt.name+".conf")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("RenderHBA(%s) differs from %s (-want +got):\n%s", tt.name, golden, diff)
			}
		})
	}
}

func TestRenderHBARejects(t *testing.T) {
	bad := []Policy{
		{ReplicationUser: `x" all`},
		{ReplicationUser: "Admin"},
		{ReplicationUser: "a\nhost all all 0.0.0.0/0 trust"},
		{ReplicationUser: strings.Repeat("a", 64)},
		{Allow: []netip.Prefix{{}}},
		{Replicas: []Replica{{"r", netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 33)}}},
		{Replicas: []Replica{{"", netip.MustParsePrefix("10.0.0.1/32")}}},
		{Replicas: []Replica{{"r x", netip.MustParsePrefix("10.0.0.1/32")}}},
		{Replicas: []Replica{{"/r", netip.MustParsePrefix("10.0.0.1/32")}}},
		{Replicas: []Replica{{"a", netip.MustParsePrefix("10.0.0.1/32")}, {"b", netip.MustParsePrefix("10.0.0.1/32")}}},
	}
	for _, p := range bad {
		if got, err := RenderHBA(p); err == nil {
			t.Errorf("RenderHBA(%+v) = %q, want an error", p, got)
		}
	}
}

var (
	hbaRule = regexp.MustCompile(`^(local|host|hostssl) +(all|replication) +(all|"[a-z_][a-z0-9_]*") +(?:(\S+) +)?(peer map=moat|reject|cert map=moat_repl_r[0-9]+|scram-sha-256)$`)
	hbaNote = regexp.MustCompile(`^# [^\n\r\x00]*$`)
)

// FuzzRenderHBA checks that no value escapes its line: whatever goes in,
// RenderHBA either refuses it or renders exactly the expected rules, each
// one line of the expected shape, naming only the policy's role and
// admitting only the policy's sources.
func FuzzRenderHBA(f *testing.F) {
	f.Add("", []byte{10, 0, 0, 0, 8}, []byte{198, 18, 0, 2, 32})
	f.Add("all", []byte("\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20"), []byte{})
	f.Add("x\"\n", []byte{}, []byte{255, 255, 255, 255, 0})
	f.Fuzz(func(t *testing.T, repl string, allowRaw, replRaw []byte) {
		var replicas []Replica
		for i, a := range rawPrefixes(replRaw) {
			replicas = append(replicas, Replica{Name: "r" + strconv.Itoa(i), Addr: a})
		}
		p := Policy{ReplicationUser: repl, Allow: rawPrefixes(allowRaw), Replicas: replicas}
		out, err := RenderHBA(p)
		if err != nil {
			return
		}
		if repl == "" {
			repl = ReplicationUser
		}
		if !roleRE.MatchString(repl) {
			t.Fatalf("RenderHBA accepted replication user %q", repl)
		}
		wantAllow, _ := canonical(p.Allow)
		wantReplicas, _ := canonicalReplicas(p.Replicas)
		var wantRepl []netip.Prefix
		for _, r := range wantReplicas {
			wantRepl = append(wantRepl, r.Addr)
		}
		var gotAllow, gotRepl []netip.Prefix
		rules := 0
		for _, line := range strings.SplitAfter(out, "\n") {
			if line == "" {
				continue
			}
			if !strings.HasSuffix(line, "\n") {
				t.Fatalf("last line %q is not terminated", line)
			}
			line = strings.TrimSuffix(line, "\n")
			if hbaNote.MatchString(line) {
				continue
			}
			// The one fixed rule naming a group: support sessions, from
			// the node itself only.
			if strings.Fields(line)[2] == "+"+SupportGroup {
				if strings.Join(strings.Fields(line), " ") != "hostssl all +"+SupportGroup+" samehost scram-sha-256" {
					t.Fatalf("support line %q admits more than the node itself", line)
				}
				rules++
				continue
			}
			m := hbaRule.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %q has an unexpected shape", line)
			}
			rules++
			typ, db, user, addr, method := m[1], m[2], m[3], m[4], m[5]
			if user != "all" && user != `"`+Superuser+`"` && user != `"`+repl+`"` && user != `"`+MonitorUser+`"` {
				t.Fatalf("line %q names role %s, not in the policy", line, user)
			}
			if typ == "local" {
				if addr != "" {
					t.Fatalf("local line %q has an address", line)
				}
				continue
			}
			a, err := netip.ParsePrefix(addr)
			if err != nil {
				t.Fatalf("line %q: address: %v", line, err)
			}
			switch method {
			case "scram-sha-256":
				if typ != "hostssl" || db != "all" || user != "all" {
					t.Fatalf("line %q admits more than TLS clients", line)
				}
				gotAllow = append(gotAllow, a)
			case "cert":
				t.Fatalf("line %q: certificate authentication without a map", line)
			case "reject":
			default:
				if !strings.HasPrefix(method, "cert map=") {
					t.Fatalf("line %q: method %s over the network", line, method)
				}
				if typ != "hostssl" || db != "replication" || user != `"`+repl+`"` {
					t.Fatalf("line %q admits more than replication", line)
				}
				gotRepl = append(gotRepl, a)
			}
		}
		if want := 5 + 6 + len(wantRepl) + len(wantAllow) + 1 + 4; rules != want {
			t.Fatalf("%d rules, want %d:\n%s", rules, want, out)
		}
		if !slices.Equal(gotAllow, wantAllow) || !slices.Equal(gotRepl, wantRepl) {
			t.Fatalf("admits %v and replicas %v, want %v and %v", gotAllow, gotRepl, wantAllow, wantRepl)
		}
		last := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if !strings.HasSuffix(last[len(last)-1], "reject") {
			t.Fatalf("the last rule is not a reject:\n%s", out)
		}
	})
}

// rawPrefixes turns fuzz bytes into prefixes: chunks of 5 (IPv4 address
// and length) or, after a leading 0x06, 17 (IPv6 address and length). An
// out-of-range length gives an invalid prefix.
func rawPrefixes(b []byte) []netip.Prefix {
	var out []netip.Prefix
	for len(b) >= 5 {
		if b[0] == 6 && len(b) >= 18 {
			a := netip.AddrFrom16([16]byte(b[1:17]))
			out = append(out, netip.PrefixFrom(a, int(b[17])))
			b = b[18:]
			continue
		}
		a := netip.AddrFrom4([4]byte(b[:4]))
		out = append(out, netip.PrefixFrom(a, int(b[4])))
		b = b[5:]
	}
	return out
}

func TestRenderIdent(t *testing.T) {
	p := Policy{Replicas: []Replica{{"node-b", netip.MustParsePrefix("198.18.0.3/32")}, {"node-a", netip.MustParsePrefix("198.18.0.2/32")}}}
	got, err := RenderIdent(p, "root", "moat-n-abc", "root", "")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Written by Moat: do not edit.\n# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" +
		"moat root postgres\nmoat moat-n-abc postgres\nmoat root moat_monitor\n" +
		"moat_repl_node-a node-a moat_replication\nmoat_repl_node-b node-b moat_replication\n"
	if got != want {
		t.Errorf("RenderIdent = %q, want %q", got, want)
	}
	for _, bad := range []string{"Root", "a b", "x\nmoat evil postgres"} {
		if got, err := RenderIdent(Policy{}, bad); err == nil {
			t.Errorf("RenderIdent(%q) = %q, want an error", bad, got)
		}
	}
}
