package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// sslHandshake connects to in over TCP, sends PostgreSQL's SSLRequest and,
// once the server agrees, runs a TLS handshake with cfg.
func sslHandshake(t *testing.T, in *Instance, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Config().Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := make([]byte, 8)
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], 80877103) // SSLRequest
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		t.Fatal(err)
	}
	if answer[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, want 'S'", answer[0])
	}
	tc := tls.Client(c, cfg)
	err = tc.HandshakeContext(context.Background())
	return tc.ConnectionState(), err
}

// TestTLSSuites: the server offers TLS 1.2 with ECDHE and AEAD suites
// only, and TLS 1.3; a client offering only CBC suites, or only TLS 1.1,
// is refused.
func TestTLSSuites(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, pw := primary(t, ctx, "tls-suites", nil)
	f := certs(t)

	// A tenant's TCP session: keepalives and the idle-in-transaction
	// limit are in force.
	conn, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, pw, f.project, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for setting, want := range map[string]string{
		"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
		"tcp_user_timeout": "30000", "idle_in_transaction_session_timeout": "10min",
		"ssl_ciphers": TLSCiphers, "ssl_ecdh_curve": TLSCurve,
	} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}

	roots := x509.NewCertPool()
	roots.AddCert(f.project.Cert)
	base := func() *tls.Config { return &tls.Config{ServerName: "localhost", RootCAs: roots} }

	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	}
	for _, c := range []struct {
		name    string
		edit    func(*tls.Config)
		ok      bool
		version uint16
	}{
		{"TLS 1.2 CBC only", func(c *tls.Config) { c.MaxVersion, c.CipherSuites = tls.VersionTLS12, cbc }, false, 0},
		{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, false, 0},
		{"TLS 1.2 AES-GCM", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}, true, tls.VersionTLS12},
		{"TLS 1.2 ChaCha20", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
		}, true, tls.VersionTLS12},
		{"TLS 1.2 CBC offered first, AEAD after", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, append(append([]uint16{}, cbc...), tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
		}, true, tls.VersionTLS12},
		{"TLS 1.3", func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, true, tls.VersionTLS13},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.edit(cfg)
			st, err := sslHandshake(t, in, cfg)
			if !c.ok {
				if err == nil {
					t.Fatalf("handshake succeeded with %s, want it refused", tls.CipherSuiteName(st.CipherSuite))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if st.Version != c.version {
				t.Errorf("version %s, want %s", tls.VersionName(st.Version), tls.VersionName(c.version))
			}
			if st.CurveID != tls.CurveP256 {
				t.Errorf("key exchange group %v, want P-256 (ssl_ecdh_curve %s)", st.CurveID, TLSCurve)
			}
			for _, s := range tls.InsecureCipherSuites() {
				if s.ID == st.CipherSuite {
					t.Errorf("negotiated insecure suite %s", s.Name)
				}
			}
			for _, s := range cbc {
				if s == st.CipherSuite {
					t.Errorf("negotiated CBC suite %s", tls.CipherSuiteName(s))
				}
			}
		})
	}
}

// TestTenantTimeouts: a tenant's statement_timeout and
// idle_in_transaction_session_timeout are in force on the tenant's
// sessions (the latter replacing Moat's default), and not on Moat's own
// management connection, whose statements the caller's context bounds.
func TestTenantTimeouts(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, pw := primary(t, ctx, "tenant-timeouts", func(c *Config) {
		c.Settings = map[string]string{"statement_timeout": "50ms", "idle_in_transaction_session_timeout": "1h"}
	})
	f := certs(t)
	conn, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, pw, f.project, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var idle string
	if err := conn.QueryRow(ctx, "SELECT current_setting('idle_in_transaction_session_timeout')").Scan(&idle); err != nil || idle != "1h" {
		t.Errorf("tenant session: idle_in_transaction_session_timeout = %q, %v; want 1h", idle, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_sleep(0.3)"); err == nil || !strings.Contains(err.Error(), "statement timeout") {
		t.Errorf("tenant session: pg_sleep(0.3) under statement_timeout 50ms = %v, want canceled", err)
	}
	mgmt, err := in.connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer mgmt.Close(context.Background())
	if _, err := mgmt.Exec(ctx, "SELECT pg_sleep(0.3)"); err != nil {
		t.Errorf("management connection: pg_sleep(0.3) = %v, want no tenant timeout", err)
	}
}
