package postgres

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// confFile is the file, in the data directory, holding every setting Moat
// controls. postgresql.conf includes it at its end; Moat rewrites it whole.
const confFile = "moat.conf"

// includeLine is appended to postgresql.conf by Init. "include", not
// "include_if_exists": without moat.conf the server must not start.
const includeLine = "include '" + confFile + "'\t# Moat's settings; keep this line last\n"

// TLS files in TLSDir.
const (
	serverCertFile   = "server.crt"
	serverKeyFile    = "server.key"
	clientCAFile     = "client-ca.crt"
	upstreamCertFile = "replication.crt"
	upstreamKeyFile  = "replication.key"
	upstreamCAFile   = "primary-ca.crt"
)

// owned are the settings Moat writes itself; Config.Settings may not
// override them (a later line wins in postgresql.conf).
var owned = []string{
	"cluster_name", "listen_addresses", "port", "unix_socket_directories",
	"unix_socket_permissions", "ssl", "ssl_min_protocol_version", "ssl_cert_file",
	"ssl_key_file", "ssl_ca_file", "password_encryption", "wal_level",
	"max_wal_senders", "wal_keep_size", "hot_standby", "primary_conninfo",
	"hba_file", "ident_file", "data_directory", "config_file",
	"logging_collector", "log_destination",
	"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
	"tcp_user_timeout",
}

// TLS and session settings (design 0018).
const (
	// TLSCiphers are the TLS 1.2 suites offered: ECDHE key exchange and
	// AEAD encryption only (no CBC, no RSA key exchange). TLS 1.3 suites,
	// which ssl_ciphers does not govern, are all AEAD.
	TLSCiphers = "ECDHE+AESGCM:ECDHE+CHACHA20"
	// TLSCurve is the one ECDH group PostgreSQL 15 offers: ssl_ecdh_curve
	// names a single curve of OpenSSL's EC_KEY kind, so X25519 cannot be
	// offered (PostgreSQL 18's ssl_groups takes a list).
	TLSCurve = "prime256v1"
	// KeepaliveIdle, KeepaliveInterval and KeepaliveCount detect a
	// vanished client within idle + interval*count seconds (25 s), and
	// UserTimeout one that stops acknowledging data (30 s).
	KeepaliveIdle     = 10
	KeepaliveInterval = 5
	KeepaliveCount    = 3
	UserTimeout       = "30s"
	// IdleInTransactionTimeout ends a session idle in an open transaction
	// that long: the most locks and snapshots a stalled client can hold.
	// A tenant may change it for its own sessions, or for the service
	// (Config.Settings: its value replaces this one).
	IdleInTransactionTimeout = "10min"
	// WALRetrieveRetry is how long a replica waits before it tries its
	// upstream again (wal_retrieve_retry_interval).
	WALRetrieveRetry = "200ms"
)

var settingRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$`)

func checkSettings(s map[string]string) error {
	for k, v := range s {
		if !settingRE.MatchString(k) {
			return fmt.Errorf("setting name %q: use lowercase letters, digits and '_' (one '.' for a module's settings)", k)
		}
		if slices.Contains(owned, k) || strings.HasPrefix(k, "ssl") || strings.HasPrefix(k, "include") {
			return fmt.Errorf("setting %s is Moat's own and cannot be overridden", k)
		}
		if _, err := quoteConf(v); err != nil {
			return fmt.Errorf("setting %s: %w", k, err)
		}
	}
	return nil
}

// errLineBreak is returned for a value that would span lines.
var errLineBreak = errors.New("value contains a newline, carriage return or NUL")

// quoteConf quotes v as a postgresql.conf string: in single quotes, with
// quotes doubled and backslashes doubled (the configuration lexer treats a
// backslash as an escape). A value with a line break or NUL is refused:
// nothing a caller passes can end its line or add one.
func quoteConf(v string) (string, error) {
	if strings.ContainsAny(v, "\n\r\x00") {
		return "", errLineBreak
	}
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String(), nil
}

// quoteConninfo quotes v as a libpq connection-string value.
func quoteConninfo(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// conninfo renders key/value pairs as a libpq connection string.
func conninfo(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+quoteConninfo(kv[i+1]))
	}
	return strings.Join(parts, " ")
}

// upstreamConninfo is the replica's connection string to its primary:
// certificate authentication over TLS 1.2+, the primary's name verified.
func (in *Instance) upstreamConninfo() string {
	p := in.cfg.Primary
	app := in.cfg.Name
	if app == "" {
		app = "moat_replica"
	}
	return conninfo(
		"host", p.Host,
		"port", strconv.Itoa(p.Port),
		"user", p.User,
		"application_name", app,
		"sslmode", "verify-full",
		"sslcert", filepath.Join(in.cfg.TLSDir, upstreamCertFile),
		"sslkey", filepath.Join(in.cfg.TLSDir, upstreamKeyFile),
		"sslrootcert", filepath.Join(in.cfg.TLSDir, upstreamCAFile),
		"ssl_min_protocol_version", "TLSv1.2",
		"gssencmode", "disable",
		"connect_timeout", "5",
	)
}

// renderConf renders moat.conf.
func (in *Instance) renderConf() (string, error) {
	c := in.cfg
	var listen []string
	for _, a := range c.ListenAddresses {
		listen = append(listen, a.String())
	}
	caFile := ""
	if len(c.CAPEM) > 0 {
		caFile = filepath.Join(c.TLSDir, clientCAFile)
	}
	primary := ""
	if c.Primary != nil {
		primary = in.upstreamConninfo()
	}
	kv := [][2]string{
		{"cluster_name", c.Name},
		{"listen_addresses", strings.Join(listen, ",")},
		{"port", strconv.Itoa(c.Port)},
		{"unix_socket_directories", c.SocketDir},
		{"unix_socket_permissions", "0700"},
		{"ssl", "on"},
		{"ssl_min_protocol_version", "TLSv1.2"},
		{"ssl_ciphers", TLSCiphers},
		{"ssl_prefer_server_ciphers", "on"},
		{"ssl_ecdh_curve", TLSCurve},
		{"ssl_cert_file", filepath.Join(c.TLSDir, serverCertFile)},
		{"ssl_key_file", filepath.Join(c.TLSDir, serverKeyFile)},
		{"ssl_ca_file", caFile},
		{"password_encryption", "scram-sha-256"},
		{"tcp_keepalives_idle", strconv.Itoa(KeepaliveIdle)},
		{"tcp_keepalives_interval", strconv.Itoa(KeepaliveInterval)},
		{"tcp_keepalives_count", strconv.Itoa(KeepaliveCount)},
		{"tcp_user_timeout", UserTimeout},
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"wal_keep_size", "256MB"},
		{"hot_standby", "on"},
		{"primary_conninfo", primary},
		// A replica whose upstream went away (a switchover, a failover)
		// tries again after this, not PostgreSQL's 5 s: it follows a
		// promoted upstream's new timeline within a fraction of a second.
		{"wal_retrieve_retry_interval", WALRetrieveRetry},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
	}
	if _, ok := c.Settings["idle_in_transaction_session_timeout"]; !ok {
		kv = append(kv, [2]string{"idle_in_transaction_session_timeout", IdleInTransactionTimeout})
	}
	keys := make([]string, 0, len(c.Settings))
	for k := range c.Settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kv = append(kv, [2]string{k, c.Settings[k]})
	}
	return renderSettings(kv)
}

// renderSettings renders one "name = 'value'" line per setting.
func renderSettings(kv [][2]string) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by Moat and rewritten whole on every change: do not edit.\n")
	for _, s := range kv {
		if !settingRE.MatchString(s[0]) {
			return "", fmt.Errorf("setting name %q is invalid", s[0])
		}
		q, err := quoteConf(s[1])
		if err != nil {
			return "", fmt.Errorf("setting %s: %w", s[0], err)
		}
		fmt.Fprintf(&b, "%s = %s\n", s[0], q)
	}
	return b.String(), nil
}

// identRE is what may appear unquoted in pg_ident.conf as a system user.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// hostLine returns the ADDRESS field for a prefix, or false for a prefix
// that cannot be used (invalid or zoned).
func hostLine(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() || p.Addr().Zone() != "" {
		return netip.Prefix{}, false
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}
