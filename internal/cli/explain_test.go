//go:build linux

package cli

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

func TestExplainHelpGolden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"explain", "--help"}, {"verify", "--help"}} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("moat %q = %d, stderr %q", args, code, stderr)
		}
		golden(t, filepath.Join("testdata", "help", strings.Join(args[:len(args)-1], "-")+".txt"), []byte(stdout))
	}
}

// TestExplainCLI: explain without root judges the source from the API and
// its address, says so, and exits 0 whatever the verdict.
func TestExplainCLI(t *testing.T) {
	t.Parallel()
	attached := apitype.Service{ID: "svc-a", State: "running", VPCID: "vpc-a", AllowedIPs: []apitype.AllowEntry{{CIDR: "0.0.0.0/0"}},
		Connection: &apitype.Connection{Host: "svc-a.proj-a.vpc.moat.test", Address: "10.0.0.10", Port: 5432}}
	public := apitype.Service{ID: "svc-p", State: "running", AllowedIPs: []apitype.AllowEntry{{CIDR: "198.19.0.0/16"}},
		Connection: &apitype.Connection{Host: "svc-p.proj-a.moat.test", Address: "198.18.0.4", Port: 5432}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/projects/proj-a/services/svc-a":
			json.NewEncoder(w).Encode(attached)
		case "/v1/projects/proj-a/services/svc-p":
			json.NewEncoder(w).Encode(public)
		case "/v1/projects/proj-a/vpcs/vpc-a":
			json.NewEncoder(w).Encode(apitype.VPC{ID: "vpc-a", CIDR: "10.0.0.0/17", State: "active"})
		case "/v1/projects/proj-a/peerings":
			json.NewEncoder(w).Encode(map[string]any{"items": []apitype.Peering{
				{ID: "pcx-a", VPCID: "vpc-a", PeerVPCID: "vpc-0c", PeerCIDRs: []string{"172.31.0.0/16"}, CloudPeeringID: "pcx-0123", State: "active"},
				{ID: "pcx-b", VPCID: "vpc-a", PeerVPCID: "vpc-0d", PeerCIDRs: []string{"172.30.0.0/16"}, CloudPeeringID: "pcx-0456", State: "pending-acceptance"},
			}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MOAT_CONFIG": filepath.Join(dir, "c.json"), "MOAT_URL": srv.URL, "MOAT_TOKEN": "moat_tok-x_y", "MOAT_CA": ca, "MOAT_PROJECT": "proj-a",
		"MOAT_LOCALCLOUD_PREFIX": "moat-tunused-"}
	run := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, geteuid: func() int { return 1000 }}
		return a.run(t.Context(), args), out.String(), errb.String()
	}
	const notRoot = "moat: note: not root: the simulated cloud was not read; the source is judged from its address and the API alone\n"
	for _, tt := range []struct {
		args       []string
		wantOut    string
		wantStderr string
	}{
		{[]string{"explain", "svc-a", "--from", "198.19.0.2"},
			"refused: public-access-disabled: service svc-a is attached to VPC vpc-a (10.0.0.0/17): it has no public access, so 198.19.0.2 on the internet cannot reach it\n", notRoot},
		{[]string{"explain", "svc-a", "--from", "172.31.0.5"}, "allowed\n",
			notRoot + "moat: note: the network of 172.31.0.5 is unknown: its route table and security group were not checked\n"},
		{[]string{"explain", "svc-a", "--from", "172.30.0.5"}, "refused: peering-not-active: peering pcx-0456 (pcx-b) of VPC vpc-a is pending-acceptance\n", ""},
		{[]string{"explain", "svc-a", "--from", "192.168.0.5"}, "refused: not-peered: no peering of VPC vpc-a (10.0.0.0/17) covers 192.168.0.5\n", ""},
		{[]string{"explain", "svc-p", "--from", "198.19.0.2"}, "allowed\n", notRoot},
		{[]string{"explain", "svc-p", "--from", "203.0.113.1"}, "refused: allowlist: 203.0.113.1 is not in the allowlist of service svc-p (198.19.0.0/16)\n", notRoot},
	} {
		code, out, stderr := run(tt.args...)
		if code != 0 || out != tt.wantOut || (tt.wantStderr != "" && stderr != tt.wantStderr) {
			t.Errorf("moat %q = %d, stdout %q, stderr %q; want 0, %q, %q", tt.args, code, out, stderr, tt.wantOut, tt.wantStderr)
		}
	}

	code, out, _ := run("explain", "svc-a", "--from", "198.19.0.2", "-o", "json")
	var v domain.Verdict
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Allowed || v.Reason != domain.ReasonPublicAccessDisabled ||
		v.Source != netip.MustParseAddr("198.19.0.2") || v.Target != netip.MustParseAddr("10.0.0.10") {
		t.Errorf("explain -o json = %d, %q (%v); want the verdict", code, out, err)
	}

	for _, tt := range []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"explain", "svc-a", "--from", "nope"}, 2, "moat: error: --from \"nope\" is not an IP address\nmoat: hint: a simulated host's name is looked up only as root on the machine of moat up\n"},
		{[]string{"explain", "svc-a"}, 2, "moat: error: required flag(s) \"from\" not set\nmoat: hint: see moat --help\n"},
		{[]string{"verify", "svc-a"}, 1, "moat: error: moat verify needs root: the simulated cloud is network namespaces on this machine\nmoat: hint: run it as root (sudo), on the machine of moat up\n"},
		{[]string{"explain", "svc-x", "--from", "198.19.0.2"}, 1, ""},
	} {
		code, _, stderr := run(tt.args...)
		if code != tt.code || (tt.wantErr != "" && stderr != tt.wantErr) || !strings.HasPrefix(stderr, "moat: error: ") {
			t.Errorf("moat %q = %d, stderr %q; want %d, %q", tt.args, code, stderr, tt.code, tt.wantErr)
		}
	}
}

func TestVerifyTable(t *testing.T) {
	t.Parallel()
	rows := []domain.Check{
		{Host: "cust", Address: netip.MustParseAddr("172.31.0.5"), Explain: domain.Verdict{Allowed: true, Reason: domain.ReasonAllowed}, Reachable: true, Agree: true},
		{Host: "laptop", Address: netip.MustParseAddr("198.19.0.2"), Explain: domain.Verdict{Reason: domain.ReasonPublicAccessDisabled}, Reachable: true},
	}
	var buf bytes.Buffer
	if err := writeVerifyTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	want := `HOST    ADDRESS     EXPLAIN                          PROBE      AGREE
cust    172.31.0.5  allowed                          reachable  yes
laptop  198.19.0.2  refused: public-access-disabled  reachable  NO
`
	if buf.String() != want {
		t.Errorf("verify table:\n%s\nwant:\n%s", buf.String(), want)
	}
}
