//go:build linux

package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/backup"
)

func TestWALCommands(t *testing.T) {
	t.Parallel()
	dir, pub, priv, _ := backupKeys(t)
	pubPEM, _ := os.ReadFile(pub)
	store := filepath.Join(dir, "store")
	os.Mkdir(store, 0o700)
	privPEM, _ := os.ReadFile(priv)
	ak, _ := backup.AuthKey(privPEM)
	akFile := filepath.Join(dir, "auth.key")
	os.WriteFile(akFile, []byte(hex.EncodeToString(ak)+"\n"), 0o600)
	cfg := archive.Config{Version: 1, Store: archive.StoreConfig{Dir: store}, Region: "r1", Service: "svc-a", Timeline: 1, PublicKey: string(pubPEM), AuthKeyFile: akFile}
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
	// A WAL file planted with the public key alone (its record is not
	// authenticated by the service's key): refused, recovery aborted.
	planted := filepath.Join(dir, "000000010000000000000002")
	os.WriteFile(planted, bytes.Repeat([]byte("p"), 1000), 0o600)
	plantCfg := cfg
	plantCfg.AuthKeyFile = filepath.Join(dir, "forged.key")
	os.WriteFile(plantCfg.AuthKeyFile, []byte(strings.Repeat("ab", 32)), 0o600)
	plantPush := writeArchiveConfig(t, filepath.Join(dir, "plant.json"), plantCfg)
	if code, _, stderr := runCLI(t, nil, "wal-push", "--config", plantPush, planted); code != 0 {
		t.Fatalf("planting wal-push = %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "wal-fetch", "--config", fetchCfg, "000000010000000000000002", filepath.Join(dir, "x")); code != exitAbortRecovery || !strings.Contains(stderr, "not authenticated") {
		t.Errorf("wal-fetch of a planted file = %d, %s; want %d, not authenticated", code, stderr, exitAbortRecovery)
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
		{"wal-fetch", "--agent", filepath.Join(dir, "no.sock"), "000000010000000000000001", filepath.Join(dir, "x")},
		{"wal-fetch", "--agent", filepath.Join(dir, "no.sock"), "--config", fetchCfg, "000000010000000000000001", filepath.Join(dir, "x")},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != exitAbortRecovery || !strings.Contains(stderr, "moat: error: ") {
			t.Errorf("moat %q = %d, %s; want %d", args, code, stderr, exitAbortRecovery)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("a failed wal-fetch left its destination")
	}
}

// TestWALCommandsAgent: wal-push and wal-fetch through an agent's socket
// (archive.Server, as the agent serves it), which alone opens the store.
func TestWALCommandsAgent(t *testing.T) {
	t.Parallel()
	dir, pub, priv, _ := backupKeys(t)
	pubPEM, _ := os.ReadFile(pub)
	privPEM, _ := os.ReadFile(priv)
	ak, _ := backup.AuthKey(privPEM)
	k, _ := backup.ParsePrivateKeyPEM(privPEM)
	store := filepath.Join(dir, "store")
	os.Mkdir(store, 0o700)
	cfg := &archive.Config{Version: 1, Store: archive.StoreConfig{Dir: store}, Region: "r1", Service: "svc-a", Timeline: 1, PublicKey: string(pubPEM), AuthKey: ak}
	rcfg := *cfg
	rcfg.PrivateKey = k
	sock := filepath.Join(dir, "archive.sock")
	l, err := archive.Listen(sock, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &archive.Server{Archive: func() *archive.Config { return cfg }, Restore: func() *archive.Config { return &rcfg },
		PeerUID: os.Getuid(), Logger: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}

	wal := filepath.Join(dir, "000000010000000000000001")
	os.WriteFile(wal, bytes.Repeat([]byte("w"), 100000), 0o600)
	for range 2 {
		if code, _, stderr := runCLI(t, nil, "wal-push", "--agent", sock, wal); code != 0 {
			t.Fatalf("wal-push --agent = %d: %s", code, stderr)
		}
	}
	os.WriteFile(wal, bytes.Repeat([]byte("v"), 100000), 0o600)
	if code, _, stderr := runCLI(t, nil, "wal-push", "--agent", sock, wal); code != 1 || !strings.Contains(stderr, "different file") {
		t.Errorf("wal-push --agent of a different file = %d, %s; want 1", code, stderr)
	}
	dest := filepath.Join(dir, "RECOVERYXLOG")
	if code, _, stderr := runCLI(t, nil, "wal-fetch", "--agent", sock, "000000010000000000000001", dest); code != 0 {
		t.Fatalf("wal-fetch --agent = %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, bytes.Repeat([]byte("w"), 100000)) {
		t.Errorf("wal-fetch --agent wrote the wrong content")
	}
	if code, _, stderr := runCLI(t, nil, "wal-fetch", "--agent", sock, "00000002.history", dest); code != 1 || !strings.Contains(stderr, "not in the archive") {
		t.Errorf("wal-fetch --agent of a missing file = %d, %s; want 1", code, stderr)
	}
	// Another user than the node's (here: this process's, as the server
	// expects someone else): refused.
	other := &archive.Server{Archive: srv.Archive, Restore: srv.Restore, PeerUID: os.Getuid() + 1, Logger: srv.Logger}
	sock2 := filepath.Join(dir, "other.sock")
	l2, err := archive.Listen(sock2, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- other.Serve(l2) }()
	code, _, stderr := runCLI(t, nil, "wal-push", "--agent", sock2, wal)
	l2.Close()
	<-done2
	if code != 1 || !strings.Contains(stderr, "only the node's user") {
		t.Errorf("wal-push --agent from another user = %d, %s; want refused", code, stderr)
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
