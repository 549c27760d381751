//go:build linux

package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/archive"
)

func TestWALCommands(t *testing.T) {
	t.Parallel()
	dir, pub, priv, _ := backupKeys(t)
	pubPEM, _ := os.ReadFile(pub)
	store := filepath.Join(dir, "store")
	os.Mkdir(store, 0o700)
	cfg := archive.Config{Version: 1, Store: archive.StoreConfig{Dir: store}, Region: "r1", Service: "svc-a", Timeline: 1, PublicKey: string(pubPEM)}
	pushCfg := writeArchiveConfig(t, filepath.Join(dir, "push.json"), cfg)
	cfg.PrivateKeyFile = priv
	fetchCfg := writeArchiveConfig(t, filepath.Join(dir, "fetch.json"), cfg)

	wal := filepath.Join(dir, "000000010000000000000001")
	os.WriteFile(wal, bytes.Repeat([]byte("w"), 100000), 0o600)
	for range 2 { // the second time: already archived, identical
		if code, _, stderr := runCLI(t, nil, "wal-push", "--config", pushCfg, wal); code != 0 {
			t.Fatalf("wal-push = %d: %s", code, stderr)
		}
	}
	os.WriteFile(wal, bytes.Repeat([]byte("v"), 100000), 0o600)
	if code, _, stderr := runCLI(t, nil, "wal-push", "--config", pushCfg, wal); code != 1 || !strings.Contains(stderr, "different file") {
		t.Errorf("wal-push of a different file = %d, %s; want 1", code, stderr)
	}
	dest := filepath.Join(dir, "RECOVERYXLOG")
	if code, _, stderr := runCLI(t, nil, "wal-fetch", "--config", fetchCfg, "000000010000000000000001", dest); code != 0 {
		t.Fatalf("wal-fetch = %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, bytes.Repeat([]byte("w"), 100000)) {
		t.Errorf("wal-fetch wrote the wrong content")
	}
	if code, _, stderr := runCLI(t, nil, "wal-fetch", "--config", fetchCfg, "00000002.history", dest); code != 1 || !strings.Contains(stderr, "not in the archive") {
		t.Errorf("wal-fetch of a missing file = %d, %s; want 1", code, stderr)
	}
	// Anything else aborts recovery: exit status above 125.
	obj := filepath.Join(store, "r1", "svc-a", "00000001", "wal", "000000010000000000000001")
	raw, _ := os.ReadFile(obj)
	raw[len(raw)-1] ^= 1
	os.WriteFile(obj, raw, 0o600)
	for _, args := range [][]string{
		{"wal-fetch", "--config", fetchCfg, "000000010000000000000001", filepath.Join(dir, "x")},
		{"wal-fetch", "--config", pushCfg, "000000010000000000000001", filepath.Join(dir, "x")},
		{"wal-fetch", "--config", filepath.Join(dir, "missing.json"), "000000010000000000000001", filepath.Join(dir, "x")},
		{"wal-fetch", "000000010000000000000001", filepath.Join(dir, "x")},
		{"wal-fetch", "--config", fetchCfg, "000000010000000000000001"},
		{"wal-fetch", "--bogus", "--config", fetchCfg, "000000010000000000000001", filepath.Join(dir, "x")},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != exitAbortRecovery || !strings.Contains(stderr, "moat: error: ") {
			t.Errorf("moat %q = %d, %s; want %d", args, code, stderr, exitAbortRecovery)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("a failed wal-fetch left its destination")
	}
}

func writeArchiveConfig(t *testing.T, path string, cfg archive.Config) string {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWALHelpGolden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"wal-push", "--help"}, {"wal-fetch", "--help"}} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("moat %q = %d, stderr %q", args, code, stderr)
		}
		golden(t, filepath.Join("testdata", "help", strings.Join(args[:len(args)-1], "-")+".txt"), []byte(stdout))
	}
}
