//go:build linux

package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/sim"
)

func TestParseDays(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "8d", want: 8 * day},
		{in: "1d", want: day},
		{in: "7d12h", want: 7*day + 12*time.Hour},
		{in: "7d1h30m", want: 7*day + 90*time.Minute},
		{in: "36h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "10s", want: 10 * time.Second},
		{in: "0d1h", want: time.Hour},
		{in: "100000d", want: 100000 * day},
		{in: "", wantErr: true},
		{in: "d", wantErr: true},
		{in: "8", wantErr: true},
		{in: "8days", wantErr: true},
		{in: "8dd", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "+8d", wantErr: true},
		{in: "-8d", wantErr: true},
		{in: "8d-1h", wantErr: true},
		{in: "8d+1h", wantErr: true},
		{in: " 8d", wantErr: true},
		{in: "-1h", wantErr: true},
		{in: "0", wantErr: true},
		{in: "0d", wantErr: true},
		{in: "0s", wantErr: true},
		{in: "100001d", wantErr: true},
		{in: "99999999999999999999d", wantErr: true},
		{in: "100000d2562047h", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseDays(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseDays(%q) = %v, %v, want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestSimErrors checks what the user sees for each kind of error of
// internal/sim: the message, and a hint saying what to do.
func TestSimErrors(t *testing.T) {
	t.Parallel()
	h := simHints{notFound: "list them", exists: "rename", inUse: "empty it", state: "check its state"}
	tests := []struct {
		err       error
		msg, hint string
	}{
		{fmt.Errorf("route: vpc vpc-1: %w", sim.ErrNotFound), "route: vpc vpc-1: not found", "list them"},
		{fmt.Errorf("accept: peering pcx-1: %w", localcloud.ErrNotFound), "accept: peering pcx-1: not found", "list them"},
		{fmt.Errorf("host h: %w", sim.ErrExists), "host h: already exists", "rename"},
		{fmt.Errorf("x: %w", localcloud.ErrExists), "x: already exists differently", "rename"},
		{fmt.Errorf("vpc vpc-1 has host h: %w", sim.ErrInUse), "vpc vpc-1 has host h: in use", "empty it"},
		{fmt.Errorf("accept pcx-1: rejected: %w", localcloud.ErrState), "accept pcx-1: rejected: wrong state", "check its state"},
		// Validation errors name the field and carry their own fix.
		{fmt.Errorf("create vpc: %w", domain.Invalidf(domain.CodeNonCanonicalCIDR, "cidr", "use 10.0.0.0/17", "%q has host bits set", "10.0.0.7/17")),
			`cidr: "10.0.0.7/17" has host bits set`, "use 10.0.0.0/17"},
		// A kind the command has no hint for is left as it is.
		{errors.New("port 0: want 1 to 65535"), "port 0: want 1 to 65535", ""},
	}
	for _, tt := range tests {
		msg, hint, code := describe(h.wrap(tt.err))
		if msg != tt.msg || hint != tt.hint || code != exitError {
			t.Errorf("describe(wrap(%v)) = %q, %q, %d, want %q, %q, %d", tt.err, msg, hint, code, tt.msg, tt.hint, exitError)
		}
	}
	if err := (simHints{}).wrap(fmt.Errorf("x: %w", sim.ErrNotFound)); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("wrap without a hint = %v, want the error unchanged", err)
	}
	if err := h.wrap(nil); err != nil {
		t.Errorf("wrap(nil) = %v, want nil", err)
	}
}

// TestSimUsage checks the command lines refused before anything is opened
// (so without root).
func TestSimUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"sim", "host", "create", "h", "--internet", "--vpc", "vpc-0123456789abcdef0"},
			"moat: error: say which network the host is on: --internet or --vpc V, exactly one\nmoat: hint: see moat sim host create --help\n"},
		{[]string{"sim", "host", "create", "h"},
			"moat: error: say which network the host is on: --internet or --vpc V, exactly one\nmoat: hint: see moat sim host create --help\n"},
		{[]string{"sim", "clock", "advance", "8days"},
			"moat: error: duration \"8days\": write it as 8d, 7d12h, 36h or 90m\nmoat: hint: see moat sim clock advance --help\n"},
		{[]string{"sim", "clock", "advance", "0s"},
			"moat: error: duration \"0s\": the clock only moves forward; give a positive duration such as 8d\nmoat: hint: see moat sim clock advance --help\n"},
		{[]string{"sim", "vpc", "create", "--account", "123456789012"},
			"moat: error: required flag(s) \"cidr\", \"region\" not set\nmoat: hint: see moat --help\n"},
		{[]string{"sim", "route", "add", "--vpc", "vpc-0123456789abcdef0", "--destination", "10.0.0.0/17"},
			"moat: error: required flag(s) \"target\" not set\nmoat: hint: see moat --help\n"},
		{[]string{"sim", "sg", "egress", "add", "--host", "h", "--port", "5432", "--cidr", "10.0.0.0/17"},
			"moat: error: required flag(s) \"protocol\" not set\nmoat: hint: see moat --help\n"},
		{[]string{"sim", "sg", "egress", "add", "--host", "h", "--protocol", "icmp", "--cidr", "10.0.0.0/17"},
			"moat: error: --protocol \"icmp\": use tcp, udp or all\nmoat: hint: see moat sim sg egress add --help\n"},
		{[]string{"sim", "sg", "egress", "add", "--host", "h", "--protocol", "tcp", "--cidr", "10.0.0.0/17"},
			"moat: error: --port 0: protocol tcp needs a port from 1 to 65535\nmoat: hint: see moat sim sg egress add --help\n"},
		{[]string{"sim", "sg", "egress", "delete", "--host", "h", "--protocol", "all", "--port", "5432", "--cidr", "10.0.0.0/17"},
			"moat: error: --port 5432: protocol all covers every port; leave --port out\nmoat: hint: see moat sim sg egress delete --help\n"},
		{[]string{"sim", "peering", "accept"},
			"moat: error: accepts 1 arg(s), received 0\nmoat: hint: see moat sim peering accept --help\n"},
	}
	for _, tt := range tests {
		code, _, stderr := runCLI(t, nil, tt.args...)
		if code != exitUsage || stderr != tt.stderr {
			t.Errorf("moat %q = %d, stderr %q, want %d, %q", tt.args, code, stderr, exitUsage, tt.stderr)
		}
	}
	// Without root: refused with the reason, before the data directory
	// is looked at.
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, geteuid: func() int { return 1000 }}
	if code := a.run(context.Background(), []string{"sim", "account", "list", "--data-dir", "/nonexistent"}); code != exitError || !strings.Contains(errb.String(), "moat: error: moat sim needs root") {
		t.Errorf("moat sim account list as non-root = %d, stderr %q, want 1 and needs root", code, errb.String())
	}
}

// TestSimHelpGolden keeps the documented command lines of moat sim stable.
func TestSimHelpGolden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"sim", "account", "create", "--help"},
		{"sim", "account", "list", "--help"},
		{"sim", "vpc", "create", "--help"},
		{"sim", "vpc", "list", "--help"},
		{"sim", "vpc", "delete", "--help"},
		{"sim", "peering", "list", "--help"},
		{"sim", "peering", "accept", "--help"},
		{"sim", "peering", "reject", "--help"},
		{"sim", "route", "add", "--help"},
		{"sim", "route", "list", "--help"},
		{"sim", "route", "delete", "--help"},
		{"sim", "sg", "egress", "add", "--help"},
		{"sim", "sg", "egress", "list", "--help"},
		{"sim", "sg", "egress", "delete", "--help"},
		{"sim", "clock", "show", "--help"},
		{"sim", "clock", "advance", "--help"},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("moat %q = %d, stderr %q", args, code, stderr)
		}
		golden(t, filepath.Join("testdata", "help", strings.Join(args[:len(args)-1], "-")+".txt"), []byte(stdout))
	}
}

func TestSimRenderGolden(t *testing.T) {
	t.Parallel()
	samples := map[string]any{
		"sim-accounts": []simAccount{{ID: "123456789012", Created: t0}},
		"sim-vpc":      simVPC{ID: "vpc-0123456789abcdef0", Account: "123456789012", Region: "eu-west-1", CIDR: "172.31.0.0/16", NATAddress: "198.19.0.9", RouterNamespace: "moat-v-x", Created: t0},
		"sim-vpcs":     []simVPC{{ID: "vpc-0123456789abcdef0", Account: "123456789012", Region: "eu-west-1", CIDR: "172.31.0.0/16", RouterNamespace: "moat-v-x", Created: t0}},
		"sim-peerings": []simPeering{
			{ID: "pcx-0123456789abcdef0", RequesterVPC: "vpc-aaaa", AccepterAccount: "123456789012", AccepterVPC: "vpc-0123456789abcdef0", AccepterRegion: "eu-west-1",
				DeclaredCIDRs: []string{"172.31.0.0/16"}, State: "pending-acceptance", Created: t0, Expires: t0.Add(7 * 24 * time.Hour), Updated: t0},
			{ID: "pcx-0123456789abcdef1", RequesterVPC: "vpc-bbbb", AccepterAccount: "123456789012", AccepterVPC: "vpc-0123456789abcdef0", AccepterRegion: "eu-west-1",
				DeclaredCIDRs: []string{"10.9.0.0/16"}, State: "failed", Reason: "10.9.0.0/16 is not inside the VPC's 172.31.0.0/16", Created: t0, Expires: t0.Add(7 * 24 * time.Hour), Updated: t0},
		},
		"sim-routes": []simRoute{{VPC: "vpc-0123456789abcdef0", Destination: "10.0.0.0/17", Target: "pcx-0123456789abcdef0", State: "blackhole"}},
		"sim-egress": []simEgress{{Host: "app", Protocol: "tcp", Port: 5432, CIDR: "10.0.0.0/17"}, {Host: "app", Protocol: "all", CIDR: "10.1.0.0/16"}},
		"sim-clock":  simClock{Now: t0},
	}
	for name, v := range samples {
		for _, format := range []string{"table", "json"} {
			t.Run(name+"."+format, func(t *testing.T) {
				t.Parallel()
				var buf bytes.Buffer
				if err := render(&buf, format, v); err != nil {
					t.Fatalf("render(%s, %s): %v", format, name, err)
				}
				golden(t, filepath.Join("testdata", "render", name+"."+format), buf.Bytes())
			})
		}
	}
}

// TestSimCloudCommands runs the customer-account commands of moat sim for
// real: account create, vpc create (a non-canonical CIDR refused), host
// create --vpc, route add to an unknown peering refused, sg egress
// add/list/delete, the peering inbox (requests made through localcloud, as
// the local provider makes them: accepted and routed, rejected, expired by
// moving the clock), and the deletes; in a local cloud of its own
// (MOAT_LOCALCLOUD_PREFIX) and a data directory of its own. Needs root;
// skips without it, fails under CI=true.
func TestSimCloudCommands(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "moat-t" + hex.EncodeToString(b[:]) + "-"
	cloud, err := localcloud.New(localcloud.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cloud.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		// The cloud's lock file, which outlives it by design.
		os.Remove(filepath.Join(localcloud.DefaultLockDir, "localcloud-"+prefix+"lock"))
	})
	dataDir := t.TempDir()
	// No API: a config file that does not exist.
	env := map[string]string{"MOAT_LOCALCLOUD_PREFIX": prefix, "MOAT_CONFIG": filepath.Join(dataDir, "no-config.json")}
	moat := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
		code := a.run(context.Background(), append([]string{args[0], "--data-dir", dataDir}, args[1:]...))
		return code, out.String(), errb.String()
	}
	// must runs a command that must succeed and decodes its JSON output.
	must := func(v any, args ...string) {
		t.Helper()
		code, stdout, stderr := moat(append(args, "-o", "json")...)
		if code != 0 {
			t.Fatalf("moat %q = %d, stderr:\n%s", args, code, stderr)
		}
		if err := json.Unmarshal([]byte(stdout), v); err != nil {
			t.Fatalf("moat %q -o json: %v\n%s", args, err, stdout)
		}
	}
	// refused runs a command that must fail with exit 1 and stderr
	// matching the pattern.
	refused := func(pattern string, args ...string) {
		t.Helper()
		code, _, stderr := moat(args...)
		if code != exitError || !regexp.MustCompile(pattern).MatchString(stderr) {
			t.Errorf("moat %q = %d, stderr %q, want 1 and %s", args, code, stderr, pattern)
		}
	}

	var acc simAccount
	must(&acc, "sim", "account", "create")
	if !regexp.MustCompile(`^[0-9]{12}$`).MatchString(acc.ID) {
		t.Fatalf("moat sim account create = %+v, want a 12-digit ID", acc)
	}
	var accs struct{ Items []simAccount }
	if must(&accs, "sim", "account", "list"); len(accs.Items) != 1 || accs.Items[0].ID != acc.ID {
		t.Errorf("moat sim account list = %+v, want %s", accs.Items, acc.ID)
	}

	refused(`^moat: error: cidr: "172.31.0.7/16" .*\nmoat: hint: use 172.31.0.0/16\n$`,
		"sim", "vpc", "create", "--account", acc.ID, "--region", "eu-west-1", "--cidr", "172.31.0.7/16")
	refused(`^moat: error: .*999999999999.*not found\nmoat: hint: moat sim account list`,
		"sim", "vpc", "create", "--account", "999999999999", "--region", "eu-west-1", "--cidr", "172.31.0.0/16")
	var vpc simVPC
	must(&vpc, "sim", "vpc", "create", "--account", acc.ID, "--region", "eu-west-1", "--cidr", "172.31.0.0/16")
	nat, err := netip.ParseAddr(vpc.NATAddress)
	if !regexp.MustCompile(`^vpc-[0-9a-f]{17}$`).MatchString(vpc.ID) || vpc.CIDR != "172.31.0.0/16" || vpc.Account != acc.ID || err != nil || !localcloud.SimPool.Contains(nat) {
		t.Fatalf("moat sim vpc create = %+v, want vpc-<17 hex>, 172.31.0.0/16, a NAT address in %v", vpc, localcloud.SimPool)
	}
	if code, stdout, stderr := moat("sim", "vpc", "list"); code != 0 || !strings.Contains(stdout, vpc.ID) || !strings.Contains(stdout, vpc.NATAddress) {
		t.Errorf("moat sim vpc list = %d, stdout:\n%s\nstderr %q; want %s and its NAT address", code, stdout, stderr, vpc.ID)
	}

	var h simHost
	must(&h, "sim", "host", "create", "app", "--vpc", vpc.ID)
	addr, err := netip.ParseAddr(h.Address)
	if err != nil || h.Network != vpc.ID || !netip.MustParsePrefix(vpc.CIDR).Contains(addr) {
		t.Fatalf("moat sim host create app --vpc = %+v, want an address in %s", h, vpc.CIDR)
	}
	refused(`^moat: error: .*not found\nmoat: hint: check --vpc: moat sim vpc list`, "sim", "host", "create", "app2", "--vpc", "vpc-00000000000000000")
	refused(`^moat: error: .*in use\nmoat: hint: delete its hosts first`, "sim", "vpc", "delete", vpc.ID)

	var inbox struct{ Items []simPeering }
	if must(&inbox, "sim", "peering", "list", "--account", acc.ID); len(inbox.Items) != 0 {
		t.Errorf("moat sim peering list = %+v, want an empty inbox", inbox.Items)
	}
	refused(`^moat: error: .*not found\nmoat: hint: moat sim peering list`, "sim", "peering", "accept", "pcx-00000000000000000")
	// Moat's ID of a peering (16 base32 characters) is looked up through
	// the API; without one configured, the hint names cloud_peering_id.
	refused(`^moat: error: peering pcx-abcdefghijklmnop: not a peering ID of the customer cloud.*\nmoat: hint: pcx-abcdefghijklmnop is Moat's ID of the peering; the customer cloud knows it by its cloud_peering_id`,
		"sim", "peering", "accept", "pcx-abcdefghijklmnop")
	refused(`cloud_peering_id`, "sim", "route", "add", "--vpc", vpc.ID, "--destination", "10.0.0.0/17", "--target", "pcx-abcdefghijklmnop")

	refused(`^moat: error: .*pcx-00000000000000000.*not found\nmoat: hint: check --target`,
		"sim", "route", "add", "--vpc", vpc.ID, "--destination", "10.0.0.0/17", "--target", "pcx-00000000000000000")
	refused(`^moat: error: destination: "10.0.0.7/17" .*\nmoat: hint: use 10.0.0.0/17\n$`,
		"sim", "route", "add", "--vpc", vpc.ID, "--destination", "10.0.0.7/17", "--target", "pcx-00000000000000000")
	refused(`^moat: error: .*not found\nmoat: hint: check --vpc`,
		"sim", "route", "list", "--vpc", "vpc-00000000000000000")
	var routes struct{ Items []simRoute }
	if must(&routes, "sim", "route", "list", "--vpc", vpc.ID); len(routes.Items) != 0 {
		t.Errorf("moat sim route list = %+v, want none", routes.Items)
	}

	rule := []string{"--host", "app", "--protocol", "tcp", "--port", "5432", "--cidr", "10.0.0.0/17"}
	var r simEgress
	must(&r, append([]string{"sim", "sg", "egress", "add"}, rule...)...)
	if want := (simEgress{Host: "app", Protocol: "tcp", Port: 5432, CIDR: "10.0.0.0/17"}); r != want {
		t.Errorf("moat sim sg egress add = %+v, want %+v", r, want)
	}
	refused(`^moat: error: .*already exists\nmoat: hint: moat sim sg egress list --host app`, append([]string{"sim", "sg", "egress", "add"}, rule...)...)
	refused(`^moat: error: cidr: "10.0.0.7/17" .*\nmoat: hint: use 10.0.0.0/17\n$`,
		"sim", "sg", "egress", "add", "--host", "app", "--protocol", "tcp", "--port", "5432", "--cidr", "10.0.0.7/17")
	refused(`^moat: error: .*not found\nmoat: hint: check --host`, "sim", "sg", "egress", "list", "--host", "nope")
	if code, stdout, stderr := moat("sim", "sg", "egress", "list", "--host", "app"); code != 0 || !regexp.MustCompile(`(?m)^app +tcp +5432 +10\.0\.0\.0/17$`).MatchString(stdout) {
		t.Errorf("moat sim sg egress list = %d, stdout:\n%s\nstderr %q; want the tcp 5432 rule", code, stdout, stderr)
	}
	if code, _, stderr := moat(append([]string{"sim", "sg", "egress", "delete"}, rule...)...); code != 0 {
		t.Errorf("moat sim sg egress delete = %d, stderr %q", code, stderr)
	}
	refused(`^moat: error: .*not found\nmoat: hint: check --protocol, --port and --cidr`, append([]string{"sim", "sg", "egress", "delete"}, rule...)...)
	var rules struct{ Items []simEgress }
	if must(&rules, "sim", "sg", "egress", "list", "--host", "app"); len(rules.Items) != 0 {
		t.Errorf("moat sim sg egress list after delete = %+v, want none", rules.Items)
	}

	// The inbox, with requests made as the local provider makes them:
	// one accepted (and routed), one rejected, one left to expire.
	ctx := context.Background()
	prov, err := cloud.EnsureVPC(ctx, "vpc-prov", netip.MustParsePrefix("10.0.0.0/17"))
	if err != nil {
		t.Fatal(err)
	}
	request := func() string {
		t.Helper()
		p, err := cloud.RequestPeering(ctx, localcloud.PeeringRequest{
			ID: localcloud.NewPeeringID(), RequesterVPC: prov.ID,
			AccepterAccount: acc.ID, AccepterVPC: vpc.ID, AccepterRegion: vpc.Region,
			DeclaredCIDRs: []netip.Prefix{netip.MustParsePrefix(vpc.CIDR)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	accepted, rejected, expiring := request(), request(), request()
	must(&inbox, "sim", "peering", "list", "--account", acc.ID)
	if len(inbox.Items) != 3 {
		t.Fatalf("moat sim peering list = %+v, want 3 requests", inbox.Items)
	}
	for _, p := range inbox.Items {
		if p.State != "pending-acceptance" || p.RequesterVPC != prov.ID || p.AccepterVPC != vpc.ID || p.Expires.Sub(p.Created) != localcloud.PeeringExpiry {
			t.Errorf("moat sim peering list: %+v, want pending-acceptance from %s to %s, expiring in 7 days", p, prov.ID, vpc.ID)
		}
	}
	var route simRoute
	must(&route, "sim", "route", "add", "--vpc", vpc.ID, "--destination", "10.0.0.0/17", "--target", accepted)
	if route.State != "blackhole" || route.Target != accepted {
		t.Errorf("moat sim route add via a pending peering = %+v, want a blackhole via %s", route, accepted)
	}
	var p simPeering
	if must(&p, "sim", "peering", "accept", accepted); p.State != "active" {
		t.Errorf("moat sim peering accept = %+v, want active", p)
	}
	if must(&routes, "sim", "route", "list", "--vpc", vpc.ID); len(routes.Items) != 1 || routes.Items[0].State != "active" {
		t.Errorf("moat sim route list after accept = %+v, want one active route", routes.Items)
	}
	refused(`^moat: error: .*already exists\nmoat: hint: delete the route first`,
		"sim", "route", "add", "--vpc", vpc.ID, "--destination", "10.0.0.0/17", "--target", accepted)
	if must(&p, "sim", "peering", "reject", rejected); p.State != "rejected" {
		t.Errorf("moat sim peering reject = %+v, want rejected", p)
	}
	refused(`^moat: error: .*wrong state\nmoat: hint: only a pending-acceptance request`, "sim", "peering", "accept", rejected)
	refused(`^moat: error: .*in use\nmoat: hint: `, "sim", "vpc", "delete", vpc.ID)

	var before, after simClock
	must(&before, "sim", "clock", "show")
	must(&after, "sim", "clock", "advance", "8d")
	if d := after.Now.Sub(before.Now); d < 8*24*time.Hour || d > 8*24*time.Hour+time.Minute {
		t.Errorf("moat sim clock advance 8d: %v → %v (%v), want 8 days later", before.Now, after.Now, d)
	}
	must(&inbox, "sim", "peering", "list", "--account", acc.ID)
	states := map[string]string{}
	for _, p := range inbox.Items {
		states[p.ID] = p.State
	}
	if want := map[string]string{accepted: "active", rejected: "rejected", expiring: "expired"}; !maps.Equal(states, want) {
		t.Errorf("moat sim peering list after 8 days = %v, want %v", states, want)
	}

	var deleted simRoute
	if must(&deleted, "sim", "route", "delete", "--vpc", vpc.ID, "--destination", "10.0.0.0/17"); deleted.Destination != "10.0.0.0/17" || deleted.Target != accepted {
		t.Errorf("moat sim route delete = %+v, want the route to 10.0.0.0/17", deleted)
	}
	if _, err := cloud.DeletePeering(ctx, accepted); err != nil {
		t.Fatal(err)
	}

	if code, _, stderr := moat("sim", "host", "delete", "app"); code != 0 {
		t.Errorf("moat sim host delete app = %d, stderr %q", code, stderr)
	}
	if code, stdout, stderr := moat("sim", "vpc", "delete", vpc.ID); code != 0 || !strings.Contains(stdout, vpc.ID) {
		t.Errorf("moat sim vpc delete = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	refused(`^moat: error: .*not found\nmoat: hint: moat sim vpc list`, "sim", "vpc", "delete", vpc.ID)
}
