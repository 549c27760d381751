package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func mustCA(t *testing.T, name string, opts ...Option) *CA {
	t.Helper()
	ca, err := NewCA(name, 365*24*time.Hour, t0, opts...)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCert(certPEM)
	if err != nil {
		t.Fatalf("ParseCert: %v", err)
	}
	return c
}

func verify(ca *CA, cert *x509.Certificate, name string, at time.Time, usage x509.ExtKeyUsage) error {
	_, err := cert.Verify(x509.VerifyOptions{
		DNSName: name, Roots: ca.Pool(), CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{usage},
	})
	return err
}

func TestIssueServer(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "moat api ca")
	names := []string{"localhost", "127.0.0.1", "::1", "Moat.Example.com", "*.svc.example.com", "10.1.2.3"}
	certPEM, keyPEM, err := ca.IssueServer(names, 90*24*time.Hour, t0)
	if err != nil {
		t.Fatalf("IssueServer: %v", err)
	}
	cert := mustParse(t, certPEM)
	if diff := cmp.Diff([]string{"localhost", "moat.example.com", "*.svc.example.com"}, cert.DNSNames); diff != "" {
		t.Errorf("DNSNames (-want +got):\n%s", diff)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "::1", "10.1.2.3"}, ips); diff != "" {
		t.Errorf("IPAddresses (-want +got):\n%s", diff)
	}
	if cert.Subject.CommonName != "localhost" || cert.IsCA {
		t.Errorf("CN %q IsCA %v, want localhost false", cert.Subject.CommonName, cert.IsCA)
	}
	at := t0.Add(time.Hour)
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "moat.example.com", "MOAT.example.com", "db1.svc.example.com", "10.1.2.3"} {
		if err := verify(ca, cert, name, at, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("Verify(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"example.com", "a.b.svc.example.com", "127.0.0.2", "::2", "other"} {
		if err := verify(ca, cert, name, at, x509.ExtKeyUsageServerAuth); err == nil {
			t.Errorf("Verify(%q) = nil, want an error", name)
		}
	}
	if err := verify(ca, cert, "localhost", at, x509.ExtKeyUsageClientAuth); err == nil {
		t.Errorf("server certificate verified for client auth")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("X509KeyPair: %v", err)
	}
}

func TestIssueServerRejects(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "ca")
	for _, names := range [][]string{
		nil, {""}, {"a..b"}, {"-a.b"}, {"a b"}, {"a.b."}, {"fe80::1%eth0"}, {strings.Repeat("a", 64) + ".com"},
	} {
		if _, _, err := ca.IssueServer(names, time.Hour, t0); err == nil {
			t.Errorf("IssueServer(%q) succeeded, want an error", names)
		}
	}
	if _, _, err := ca.IssueServer([]string{"a"}, 0, t0); err == nil {
		t.Errorf("IssueServer with validity 0 succeeded")
	}
	if _, _, err := ca.IssueServer([]string{"a"}, time.Hour, t0.Add(400*24*time.Hour)); err == nil {
		t.Errorf("IssueServer by an expired CA succeeded")
	}
	if _, err := NewCA("", time.Hour, t0); err == nil {
		t.Errorf("NewCA with empty name succeeded")
	}
}

func TestIssueClient(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "moat internal ca")
	certPEM, keyPEM, err := ca.IssueClient("replication", 24*time.Hour, t0)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	cert := mustParse(t, certPEM)
	if cert.Subject.CommonName != "replication" {
		t.Errorf("CN = %q, want replication", cert.Subject.CommonName)
	}
	if err := verify(ca, cert, "", t0, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("Verify client: %v", err)
	}
	if err := verify(ca, cert, "", t0, x509.ExtKeyUsageServerAuth); err == nil {
		t.Errorf("client certificate verified for server auth")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("X509KeyPair: %v", err)
	}
}

func TestWrongCA(t *testing.T) {
	t.Parallel()
	a, b := mustCA(t, "project a"), mustCA(t, "project b")
	certPEM, _, err := a.IssueServer([]string{"db.a.example"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	cert := mustParse(t, certPEM)
	if err := verify(b, cert, "db.a.example", t0, x509.ExtKeyUsageServerAuth); err == nil {
		t.Errorf("certificate from CA a verified against CA b")
	}
	// Same subject name, different key: still rejected.
	a2 := mustCA(t, "project a")
	if err := verify(a2, cert, "db.a.example", t0, x509.ExtKeyUsageServerAuth); err == nil {
		t.Errorf("certificate verified against another CA with the same name")
	}
}

func TestValidityWindow(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "ca") // valid t0-5m … t0+365d
	certPEM, _, err := ca.IssueServer([]string{"db"}, 30*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	cert := mustParse(t, certPEM)
	tests := []struct {
		at   time.Time
		want bool // verifies
	}{
		{t0.Add(-time.Minute), true}, // backdated for clock skew
		{t0.Add(-time.Hour), false},
		{t0.Add(29 * 24 * time.Hour), true},
		{t0.Add(30*24*time.Hour + time.Second), false},
	}
	for _, tt := range tests {
		err := verify(ca, cert, "db", tt.at, x509.ExtKeyUsageServerAuth)
		if got := err == nil; got != tt.want {
			t.Errorf("Verify at %s = %v, want ok=%v", tt.at, err, tt.want)
		}
	}
	// A certificate never outlives its CA.
	long, _, err := ca.IssueServer([]string{"db"}, 10*365*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustParse(t, long).NotAfter; !got.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %s, want clamped to the CA's %s", got, ca.Cert.NotAfter)
	}
}

func TestNeedsRenewal(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "ca")
	certPEM, _, err := ca.IssueServer([]string{"db"}, 30*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	const day = 24 * time.Hour
	tests := []struct {
		name   string
		pem    []byte
		now    time.Time
		before time.Duration
		want   bool
	}{
		{"fresh", certPEM, t0, 7 * day, false},
		{"just outside window", certPEM, t0.Add(23*day - time.Second), 7 * day, false},
		{"inside window", certPEM, t0.Add(23 * day), 7 * day, true},
		{"expired", certPEM, t0.Add(31 * day), 0, true},
		{"at expiry", certPEM, t0.Add(30 * day), 0, true},
		{"not yet valid", certPEM, t0.Add(-time.Hour), 7 * day, true},
		{"garbage", []byte("nope"), t0, 0, true},
		{"empty", nil, t0, 0, true},
	}
	for _, tt := range tests {
		if got := NeedsRenewal(tt.pem, tt.now, tt.before); got != tt.want {
			t.Errorf("%s: NeedsRenewal(now=%s, before=%s) = %v, want %v", tt.name, tt.now, tt.before, got, tt.want)
		}
	}
}

func TestParseCARoundTrip(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "ca")
	keyPEM, err := ca.MarshalKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := ParseCA(ca.CertPEM, keyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if string(ca2.CertPEM) != string(ca.CertPEM) {
		t.Errorf("ParseCA changed the certificate")
	}
	certPEM, _, err := ca2.IssueServer([]string{"db"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, mustParse(t, certPEM), "db", t0, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("certificate from the reloaded CA does not verify against the original: %v", err)
	}

	other := mustCA(t, "other")
	otherKey, _ := other.MarshalKeyPEM()
	leaf, leafKey, _ := ca.IssueServer([]string{"db"}, time.Hour, t0)
	tests := []struct {
		name          string
		certPEM, keyP []byte
	}{
		{"mismatched key", ca.CertPEM, otherKey},
		{"leaf is not a CA", leaf, leafKey},
		{"no cert", nil, keyPEM},
		{"no key", ca.CertPEM, nil},
		{"cert as key", ca.CertPEM, ca.CertPEM},
	}
	for _, tt := range tests {
		if _, err := ParseCA(tt.certPEM, tt.keyP); err == nil {
			t.Errorf("%s: ParseCA succeeded, want an error", tt.name)
		}
	}
}

func TestNameConstraints(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "project p1", PermitDNS("p1.db.moat.example"), PermitIP(netip.MustParsePrefix("10.20.0.0/16")))
	tests := []struct {
		names []string
		want  bool
	}{
		{[]string{"svc.p1.db.moat.example"}, true},
		{[]string{"svc.p1.db.moat.example", "10.20.3.4"}, true},
		{[]string{"svc.p2.db.moat.example"}, false},
		{[]string{"svc.p1.db.moat.example", "evil.example"}, false},
		{[]string{"svc.p1.db.moat.example", "10.21.0.1"}, false},
		{[]string{"svc.p1.db.moat.example", "::1"}, false},
	}
	for _, tt := range tests {
		certPEM, _, err := ca.IssueServer(tt.names, time.Hour, t0)
		if err != nil {
			t.Fatal(err)
		}
		err = verify(ca, mustParse(t, certPEM), "", t0, x509.ExtKeyUsageServerAuth)
		if got := err == nil; got != tt.want {
			t.Errorf("names %q: Verify = %v, want ok=%v", tt.names, err, tt.want)
		}
	}

	noIP := mustCA(t, "project p2", PermitDNS("p2.example"), PermitIP())
	certPEM, _, err := noIP.IssueServer([]string{"a.p2.example", "10.0.0.1"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(noIP, mustParse(t, certPEM), "", t0, x509.ExtKeyUsageServerAuth); err == nil {
		t.Errorf("CA with PermitIP() verified a certificate with an IP address")
	}
}

func TestTLSHandshake(t *testing.T) {
	t.Parallel()
	serverCA, clientCA := mustCA(t, "api"), mustCA(t, "internal")
	now := t0
	sCert, sKey, err := serverCA.IssueServer([]string{"localhost", "127.0.0.1"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cCert, cKey, err := clientCA.IssueClient("replica", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerTLSConfig(sCert, sKey, clientCA)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := ClientTLSConfig(serverCA, cCert, cKey)
	if err != nil {
		t.Fatal(err)
	}
	// Everything was issued at t0 (in 2030).
	srvCfg.Time = func() time.Time { return t0 }
	cliCfg.Time = srvCfg.Time
	cliCfg.ServerName = "localhost"

	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(c2, srvCfg)
		err := s.Handshake()
		if err == nil {
			if got := s.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "replica" {
				err = fmt.Errorf("server saw client %q, want replica", got)
			}
		}
		errc <- err
		io.Copy(io.Discard, s)
	}()
	c := tls.Client(c1, cliCfg)
	if err := c.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestCANeverPrintsKey(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, "ca")
	keyPEM, _ := ca.MarshalKeyPEM()
	raw, err := ca.key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d := fmt.Sprintf("%x", raw)
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("ca", "ca", ca)
	for _, out := range []string{fmt.Sprintf("%+v", ca), fmt.Sprintf("%#v", ca), fmt.Sprintf("%v", *ca), sb.String()} {
		if strings.Contains(out, d) || strings.Contains(out, string(keyPEM)) {
			t.Errorf("output reveals the CA key: %s", out)
		}
	}
}
