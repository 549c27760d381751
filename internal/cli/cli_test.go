package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestParseAllowArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      []string
		want    []apitype.AllowEntry
		wantErr bool
	}{
		{in: nil, want: []apitype.AllowEntry{}},
		{in: []string{"10.0.0.0/8"}, want: []apitype.AllowEntry{{CIDR: "10.0.0.0/8"}}},
		{in: []string{"10.0.0.0/8=office"}, want: []apitype.AllowEntry{{CIDR: "10.0.0.0/8", Description: "office"}}},
		{in: []string{"10.0.0.0/8=a=b, c"}, want: []apitype.AllowEntry{{CIDR: "10.0.0.0/8", Description: "a=b, c"}}},
		{in: []string{"10.0.0.0/8="}, want: []apitype.AllowEntry{{CIDR: "10.0.0.0/8"}}},
		// Bare addresses and non-canonical prefixes go to the server as
		// written: it widens the one and refuses the other with a hint.
		{in: []string{"192.0.2.7"}, want: []apitype.AllowEntry{{CIDR: "192.0.2.7"}}},
		{in: []string{"2001:db8::1=v6 host"}, want: []apitype.AllowEntry{{CIDR: "2001:db8::1", Description: "v6 host"}}},
		{in: []string{"10.0.0.7/17"}, want: []apitype.AllowEntry{{CIDR: "10.0.0.7/17"}}},
		{in: []string{" 10.1.0.0/16 =x"}, want: []apitype.AllowEntry{{CIDR: "10.1.0.0/16", Description: "x"}}},
		{in: []string{"=desc"}, wantErr: true},
		{in: []string{"10.0.0.0/8", ""}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseAllowArgs(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseAllowArgs(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		var ue *usageError
		if err != nil && !errors.As(err, &ue) {
			t.Errorf("parseAllowArgs(%q) error = %T, want a usage error", tt.in, err)
		}
		if err == nil && !cmp.Equal(got, tt.want) {
			t.Errorf("parseAllowArgs(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestEditEntries(t *testing.T) {
	t.Parallel()
	cur := []apitype.AllowEntry{{CIDR: "10.0.0.0/8", Description: "corp"}, {CIDR: "192.0.2.7/32", Description: "bastion"}}
	got := addEntries(cur, []apitype.AllowEntry{{CIDR: "192.0.2.7", Description: "jump"}, {CIDR: "10.0.0.0/8"}, {CIDR: "2001:db8::/32"}})
	want := []apitype.AllowEntry{{CIDR: "10.0.0.0/8", Description: "corp"}, {CIDR: "192.0.2.7/32", Description: "jump"}, {CIDR: "2001:db8::/32"}}
	if !cmp.Equal(got, want) {
		t.Errorf("addEntries = %v, want %v", got, want)
	}
	if cur[1].Description != "bastion" {
		t.Errorf("addEntries changed its input")
	}
	got, err := removeEntries(cur, []string{"192.0.2.7"})
	if want := cur[:1]; err != nil || !cmp.Equal(got, want) {
		t.Errorf("removeEntries(192.0.2.7) = %v, %v, want %v", got, err, want)
	}
	if _, err := removeEntries(cur, []string{"10.9.0.0/16"}); err == nil {
		t.Errorf("removeEntries(10.9.0.0/16) = nil error, want not listed")
	}
}

var (
	t0     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	sample = map[string]any{
		"project":  apitype.Project{ID: "proj-aaaa", Name: "acme", State: "active", VPCQuota: 3, CreatedAt: t0},
		"projects": []apitype.Project{{ID: "proj-aaaa", Name: "acme", State: "active", VPCQuota: 3, CreatedAt: t0}, {ID: "proj-bbbb", Name: "globex-long-name", State: "active", VPCQuota: 10, CreatedAt: t0}},
		"token":    apitype.Token{ID: "tok-aaaa", ProjectID: "proj-aaaa", Name: "ci", Role: "admin", CreatedAt: t0, Secret: "moat_tok-aaaa_SECRET"},
		"regions":  []apitype.Region{{Code: "eu-west-1", AZs: []string{"eu-west-1a", "eu-west-1b"}}},
		"vpc":      apitype.VPC{ID: "vpc-aaaa", ProjectID: "proj-aaaa", Name: "main", Region: "eu-west-1", CIDR: "10.0.0.0/16", State: "failed", StateInfo: &apitype.StateInfo{Code: "quota", Message: "no"}, CreatedAt: t0},
		"peerings": []apitype.Peering{{ID: "pcx-aaaa", ProjectID: "proj-aaaa", VPCID: "vpc-aaaa", PeerAccountID: "123456789012", PeerVPCID: "vpc-0123abcd", PeerRegion: "us-west-2", PeerCIDRs: []string{"172.16.0.0/16", "172.17.0.0/24"}, State: "pending-acceptance", ExpiresAt: t0, CreatedAt: t0}},
		"service": apitype.Service{ID: "svc-aaaa", ProjectID: "proj-aaaa", Name: "db", Region: "eu-west-1", Nodes: 3, Public: true,
			AllowedIPs: []apitype.AllowEntry{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, WideOpen: true, State: "running", OperationID: "op-aaaa",
			Connection: &apitype.Connection{Host: "svc-aaaa.proj-aaaa.moat.test", Port: 5432, Database: "defaultdb", User: "moat", SSLMode: "verify-full"}, CreatedAt: t0,
			Settings: map[string]string{"statement_timeout": "30s", "max_connections": "200"}, PendingRestart: []string{"max_connections"}},
		"service-archive-failing": apitype.Service{ID: "svc-bbbb", ProjectID: "proj-aaaa", Name: "db", Region: "eu-west-1", Nodes: 1, Public: true,
			AllowedIPs: []apitype.AllowEntry{{CIDR: "192.0.2.0/24"}}, State: "running", CreatedAt: t0,
			NodeList: []apitype.Node{{ID: "node-aaaa", Index: 0, AZ: "eu-west-1a", State: "running", Address: "198.18.1.1",
				Archive: &apitype.ArchiveStatus{LastArchivedWAL: "000000010000000000000003", LastArchivedAt: t0, LastFailedWAL: "000000010000000000000004", LastFailedAt: t0.Add(time.Minute), Failing: true}}}},
		"service-volume-full": apitype.Service{ID: "svc-cccc", ProjectID: "proj-aaaa", Name: "db", Region: "eu-west-1", Nodes: 2, Public: true,
			AllowedIPs: []apitype.AllowEntry{{CIDR: "192.0.2.0/24"}}, State: "running", CreatedAt: t0,
			NodeList: []apitype.Node{
				{ID: "node-aaaa", Index: 0, AZ: "eu-west-1a", State: "running", Address: "198.18.1.1",
					Volume: &apitype.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 10 << 30, Used: 42 << 20}},
				{ID: "node-bbbb", Index: 1, AZ: "eu-west-1b", State: "failed", Address: "198.18.1.2",
					StateInfo: &apitype.StateInfo{Code: "volume_full", Message: "the node's encrypted volume is full, so PostgreSQL cannot write"},
					Volume:    &apitype.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "dm-crypt", Size: 10 << 30, Used: 10 << 30, Full: true}},
			}},
		"service-failover": apitype.Service{ID: "svc-cccc", ProjectID: "proj-aaaa", Name: "ha", Region: "eu-west-1", Nodes: 3, Public: true,
			AllowedIPs: []apitype.AllowEntry{{CIDR: "192.0.2.0/24"}}, State: "degraded", OperationID: "op-cccc", CreatedAt: t0,
			StateInfo: &apitype.StateInfo{Code: "primary_lost", Message: "the primary node-aaaa is lost (its PostgreSQL is down since 2025-03-01T12:00:00Z); promoting node-bbbb"},
			Connection: &apitype.Connection{Host: "svc-cccc.proj-aaaa.moat.test", Address: "198.18.1.2", Port: 5432, Database: "defaultdb", User: "moatadmin", SSLMode: "verify-full",
				ReadOnlyHost: "ro.svc-cccc.proj-aaaa.moat.test",
				MultiHost:    "host=svc-cccc.proj-aaaa.moat.test,svc-cccc.proj-aaaa.moat.test hostaddr=198.18.1.2,198.18.1.3 port=5432 dbname=defaultdb user=moatadmin sslmode=verify-full target_session_attrs=read-write"},
			Replication: &apitype.Replication{Mode: "quorum"},
			Health:      &apitype.ServiceHealth{Status: "degraded", Conditions: []apitype.StateInfo{{Code: "primary_lost", Message: "failing over from node-aaaa to node-bbbb: step replace"}}},
			NodeList: []apitype.Node{
				{ID: "node-aaaa", Index: 0, AZ: "eu-west-1a", State: "deleting", Address: "198.18.1.1", Host: "host-a"},
				{ID: "node-bbbb", Index: 1, AZ: "eu-west-1b", State: "running", Address: "198.18.1.2", Host: "host-b", Role: "primary"},
				{ID: "node-cccc", Index: 2, AZ: "eu-west-1c", State: "running", Address: "198.18.1.3", Host: "host-c", Role: "replica", Streaming: true, SyncState: "quorum", LagBytes: 128},
				{ID: "node-dddd", Index: 0, AZ: "eu-west-1a", State: "creating", Host: "host-d", Role: "replica"}}},
		"host": apitype.Host{ID: "host-aaaa", Name: "us-east-1a-1", Region: "us-east-1", AZ: "us-east-1a", Capacity: 8, State: "active", Load: 2, LastHeartbeatAt: t0, AgentVersion: "dev", CreatedAt: t0,
			Nodes: []apitype.HostNode{
				{ID: "node-aaaa", ProjectID: "proj-aaaa", ServiceID: "svc-aaaa", Role: "primary", State: "running",
					Volume: &apitype.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 10 << 30, Used: 42 << 20}},
				{ID: "node-bbbb", ProjectID: "proj-aaaa", ServiceID: "svc-bbbb", Role: "replica", State: "failed",
					Volume: &apitype.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 10 << 30, Used: 1 << 30, Lost: true}}}},
		"allowlist":        apitype.Allowlist{ServiceID: "svc-aaaa", AllowedIPs: []apitype.AllowEntry{{CIDR: "10.0.0.0/8", Description: "corp"}, {CIDR: "2001:db8::/32"}}, Revision: 3, AppliedRevision: 2},
		"allowlist-empty":  apitype.Allowlist{ServiceID: "svc-aaaa", AllowedIPs: []apitype.AllowEntry{}, Revision: 4, AppliedRevision: 4, Applied: true},
		"operation":        apitype.Operation{ID: "op-aaaa", ProjectID: "proj-aaaa", Type: "service.attach", TargetID: "svc-aaaa", VPCID: "vpc-aaaa", State: "failed", Error: &apitype.StateInfo{Code: "region_mismatch", Message: "wrong region"}, CreatedAt: t0, UpdatedAt: t0},
		"backups":          []apitype.Backup{{Label: "20250301T120000Z", Timeline: 1, StartLSN: "0/2000028", EndLSN: "0/2000100", StartTime: t0, EndTime: t0.Add(2 * time.Second), Size: 31457280, StoredSize: 4194304, KeyFingerprint: "SHA256:abcd"}},
		"backup-operation": apitype.Operation{ID: "op-bbbb", ProjectID: "proj-aaaa", Type: "service.backup", TargetID: "svc-aaaa", State: "succeeded", BackupLabel: "20250301T120000Z", CreatedAt: t0, UpdatedAt: t0},
		"audit":            []apitype.AuditEntry{{Seq: 1, Time: t0, Actor: "operator:tok-op", Action: "project.create", Target: "proj-aaaa", Outcome: "success", Hash: "ab"}},
		"verify-ok":        apitype.AuditVerify{OK: true, Entries: 10, Checkpoints: 1},
		"verify-bad":       apitype.AuditVerify{Entries: 10, FirstBad: 4, Problem: "hash mismatch"},
		"support-requests": []apitype.SupportRequest{{ID: "sup-aaaa", ProjectID: "proj-aaaa", Type: "quota_increase", Resource: "vpcs", Current: 3, Requested: 5, Message: "one VPC\nper region", Requester: "admin:tok-a", State: "open", CreatedAt: t0},
			{ID: "sup-bbbb", ProjectID: "proj-aaaa", Type: "quota_increase", Resource: "nodes", Current: 30, Requested: 60, Message: "replicas", State: "declined", Reply: "the host is full", DecidedBy: "operator:tok-op", CreatedAt: t0}},
	}
)

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	for name, v := range sample {
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

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, d)
	}
}

// runCLI runs one command line with env as the whole environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code = a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestErrors(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "none.json")
	noConn := map[string]string{"MOAT_CONFIG": cfg}
	conn := map[string]string{"MOAT_CONFIG": cfg, "MOAT_URL": "https://127.0.0.1:1", "MOAT_TOKEN": "moat_tok-x_y"}
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no url", noConn, []string{"region", "list"}, 1,
			"moat: error: no API URL\nmoat: hint: set MOAT_URL or pass --url, or run moat login\n"},
		{"no token", map[string]string{"MOAT_CONFIG": cfg, "MOAT_URL": "https://x"}, []string{"project", "list"}, 1,
			"moat: error: no API token\nmoat: hint: set MOAT_TOKEN or run moat login\n"},
		{"no project", conn, []string{"vpc", "list"}, 1,
			"moat: error: no project\nmoat: hint: set MOAT_PROJECT or pass --project (moat project list)\n"},
		{"plain http", map[string]string{"MOAT_CONFIG": cfg, "MOAT_URL": "http://x", "MOAT_TOKEN": "t"}, []string{"region", "list"}, 1,
			"moat: error: client: API URL \"http://x\" is not https://HOST[:PORT] (the API serves HTTPS only)\nmoat: hint: check --url/MOAT_URL (https://HOST:PORT) and --ca/MOAT_CA (the server's api-ca.pem)\n"},
		{"empty allowlist", conn, []string{"service", "allowlist", "set", "svc-x", "--project", "p"}, 1,
			"moat: error: allowed_ips: the allowlist would be empty\nmoat: hint: an empty allowlist refuses every connection; confirm it explicitly (confirm_empty=true, or --confirm-empty)\n"},
		{"bad output", conn, []string{"region", "list", "-o", "yaml"}, 2,
			"moat: error: -o \"yaml\" is not an output format; use json, table, id or value=FIELD\nmoat: hint: see moat --help\n"},
		{"unknown flag", conn, []string{"vpc", "list", "--bogus"}, 2,
			"moat: error: unknown flag: --bogus\nmoat: hint: see moat vpc list --help\n"},
		{"missing arg", conn, []string{"vpc", "get"}, 2,
			"moat: error: accepts 1 arg(s), received 0\nmoat: hint: see moat vpc get --help\n"},
		{"required flag", conn, []string{"vpc", "create", "--name", "x"}, 2,
			"moat: error: required flag(s) \"cidr\", \"region\" not set\nmoat: hint: see moat --help\n"},
		{"unknown command", conn, []string{"bogus"}, 2,
			"moat: error: unknown command \"bogus\" for \"moat\"\nmoat: hint: see moat --help\n"},
		{"unknown subcommand", conn, []string{"vpc", "bogus"}, 2,
			"moat: error: unknown command \"bogus\" for \"moat vpc\"\nmoat: hint: see moat vpc --help\n"},
		{"incoherent timings", conn, []string{"server", "--lease", "5s"}, 2,
			"moat: error: --host-timeout: --host-timeout 3s is not longer than --lease 5s + --lease-margin 400ms: a host marked down might still accept writes\nmoat: hint: give a --host-timeout longer than 5.4s (--lease + --lease-margin), or a shorter --lease\n"},
		{"slow heartbeat", conn, []string{"up", "--heartbeat-interval", "2s"}, 2,
			"moat: error: --heartbeat-interval: --heartbeat-interval 2s is more than a third of the --lease 2.5s: a healthy primary would be fenced after one late heartbeat\nmoat: hint: give a --heartbeat-interval of at most 833ms (a third of the --lease), or a longer --lease\n"},
		{"no dns server", conn, []string{"up", "--dns-servers", "0"}, 2,
			"moat: error: --dns-servers 0: want 1 to 5 DNS server processes\nmoat: hint: give 1 to 5 (default 2)\n"},
		{"too many dns servers", conn, []string{"up", "--dns-servers", "6"}, 2,
			"moat: error: --dns-servers 6: want 1 to 5 DNS server processes\nmoat: hint: give 1 to 5 (default 2)\n"},
		{"zero lease margin", conn, []string{"server", "--lease-margin", "0"}, 2,
			"moat: error: --lease-margin: --lease-margin 0s is not positive\nmoat: hint: give --lease-margin a positive duration such as 400ms\n"},
		{"bad allow arg", conn, []string{"service", "allowlist", "add", "svc-x", "=x"}, 2,
			"moat: error: allowlist entry \"=x\" has no CIDR; write CIDR or CIDR=description\nmoat: hint: see moat --help\n"},
		{"nothing to update", conn, []string{"service", "update", "svc-x"}, 2,
			"moat: error: nothing to change\nmoat: hint: give --nodes N, --set NAME=VALUE or --unset NAME\n"},
		{"bad set arg", conn, []string{"service", "update", "svc-x", "--set", "work_mem"}, 2,
			"moat: error: --set \"work_mem\" is not NAME=VALUE\nmoat: hint: write it like --set statement_timeout=30s\n"},
		{"set and unset", conn, []string{"service", "update", "svc-x", "--set", "work_mem=1MB", "--unset", "work_mem"}, 2,
			"moat: error: setting work_mem is given twice\nmoat: hint: see moat --help\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tt.env, tt.args...)
			if code != tt.wantCode || stderr != tt.wantErr {
				t.Errorf("moat %q = %d, stderr:\n%s\nwant %d, stderr:\n%s", tt.args, code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// TestAuditVerifyBroken: a broken chain exits 1 naming the first bad entry,
// in both output formats.
func TestAuditVerifyBroken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/audit/verify" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(apitype.AuditVerify{Entries: 9, FirstBad: 4, Problem: "entry 4's hash does not match its contents"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MOAT_CONFIG": filepath.Join(dir, "c.json"), "MOAT_URL": srv.URL, "MOAT_TOKEN": "moat_tok-x_y", "MOAT_CA": ca}
	wantErr := "moat: error: the audit log is not intact: first bad entry 4: entry 4's hash does not match its contents\n" +
		"moat: hint: the database was changed behind the server's back; keep a copy and investigate from that entry on\n"
	code, stdout, stderr := runCLI(t, env, "audit", "verify")
	if code != 1 || stdout != "" || stderr != wantErr {
		t.Errorf("moat audit verify = %d, stdout %q, stderr:\n%s\nwant 1, no stdout, stderr:\n%s", code, stdout, stderr, wantErr)
	}
	code, stdout, _ = runCLI(t, env, "audit", "verify", "-o", "json")
	if code != 1 || !strings.Contains(stdout, `"first_bad": 4`) {
		t.Errorf("moat audit verify -o json = %d, stdout %q, want 1 and the JSON report", code, stdout)
	}
}

func TestDescribeProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err        error
		msg, hint  string
		wantStatus int
	}{
		{&client.Error{Problem: apitype.Problem{Status: 400, Code: "non_canonical_cidr", Field: "cidr", Detail: `"10.0.0.7/17" is not written canonically`, Hint: "use 10.0.0.0/17"}},
			`cidr: "10.0.0.7/17" is not written canonically`, "use 10.0.0.0/17", 1},
		{fmt.Errorf("create vpc: %w", &client.Error{Problem: apitype.Problem{Status: 401, Code: "unauthenticated", Detail: "the API token is not valid", Hint: "send Authorization"}}),
			"create vpc: the API token is not valid", "set MOAT_TOKEN or run moat login", 1},
		{withHint(errors.New("boom"), "do this"), "boom", "do this", 1},
		{&usageError{err: errors.New("bad"), cmd: "moat vpc"}, "bad", "see moat vpc --help", 2},
		{context.Canceled, "interrupted", "", 1},
	}
	for _, tt := range tests {
		msg, hint, code := describe(tt.err)
		if msg != tt.msg || hint != tt.hint || code != tt.wantStatus {
			t.Errorf("describe(%v) = %q, %q, %d, want %q, %q, %d", tt.err, msg, hint, code, tt.msg, tt.hint, tt.wantStatus)
		}
	}
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "moat", "config.json")
	want := fileConfig{Version: 1, URL: "https://h:1", Token: "moat_tok-a_b", CAPEM: "PEM", Project: "proj-a"}
	if err := saveConfig(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := loadConfig(path)
	if err != nil || got != want {
		t.Errorf("loadConfig = %+v, %v, want %+v", got, err, want)
	}
	for _, bad := range []string{`{"version":1,"url":"x","extra":1}`, `{"version":2}`, `{"url":"x"}`, `{"version":1}{}`, `nope`} {
		var c fileConfig
		if err := parseConfig([]byte(bad), &c); err == nil {
			t.Errorf("parseConfig(%s) = nil error, want refused", bad)
		}
	}
	// Precedence: flag > env > file.
	env := map[string]string{"MOAT_CONFIG": path, "MOAT_TOKEN": "moat_tok-env_x"}
	a := &app{getenv: func(k string) string { return env[k] }, project: "proj-flag"}
	c, err := a.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.url != want.URL || c.token != "moat_tok-env_x" || c.project != "proj-flag" || string(c.caPEM) != "PEM" {
		t.Errorf("resolve = %+v, want url from file, token from env, project from flag, CA from file", c)
	}
}

// TestHelpGolden keeps the documented command lines of the CLI contract
// stable.
func TestHelpGolden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"service", "--help"},
		{"service", "create", "--help"},
		{"service", "update", "--help"},
		{"service", "allowlist", "set", "--help"},
		{"peering", "create", "--help"},
		{"audit", "list", "--help"},
		{"ca", "get", "--help"},
		{"service", "password", "reset", "--help"},
		{"service", "psql", "--help"},
		{"sim", "--help"},
		{"sim", "host", "--help"},
		{"sim", "host", "create", "--help"},
		{"sim", "exec", "--help"},
		{"support", "request", "--help"},
		{"support", "decline", "--help"},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("moat %q = %d, stderr %q", args, code, stderr)
		}
		golden(t, filepath.Join("testdata", "help", strings.Join(args[:len(args)-1], "-")+".txt"), []byte(stdout))
	}
}
