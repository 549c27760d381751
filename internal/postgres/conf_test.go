package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
)

// confString is the configuration lexer's quoted string (guc-file.l).
var confString = regexp.MustCompile(`^'([^'\\\n]|\\.|'')*'$`)

// unquoteConf undoes the quoting as the server does (GUC_scanstr).
func unquoteConf(q string) string {
	s := q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch d := s[i]; d {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				if d >= '0' && d <= '7' {
					panic("octal escape in " + q) // quoteConf never writes one
				}
				b.WriteByte(d)
			}
		case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func TestQuoteConf(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"on", "'on'"},
		{"it's", "'it''s'"},
		{`C:\x`, `'C:\\x'`},
		{`\'`, `'\\'''`},
		{"# not a comment", "'# not a comment'"},
	}
	for _, tt := range tests {
		got, err := quoteConf(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("quoteConf(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"a\nb", "a\rb", "a\x00b", "'\nssl = off"} {
		if got, err := quoteConf(bad); err == nil {
			t.Errorf("quoteConf(%q) = %q, want an error", bad, got)
		}
	}
}

// FuzzQuoteConf checks that a quoted value is one lexer string on one line
// that reads back as the value.
func FuzzQuoteConf(f *testing.F) {
	for _, s := range []string{"", "it's", `\`, `\'`, "''", "a\nb", "\x00", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		q, err := quoteConf(v)
		if err != nil {
			if !strings.ContainsAny(v, "\n\r\x00") {
				t.Fatalf("quoteConf(%q): %v", v, err)
			}
			return
		}
		if strings.ContainsAny(q, "\n\r\x00") || !confString.MatchString(q) {
			t.Fatalf("quoteConf(%q) = %q, not one quoted string", v, q)
		}
		if got := unquoteConf(q); got != v {
			t.Fatalf("quoteConf(%q) = %q, reads back as %q", v, q, got)
		}
		out, err := renderSettings([][2]string{{"a", v}, {"b", "x"}})
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(out, "\n"); lines != 3 {
			t.Fatalf("renderSettings with %q has %d lines:\n%s", v, lines, out)
		}
	})
}

func TestCheckSettings(t *testing.T) {
	for _, bad := range []map[string]string{
		{"ssl": "off"},
		{"ssl_min_protocol_version": "TLSv1"},
		{"listen_addresses": "*"},
		{"include": "/etc/passwd"},
		{"include_dir": "/tmp"},
		{"Bad": "x"},
		{"a b": "x"},
		{"work_mem": "1MB\nssl = off"},
	} {
		if err := checkSettings(bad); err == nil {
			t.Errorf("checkSettings(%q) = nil, want an error", bad)
		}
	}
	if err := checkSettings(map[string]string{"fsync": "off", "moat.test": "it's"}); err != nil {
		t.Errorf("checkSettings: %v", err)
	}
}

func TestQuoteConninfo(t *testing.T) {
	got := conninfo("host", "a b", "sslkey", `/x/it's\`)
	want := `host='a b' sslkey='/x/it\'s\\'`
	if got != want {
		t.Errorf("conninfo = %q, want %q", got, want)
	}
}

// TestSCRAMVerifier checks the verifier's format and that its keys are
// those of RFC 5802 (the login itself is checked against a real server).
func TestSCRAMVerifier(t *testing.T) {
	salt := []byte("0123456789abcdef")
	v, err := scramVerifier("pencil", salt)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^SCRAM-SHA-256\$4096:([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$`)
	m := re.FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("scramVerifier = %q, not a verifier", v)
	}
	if m[1] != base64.StdEncoding.EncodeToString(salt) {
		t.Errorf("salt %s, want %s", m[1], base64.StdEncoding.EncodeToString(salt))
	}
	salted, _ := pbkdf2.Key(sha256.New, "pencil", salt, 4096, 32)
	h := hmac.New(sha256.New, salted)
	h.Write([]byte("Client Key"))
	stored := sha256.Sum256(h.Sum(nil))
	if m[2] != base64.StdEncoding.EncodeToString(stored[:]) {
		t.Errorf("stored key %s is wrong", m[2])
	}
	for _, bad := range []string{"", "é", "a\x00", strings.Repeat("a", 1025)} {
		if _, err := scramVerifier(bad, nil); err == nil {
			t.Errorf("scramVerifier(%q) accepted it", bad)
		}
	}
}

// TestRenderConfTenantSettings: a tenant's idle_in_transaction_session_timeout
// replaces Moat's default (one line, the tenant's); without one, the default.
func TestRenderConfTenantSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		settings map[string]string
		want     string
	}{
		{nil, "idle_in_transaction_session_timeout = '" + IdleInTransactionTimeout + "'"},
		{map[string]string{"idle_in_transaction_session_timeout": "1h", "statement_timeout": "30s"}, "idle_in_transaction_session_timeout = '1h'"},
	} {
		in := &Instance{cfg: Config{Name: "n", Port: 5432, TLSDir: "/tls", SocketDir: "/run", Settings: tc.settings}}
		conf, err := in.renderConf()
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(conf, "idle_in_transaction_session_timeout ="); n != 1 || !strings.Contains(conf, tc.want+"\n") {
			t.Errorf("renderConf(%v) has %d idle_in_transaction_session_timeout lines, want one %q:\n%s", tc.settings, n, tc.want, conf)
		}
		for k, v := range tc.settings {
			if !strings.Contains(conf, k+" = '"+v+"'\n") {
				t.Errorf("renderConf(%v) lacks %s:\n%s", tc.settings, k, conf)
			}
		}
	}
}
