//go:build linux

package cli

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
)

// parseConninfo reads a connection string back the way libpq's
// conninfo_parse does: keyword, optional spaces, =, optional spaces, then a
// value that is either unquoted (up to whitespace, \ escaping the next
// byte) or single-quoted (\ escaping the next byte).
func parseConninfo(t *testing.T, s string) [][2]string {
	t.Helper()
	var out [][2]string
	i := 0
	skip := func() {
		for i < len(s) && strings.ContainsRune(" \t\n\r\f\v", rune(s[i])) {
			i++
		}
	}
	for {
		skip()
		if i == len(s) {
			return out
		}
		j := strings.IndexByte(s[i:], '=')
		if j < 0 {
			t.Fatalf("conninfo %q: missing = after %q", s, s[i:])
		}
		key := strings.TrimSpace(s[i : i+j])
		i += j + 1
		skip()
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			for {
				if i == len(s) {
					t.Fatalf("conninfo %q: unterminated quoted string", s)
				}
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					v.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					break
				}
				v.WriteByte(c)
			}
		} else {
			for i < len(s) && !strings.ContainsRune(" \t\n\r\f\v", rune(s[i])) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					c = s[i]
					i++
				}
				v.WriteByte(c)
			}
		}
		out = append(out, [2]string{key, v.String()})
	}
}

func TestConninfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value, want string
		wantErr     bool
	}{
		{value: "svc-a1b2.proj-x.moat.test", want: "svc-a1b2.proj-x.moat.test"},
		{value: "198.18.0.7", want: "198.18.0.7"},
		{value: "2001:db8::7", want: "2001:db8::7"},
		{value: "/tmp/moat-ca-123.pem", want: "/tmp/moat-ca-123.pem"},
		{value: "5432", want: "5432"},
		{value: "", want: "''"},
		{value: "/tmp/my dir/ca.pem", want: "'/tmp/my dir/ca.pem'"},
		{value: "it's", want: `'it\'s'`},
		{value: `back\slash`, want: `'back\\slash'`},
		{value: `\' x`, want: `'\\\' x'`},
		{value: "a=b", want: "'a=b'"},
		{value: "tab\there", want: "'tab\there'"},
		{value: "new\nline", want: "'new\nline'"},
		{value: "x'; sslmode=disable", want: `'x\'; sslmode=disable'`},
		{value: "nul\x00", wantErr: true},
	}
	for _, tt := range tests {
		got, err := conninfoValue(tt.value)
		if (err != nil) != tt.wantErr {
			t.Errorf("conninfoValue(%q) error = %v, want error %v", tt.value, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got != tt.want {
			t.Errorf("conninfoValue(%q) = %q, want %q", tt.value, got, tt.want)
		}
		// Read back by libpq's rules, the value is itself and cannot add
		// or change a keyword.
		dsn, err := conninfo("host", tt.value, "sslmode", "verify-full")
		if err != nil {
			t.Fatalf("conninfo(host=%q): %v", tt.value, err)
		}
		want := [][2]string{{"host", tt.value}, {"sslmode", "verify-full"}}
		if parsed := parseConninfo(t, dsn); !cmp.Equal(parsed, want) {
			t.Errorf("conninfo(host=%q) = %q, which libpq reads as %q, want %q", tt.value, dsn, parsed, want)
		}
	}
	if _, err := conninfo("host"); err == nil {
		t.Errorf("conninfo(odd) = nil error")
	}
	if _, err := conninfo("host", "x\x00"); err == nil || !strings.HasPrefix(err.Error(), "host: ") {
		t.Errorf("conninfo(host=NUL) = %v, want an error naming host", err)
	}
}

func FuzzConninfo(f *testing.F) {
	for _, s := range []string{"", "a b", `it's`, `\`, "x' sslmode=disable"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		dsn, err := conninfo("sslrootcert", v, "sslmode", "verify-full")
		if err != nil {
			if !strings.Contains(v, "\x00") {
				t.Fatalf("conninfo(%q): %v", v, err)
			}
			return
		}
		want := [][2]string{{"sslrootcert", v}, {"sslmode", "verify-full"}}
		if got := parseConninfo(t, dsn); !cmp.Equal(got, want) {
			t.Fatalf("conninfo(%q) = %q, read back as %q", v, dsn, got)
		}
	})
}

func TestPassfileLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"plain", "*:*:*:*:plain\n"},
		{`a:b\c`, `*:*:*:*:a\:b\\c` + "\n"},
	} {
		if got := passfileLine(tt.in); got != tt.want {
			t.Errorf("passfileLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPsqlRefusals: the errors service psql gives before it runs anything.
func TestPsqlRefusals(t *testing.T) {
	t.Parallel()
	svc := apitype.Service{ID: "svc-a", State: "running", Connection: &apitype.Connection{
		Host: "svc-a.proj-a.moat.test", Address: "198.18.0.2", Port: 5432, Database: "defaultdb", User: "moatadmin", SSLMode: "verify-full"}}
	pending := apitype.Service{ID: "svc-p", State: "creating", Connection: &apitype.Connection{Host: "svc-p.proj-a.moat.test"}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/projects/proj-a/services/svc-a":
			json.NewEncoder(w).Encode(svc)
		case "/v1/projects/proj-a/services/svc-p":
			json.NewEncoder(w).Encode(pending)
		case "/v1/projects/proj-a/ca":
			json.NewEncoder(w).Encode(apitype.CA{ProjectID: "proj-a", PEM: "PEM"})
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
		// Never the real moat-* namespaces, should a refusal come late.
		"MOAT_LOCALCLOUD_PREFIX": "moat-tunused-"}
	run := func(euid int, args ...string) (int, string) {
		var out, errb strings.Builder
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, geteuid: func() int { return euid }}
		return a.run(t.Context(), args), errb.String()
	}
	for _, tt := range []struct {
		name    string
		euid    int
		args    []string
		wantErr string
	}{
		{"not root", 1000, []string{"service", "psql", "svc-a"},
			"moat: error: moat service psql needs root: the simulated cloud is network namespaces on this machine\nmoat: hint: run it as root (sudo), on the machine of moat up\n"},
		{"no password", 0, []string{"service", "psql", "svc-a", "--", "-c", "select 1"},
			"moat: error: no saved password for service svc-a, and PGPASSWORD is not set\nmoat: hint: reset it with: moat service password reset svc-a\n"},
		{"no address", 0, []string{"service", "psql", "svc-p"},
			"moat: error: service svc-p has no address yet (it is creating)\nmoat: hint: wait until it is running: moat service get svc-p\n"},
		{"sim not root", 1000, []string{"sim", "host", "list"},
			"moat: error: moat sim needs root: the simulated cloud is network namespaces on this machine\nmoat: hint: run it as root (sudo), on the machine of moat up\n"},
		{"create without network", 0, []string{"sim", "host", "create", "x", "--data-dir", dir},
			"moat: error: say which network the host is on: --internet or --vpc V, exactly one\nmoat: hint: see moat sim host create --help\n"},
		{"exec without command", 0, []string{"sim", "exec", "laptop", "--"},
			"moat: error: no command after --\nmoat: hint: see moat sim exec --help\n"},
	} {
		code, stderr := run(tt.euid, tt.args...)
		if code == 0 || stderr != tt.wantErr {
			t.Errorf("%s: moat %q = %d, stderr:\n%s\nwant failure, stderr:\n%s", tt.name, tt.args, code, stderr, tt.wantErr)
		}
	}
}
