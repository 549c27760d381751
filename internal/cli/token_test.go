package cli

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestTokenSources: the token comes from --token-file, MOAT_TOKEN or the
// login config without a word; --token works but warns that the token is
// in the process's arguments; an empty --token-file is an error naming it.
func TestTokenSources(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"items":[]}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	file, empty := filepath.Join(dir, "token"), filepath.Join(dir, "empty")
	os.WriteFile(file, []byte("moat_tok-file_secret\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	base := map[string]string{"MOAT_CONFIG": filepath.Join(dir, "none.json"), "MOAT_URL": srv.URL, "MOAT_CA": ca}
	withEnv := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			m[k] = v
		}
		return m
	}
	const warning = "--token puts the token in the process's arguments"
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantAuth string
		warn     bool
	}{
		{"token file", base, []string{"--token-file", file}, "Bearer moat_tok-file_secret", false},
		{"environment", withEnv("MOAT_TOKEN", "moat_tok-env_secret"), nil, "Bearer moat_tok-env_secret", false},
		{"token file wins over the environment", withEnv("MOAT_TOKEN", "moat_tok-env_secret"), []string{"--token-file", file}, "Bearer moat_tok-file_secret", false},
		{"--token", base, []string{"--token", "moat_tok-argv_secret"}, "Bearer moat_tok-argv_secret", true},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		code, _, stderr := runCLI(t, tc.env, append([]string{"region", "list"}, tc.args...)...)
		mu.Lock()
		auth := got
		mu.Unlock()
		if code != 0 || len(auth) == 0 || auth[0] != tc.wantAuth {
			t.Errorf("%s: moat region list = %d (stderr %q), sent %q, want 0 and %q", tc.name, code, stderr, auth, tc.wantAuth)
		}
		if strings.Contains(stderr, warning) != tc.warn || strings.Count(stderr, warning) > 1 {
			t.Errorf("%s: stderr %q, want the --token warning: %v (once)", tc.name, stderr, tc.warn)
		}
	}
	code, _, stderr := runCLI(t, base, "region", "list", "--token-file", empty)
	if code != 1 || !strings.Contains(stderr, "--token-file "+empty+" is empty") {
		t.Errorf("empty --token-file: %d, %q; want 1 naming the file", code, stderr)
	}
}
