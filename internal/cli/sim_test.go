//go:build linux

package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
)

// TestSimCommands runs moat sim host create/list/exec/delete for real, in
// a local cloud of its own (MOAT_LOCALCLOUD_PREFIX) and a data directory of
// its own, so it never touches the namespaces of a `moat up` on this
// machine. Needs root; skips without it, fails under CI=true.
func TestSimCommands(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "moat-t" + hex.EncodeToString(b[:]) + "-"
	cloud, err := localcloud.New(localcloud.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cloud.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		// The cloud's lock file, which outlives it by design.
		os.Remove(filepath.Join(localcloud.DefaultLockDir, "localcloud-"+prefix+"lock"))
	})
	dataDir := t.TempDir()
	env := map[string]string{"MOAT_LOCALCLOUD_PREFIX": prefix}
	moat := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
		// moat sim --data-dir DIR ...: before any "--".
		code := a.run(context.Background(), append([]string{args[0], "--data-dir", dataDir}, args[1:]...))
		return code, out.String(), errb.String()
	}

	code, stdout, stderr := moat("", "sim", "host", "create", "h1", "--internet", "-o", "json")
	if code != 0 {
		t.Fatalf("moat sim host create h1 = %d, stderr:\n%s", code, stderr)
	}
	var h simHost
	if err := json.Unmarshal([]byte(stdout), &h); err != nil {
		t.Fatalf("moat sim host create -o json: %v\n%s", err, stdout)
	}
	addr, err := netip.ParseAddr(h.Address)
	if err != nil || !localcloud.SimPool.Contains(addr) || h.Name != "h1" || h.Network != "internet" || !strings.HasPrefix(h.Namespace, prefix) {
		t.Fatalf("moat sim host create h1 = %+v, want h1 on the internet with an address from %v in a namespace %s*", h, localcloud.SimPool, prefix)
	}
	if _, err := os.Stat("/run/netns/" + h.Namespace); err != nil {
		t.Errorf("namespace of h1: %v", err)
	}
	// Again: the same host, unchanged.
	if code, stdout, stderr := moat("", "sim", "host", "create", "h1", "--internet"); code != 0 || !strings.Contains(stdout, h.Address) {
		t.Errorf("moat sim host create h1 again = %d, stdout %q, stderr %q; want the same host", code, stdout, stderr)
	}

	code, stdout, stderr = moat("", "sim", "host", "list")
	if code != 0 || !strings.Contains(stdout, "h1") || !strings.Contains(stdout, h.Address) {
		t.Errorf("moat sim host list = %d, stdout:\n%s\nstderr %q; want h1 and its address", code, stdout, stderr)
	}

	// exec: stdin in, stdout and stderr out, the exit code through, and
	// the command runs inside the host (it sees the host's address).
	code, stdout, stderr = moat("ping\n", "sim", "exec", "h1", "--", "sh", "-c", "cat; echo oops >&2; ip -4 -o addr show; exit 3")
	if code != 3 || !strings.HasPrefix(stdout, "ping\n") || !strings.Contains(stdout, " "+h.Address+"/") || stderr != "oops\n" {
		t.Errorf("moat sim exec h1 = %d, stdout:\n%s\nstderr %q; want 3, the input echoed and h1's address, oops", code, stdout, stderr)
	}
	if code, _, stderr := moat("", "sim", "exec", "nope", "--", "true"); code != 1 || !strings.Contains(stderr, "moat: error: exec on nope: host nope: not found\nmoat: hint: ") {
		t.Errorf("moat sim exec nope = %d, stderr %q; want 1, not found and a hint", code, stderr)
	}

	if code, _, stderr := moat("", "sim", "host", "delete", "h1"); code != 0 {
		t.Errorf("moat sim host delete h1 = %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat("/run/netns/" + h.Namespace); !os.IsNotExist(err) {
		t.Errorf("namespace of h1 after delete: %v, want gone", err)
	}
	if code, _, stderr := moat("", "sim", "host", "delete", "h1"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("moat sim host delete h1 again = %d, stderr %q; want 1, not found", code, stderr)
	}
	if code, stdout, _ := moat("", "sim", "host", "list", "-o", "json"); code != 0 || strings.TrimSpace(stdout) != `{
  "items": []
}` {
		t.Errorf("moat sim host list after delete = %d, %s; want no items", code, stdout)
	}
}
