// Package pki issues Moat's X.509 certificates: ECDSA P-256 certificate
// authorities (the API server's own CA, one CA per project for services'
// server certificates, the internal CA for node-to-node TLS), the server and
// client certificates they sign, and the renewal check.
//
// Imported by the control plane (server wiring, reconcilers) and by tests.
// It keeps keys in memory and in PEM; storing them encrypted is the caller's
// job (see package secret). It imports only the standard library.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"
)

// backdate is how far before now a certificate's validity starts, to
// tolerate clock skew between the issuer and the verifier.
const backdate = 5 * time.Minute

// CA is a certificate authority: its self-signed certificate and its key.
// It formats and logs without its key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// Option adjusts a new CA.
type Option func(*x509.Certificate)

// PermitDNS constrains the CA to names in the given DNS domains (and their
// subdomains), as a critical name constraint: a verifier rejects a
// certificate it signs for any other name, even if the CA key leaks.
func PermitDNS(domains ...string) Option {
	return func(c *x509.Certificate) {
		c.PermittedDNSDomains = append(c.PermittedDNSDomains, domains...)
		c.PermittedDNSDomainsCritical = true
	}
}

// PermitIP constrains the CA to IP addresses in the given prefixes. With
// PermitDNS but no PermitIP the CA may sign for any IP address; pass
// PermitIP() with no prefixes to forbid IP addresses entirely.
func PermitIP(prefixes ...netip.Prefix) Option {
	return func(c *x509.Certificate) {
		c.PermittedDNSDomainsCritical = true
		if len(prefixes) == 0 {
			// An empty permitted list means unconstrained, so exclude
			// every address of both families instead.
			c.ExcludedIPRanges = append(c.ExcludedIPRanges,
				&net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
				&net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)})
			return
		}
		for _, p := range prefixes {
			p = p.Masked()
			c.PermittedIPRanges = append(c.PermittedIPRanges, &net.IPNet{
				IP:   p.Addr().AsSlice(),
				Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
			})
		}
	}
}

// NewCA creates a CA with a new P-256 key and a self-signed certificate
// valid from now (less a few minutes for clock skew) for validity.
func NewCA(commonName string, validity time.Duration, now time.Time, opts ...Option) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("new ca: empty common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("new ca %q: validity %v is not positive", commonName, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca %q: generate key: %w", commonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Moat"}},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new ca %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca %q: parse: %w", commonName, err)
	}
	return &CA{Cert: cert, CertPEM: encodeCert(der), key: key}, nil
}

// ParseCA loads a CA from its certificate and its PKCS #8 private key in
// PEM, checking that the certificate is a CA certificate and that the key
// matches it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse ca: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("parse ca: certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse ca: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("parse ca: key does not match certificate %q", cert.Subject.CommonName)
	}
	return &CA{Cert: cert, CertPEM: encodeCert(cert.Raw), key: key}, nil
}

// MarshalKeyPEM returns the CA's private key as a PKCS #8 "PRIVATE KEY"
// PEM block. Seal it before storing it.
func (ca *CA) MarshalKeyPEM() ([]byte, error) { return marshalKey(ca.key) }

// Pool returns a certificate pool holding only this CA, for verifying
// certificates it issued (tls.Config RootCAs or ClientCAs).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServer issues a server certificate for names, each a DNS name
// (a leading "*." is a wildcard) or an IP address, with a new P-256 key.
// Names are lowercased; the first is also the subject common name. Its validity starts a few
// minutes before now and ends after validity or when the CA expires,
// whichever is sooner.
func (ca *CA) IssueServer(names []string, validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("issue server certificate: no names")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: strings.ToLower(names[0])},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip, err := netip.ParseAddr(n); err == nil {
			if ip.Zone() != "" {
				return nil, nil, fmt.Errorf("issue server certificate: address %q has a zone", n)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
			continue
		}
		if err := checkDNSName(n); err != nil {
			return nil, nil, fmt.Errorf("issue server certificate: %w", err)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, strings.ToLower(n))
	}
	certPEM, keyPEM, err = ca.issue(tmpl, validity, now)
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate for %q: %w", names[0], err)
	}
	return certPEM, keyPEM, nil
}

// IssueClient issues a client certificate whose subject common name is
// commonName (for PostgreSQL certificate authentication, the role name),
// with a new P-256 key, valid as IssueServer's are.
func (ca *CA) IssueClient(commonName string, validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("issue client certificate: empty common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err = ca.issue(tmpl, validity, now)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate for %q: %w", commonName, err)
	}
	return certPEM, keyPEM, nil
}

func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("validity %v is not positive", validity)
	}
	if !now.Before(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("ca %q expired at %s", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl.SerialNumber = randomSerial()
	tmpl.NotBefore = now.Add(-backdate).UTC()
	if tmpl.NotBefore.Before(ca.Cert.NotBefore) {
		tmpl.NotBefore = ca.Cert.NotBefore
	}
	tmpl.NotAfter = now.Add(validity).UTC()
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = marshalKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// NeedsRenewal reports whether the certificate in certPEM should be replaced
// at now: it expires within before, or is not yet valid (the clock moved
// back), or cannot be parsed.
func NeedsRenewal(certPEM []byte, now time.Time, before time.Duration) bool {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return true
	}
	return now.Before(cert.NotBefore) || !now.Add(before).Before(cert.NotAfter)
}

// ParseCert parses the first CERTIFICATE block in data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ServerTLSConfig returns a TLS 1.2+ server configuration presenting the
// certificate and key in certPEM and keyPEM. If clientCA is not nil the
// server requires client certificates issued by it.
func ServerTLSConfig(certPEM, keyPEM []byte, clientCA *CA) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCA != nil {
		cfg.ClientCAs = clientCA.Pool()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLSConfig returns a TLS 1.2+ client configuration that trusts only
// ca. If certPEM is not empty the client presents it with keyPEM.
func ClientTLSConfig(ca *CA, certPEM, keyPEM []byte) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool()}
	if len(certPEM) > 0 {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("client tls config: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// String describes the CA by subject and expiry.
func (ca *CA) String() string {
	return fmt.Sprintf("pki.CA(%q, expires %s)", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339))
}

// Format prints the CA as String does, for every verb, never its key.
func (ca *CA) Format(f fmt.State, verb rune) { fmt.Fprint(f, ca.String()) }

// LogValue logs the CA's subject and expiry, never its key.
func (ca *CA) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("subject", ca.Cert.Subject.CommonName),
		slog.Time("not_after", ca.Cert.NotAfter),
	)
}

func checkDNSName(n string) error {
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(n) > 253 || strings.HasSuffix(name, ".") {
		return fmt.Errorf("invalid DNS name %q", n)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid DNS name %q", n)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("invalid DNS name %q", n)
			}
		}
	}
	return nil
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f // positive and at most 20 octets encoded
	b[0] |= 0x40 // never shorter (and never zero)
	return new(big.Int).SetBytes(b)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func marshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("no PEM block in key")
	}
	var (
		k   crypto.PrivateKey
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q in key", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ECDSA", k)
	}
	return ek, nil
}
