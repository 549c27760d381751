package ops

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/testenv"
)

func testGrant(t *testing.T, now time.Time) *domain.OpsGrant {
	t.Helper()
	g, err := domain.NewOpsGrant(domain.OpsGrantRequest{Operator: "tok-op", NodeID: domain.NewID(domain.PrefixNode), Reason: "INC-1: disk full", TTL: 20 * time.Minute, SourceCIDRs: []string{"10.250.0.0/24", "10.251.0.7"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	g.Serial = 42
	return g
}

func TestCAMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCA(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.AuthorizedKey() != ca.AuthorizedKey() || !strings.HasPrefix(ca.AuthorizedKey(), "ssh-ed25519 ") {
		t.Errorf("ParseCA(Marshal()) = %s, want %s", back.AuthorizedKey(), ca.AuthorizedKey())
	}
	if _, err := ParseCA([]byte("not a key")); err == nil {
		t.Error("ParseCA(garbage) succeeded")
	}
}

func TestIssueUser(t *testing.T) {
	t.Parallel()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	g := testGrant(t, now)
	c, err := ca.IssueUser(g, key.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	type fields struct {
		Type         uint32
		KeyID        string
		Serial       uint64
		Principals   []string
		After        int64
		Before       int64
		Critical     map[string]string
		Extensions   map[string]string
		SignedByCA   bool
		CertifiesKey bool
	}
	got := fields{c.CertType, c.KeyId, c.Serial, c.ValidPrincipals, int64(c.ValidAfter), int64(c.ValidBefore), c.CriticalOptions, c.Extensions,
		string(c.SignatureKey.Marshal()) == string(ca.PublicKey().Marshal()), string(c.Key.Marshal()) == string(key.PublicKey().Marshal())}
	want := fields{ssh.UserCert, g.ID, 42, []string{"moat-ops"}, now.Add(-domain.OpsClockSkew).Unix(), g.ExpiresAt.Unix(),
		map[string]string{"source-address": "10.250.0.0/24,10.251.0.7/32"}, map[string]string{"permit-pty": ""}, true, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("certificate (-want +got):\n%s", diff)
	}
	// The certificate the CA issued passes the node's checks.
	from := &net.TCPAddr{IP: net.IPv4(10, 251, 0, 7), Port: 40000}
	if _, r := checkCert(c, domain.OpsPrincipal, from, now, ca.PublicKey()); r != nil {
		t.Errorf("checkCert(issued certificate) = %v", r)
	}

	for _, tc := range []struct {
		name string
		edit func(*domain.OpsGrant)
		at   time.Time
	}{
		{"no serial", func(g *domain.OpsGrant) { g.Serial = 0 }, now},
		{"not a grant", func(g *domain.OpsGrant) { g.ID = "node-x" }, now},
		{"expired", func(*domain.OpsGrant) {}, g.ExpiresAt},
		{"revoked", func(g *domain.OpsGrant) { g.Revoke(now) }, now},
		{"longer than an hour", func(g *domain.OpsGrant) { g.ExpiresAt = now.Add(time.Hour + time.Second) }, now},
		{"no source", func(g *domain.OpsGrant) { g.SourceCIDRs = nil }, now},
	} {
		bad := testGrant(t, now)
		tc.edit(bad)
		if _, err := ca.IssueUser(bad, key.PublicKey(), tc.at); err == nil {
			t.Errorf("IssueUser for a grant with %s succeeded", tc.name)
		}
	}
}

// OpenSSH's ssh-keygen reads the certificate as the CA meant it.
func TestIssueUserReadByOpenSSH(t *testing.T) {
	t.Parallel()
	keygen := testenv.MustHaveCommand(t, "ssh-keygen")
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	g := testGrant(t, now)
	c, err := ca.IssueUser(g, key.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(c), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-L", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	text := strings.Join(strings.Fields(string(out)), " ")
	for _, want := range []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		`Key ID: "` + g.ID + `"`,
		"Serial: 42",
		"Principals: moat-ops Critical Options: source-address 10.250.0.0/24,10.251.0.7/32 Extensions: permit-pty",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, out)
		}
	}
}

func TestIssueHost(t *testing.T) {
	t.Parallel()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	node := domain.NewID(domain.PrefixNode)
	now := time.Now()
	c, err := ca.IssueHost(key.PublicKey(), node, []string{"10.250.0.9"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.CertType != ssh.HostCert || c.KeyId != node || !cmp.Equal(c.ValidPrincipals, []string{node, "10.250.0.9"}) ||
		int64(c.ValidBefore) != now.Add(HostCertTTL).Unix() || c.Serial == 0 {
		t.Errorf("host certificate = %+v", c)
	}
	if _, err := ca.IssueHost(key.PublicKey(), "svc-x", nil, now, 0); err == nil {
		t.Error("IssueHost for a non-node ID succeeded")
	}
	// A host certificate is no operator's credential.
	if _, r := checkCert(c, domain.OpsPrincipal, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, now, ca.PublicKey()); r == nil || r.reason != ReasonNotUserCert {
		t.Errorf("checkCert(host certificate) = %v, want %s", r, ReasonNotUserCert)
	}
}

func TestCheckCertValidityBoundaries(t *testing.T) {
	t.Parallel()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Unix(1_800_000_000, 0)
	g := testGrant(t, issued)
	c, err := ca.IssueUser(g, key.PublicKey(), issued)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Unix(int64(c.ValidBefore), 0)
	after := time.Unix(int64(c.ValidAfter), 0)
	from := &net.TCPAddr{IP: net.IPv4(10, 250, 0, 1), Port: 1}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{after.Add(-time.Second), ReasonNotYetValid},
		{after, ""},
		{before.Add(-time.Second), ""},
		{before, ReasonExpired},
		{before.Add(time.Second), ReasonExpired},
	} {
		_, r := checkCert(c, domain.OpsPrincipal, from, tc.at, ca.PublicKey())
		got := ""
		if r != nil {
			got = r.reason
		}
		if got != tc.want {
			t.Errorf("checkCert at ValidBefore%+v = %q, want %q", tc.at.Sub(before), got, tc.want)
		}
	}

	// A tampered certificate (its serial changed after signing) does not
	// verify.
	tampered := *c
	tampered.Serial++
	if _, r := checkCert(&tampered, domain.OpsPrincipal, from, issued, ca.PublicKey()); r == nil || r.reason != ReasonBadSignature {
		t.Errorf("checkCert(tampered) = %v, want %s", r, ReasonBadSignature)
	}
	// IPv4-mapped remote addresses are compared as IPv4.
	mapped := strAddr("[::ffff:10.250.0.1]:1")
	if _, r := checkCert(c, domain.OpsPrincipal, mapped, issued, ca.PublicKey()); r != nil {
		t.Errorf("checkCert from %s = %v", mapped, r)
	}
}

// strAddr is a net.Addr as a listener on a dual-stack socket reports it.
type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }
