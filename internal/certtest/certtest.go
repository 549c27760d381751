// Package certtest gives tests a throwaway CA and certificates, in the way
// httptest gives them a server. Only tests import it.
package certtest

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/pki"
)

// CA returns a new CA valid for a day from now.
func CA(tb testing.TB) *pki.CA {
	tb.Helper()
	ca, err := pki.NewCA("certtest CA", 24*time.Hour, time.Now())
	if err != nil {
		tb.Fatalf("certtest: %v", err)
	}
	return ca
}

// Server issues a server certificate from ca for names (default: localhost,
// 127.0.0.1 and ::1), valid for an hour from now, and returns a TLS 1.2+
// server configuration presenting it.
func Server(tb testing.TB, ca *pki.CA, names ...string) *tls.Config {
	tb.Helper()
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	certPEM, keyPEM, err := ca.IssueServer(names, time.Hour, time.Now())
	if err != nil {
		tb.Fatalf("certtest: %v", err)
	}
	cfg, err := pki.ServerTLSConfig(certPEM, keyPEM, nil)
	if err != nil {
		tb.Fatalf("certtest: %v", err)
	}
	return cfg
}

// Client returns a TLS 1.2+ client configuration trusting only ca.
func Client(tb testing.TB, ca *pki.CA) *tls.Config {
	tb.Helper()
	cfg, err := pki.ClientTLSConfig(ca, nil, nil)
	if err != nil {
		tb.Fatalf("certtest: %v", err)
	}
	return cfg
}
