package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPasswordFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "moat")
	path := filepath.Join(dir, passwordsFile)
	if err := savePassword(path, "svc-a", credential{User: "moatadmin", Password: "pw-a"}); err != nil {
		t.Fatal(err)
	}
	if err := savePassword(path, "svc-b", credential{User: "moatadmin", Password: `p"w:b\`}); err != nil {
		t.Fatal(err)
	}
	if err := savePassword(path, "svc-a", credential{User: "moatadmin", Password: "pw-a2"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := loadPasswords(path)
	want := passwordFile{Version: 1, Services: map[string]credential{
		"svc-a": {User: "moatadmin", Password: "pw-a2"},
		"svc-b": {User: "moatadmin", Password: `p"w:b\`},
	}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("loadPasswords = %+v, %v, want %+v", got, err, want)
	}
	// The format on disk is the documented one.
	var raw map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &raw); err != nil || raw["version"] != 1.0 || raw["services"] == nil {
		t.Errorf("password file = %s, want {\"version\":1,\"services\":{...}}", data)
	}
	// Atomic: nothing but the file and its lock is left in the directory.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{passwordsFile, passwordsFile + ".lock"}; !cmp.Equal(names, want) {
		t.Errorf("directory holds %q, want %q", names, want)
	}

	missing, err := loadPasswords(filepath.Join(dir, "none.json"))
	if err != nil || len(missing.Services) != 0 {
		t.Errorf("loadPasswords(missing) = %+v, %v, want empty", missing, err)
	}
	for _, bad := range []string{
		`{"version":1,"services":{},"extra":1}`,
		`{"version":1,"services":{"svc-a":{"user":"u","password":"p","note":"x"}}}`,
		`{"version":2,"services":{}}`,
		`{"services":{}}`,
		`{"version":1}{}`,
		`nope`,
	} {
		var pf passwordFile
		if err := parsePasswords([]byte(bad), &pf); err == nil {
			t.Errorf("parsePasswords(%s) = nil error, want refused", bad)
		}
	}

	// A file it cannot read is left as it is, not overwritten.
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte(`{"version":7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := savePassword(corrupt, "svc-c", credential{User: "u", Password: "p"}); err == nil {
		t.Errorf("savePassword over an unsupported file = nil error, want refused")
	}
	if data, _ := os.ReadFile(corrupt); string(data) != `{"version":7}` {
		t.Errorf("unsupported file rewritten to %s", data)
	}
}

// TestPasswordFileConcurrent: saves racing each other all land.
func TestPasswordFileConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), passwordsFile)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := savePassword(path, fmt.Sprintf("svc-%d", i), credential{User: "u", Password: "p"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	pf, err := loadPasswords(path)
	if err != nil || len(pf.Services) != 16 {
		t.Errorf("after 16 concurrent saves: %d entries, %v; want 16", len(pf.Services), err)
	}
}

func TestCredentialRedacted(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-password"
	c := credential{User: "moatadmin", Password: secret}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("saved", "cred", c)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("saved", "cred", c)
	fmt.Fprintf(&buf, "%v %s %+v %#v", c, c, c, c)
	if strings.Contains(buf.String(), secret) {
		t.Errorf("the password leaks into logs or formatting:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "REDACTED") {
		t.Errorf("output does not say REDACTED:\n%s", buf.String())
	}
}

func TestPasswordsPath(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"MOAT_CONFIG": "/etc/x/moat.json"}, "/etc/x/passwords.json"},
		{map[string]string{"XDG_CONFIG_HOME": "/x"}, "/x/moat/passwords.json"},
		{map[string]string{"HOME": "/home/u"}, "/home/u/.config/moat/passwords.json"},
	} {
		a := &app{getenv: func(k string) string { return tt.env[k] }}
		if got, err := a.passwordsPath(); err != nil || got != tt.want {
			t.Errorf("passwordsPath with %v = %q, %v, want %q", tt.env, got, err, tt.want)
		}
	}
}
