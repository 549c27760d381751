package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/backup"
)

// backupKeys writes the backup package's test key pair (and the other
// key's private half) into a temporary directory.
func backupKeys(t *testing.T) (dir, pub, priv, other string) {
	t.Helper()
	dir = t.TempDir()
	raw, err := os.ReadFile(filepath.Join("..", "backup", "testdata", "test-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := backup.ParsePrivateKeyPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := backup.MarshalPublicKeyPEM(&k.PublicKey)
	pub, priv = filepath.Join(dir, "pub.pem"), filepath.Join(dir, "priv.pem")
	os.WriteFile(pub, pubPEM, 0o644)
	os.WriteFile(priv, raw, 0o600)
	otherRaw, err := os.ReadFile(filepath.Join("..", "backup", "testdata", "other-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	other = filepath.Join(dir, "other.pem")
	os.WriteFile(other, otherRaw, 0o600)
	return dir, pub, priv, other
}

func TestBackupRoundTrip(t *testing.T) {
	t.Parallel()
	dir, pub, priv, _ := backupKeys(t)
	in := filepath.Join(dir, "in")
	plain := bytes.Repeat([]byte("0123456789abcdef"), 10000) // several segments
	os.WriteFile(in, plain, 0o600)
	for _, flags := range [][]string{{}, {"--compress"}, {"--format", "pghoa1"}} {
		enc, out := filepath.Join(dir, "enc"), filepath.Join(dir, "out")
		args := append(append([]string{"backup", "encrypt", "--key", pub}, flags...), in, enc)
		if code, _, stderr := runCLI(t, nil, args...); code != 0 {
			t.Fatalf("moat %q = %d: %s", args, code, stderr)
		}
		if code, _, stderr := runCLI(t, nil, "backup", "decrypt", "--key", priv, enc, out); code != 0 {
			t.Fatalf("moat backup decrypt (%v) = %d: %s", flags, code, stderr)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, plain) {
			t.Errorf("round trip %v: got %d bytes, want %d", flags, len(got), len(plain))
		}
		if code, stdout, _ := runCLI(t, nil, "backup", "decrypt", "--key", priv, enc, "-"); code != 0 || stdout != string(plain) {
			t.Errorf("decrypt to stdout %v = %d, %d bytes", flags, code, len(stdout))
		}
		os.Remove(out)
	}
}

func TestBackupDecryptErrors(t *testing.T) {
	t.Parallel()
	dir, pub, priv, other := backupKeys(t)
	in, enc := filepath.Join(dir, "in"), filepath.Join(dir, "enc")
	os.WriteFile(in, bytes.Repeat([]byte("x"), 200000), 0o600)
	if code, _, stderr := runCLI(t, nil, "backup", "encrypt", "--key", pub, in, enc); code != 0 {
		t.Fatalf("encrypt = %d: %s", code, stderr)
	}
	raw, _ := os.ReadFile(enc)
	tampered := filepath.Join(dir, "tampered")
	bad := bytes.Clone(raw)
	bad[len(bad)-70000] ^= 1 // in a middle segment: the first ones verify
	os.WriteFile(tampered, bad, 0o600)
	truncated := filepath.Join(dir, "truncated")
	os.WriteFile(truncated, raw[:len(raw)-40], 0o600)
	headerCut := filepath.Join(dir, "header-cut")
	os.WriteFile(headerCut, raw[:40], 0o600)
	notBackup := filepath.Join(dir, "plain")
	os.WriteFile(notBackup, []byte("hello, world"), 0o600)

	tests := []struct {
		key, in, wantErr, wantHint string
	}{
		{priv, tampered, "moat: error: decrypt: moat1 segment 1: backup: authentication failed\n", "modified, corrupted or cut short"},
		{priv, truncated, "modified or truncated: backup: authentication failed", "cut short"},
		{priv, headerCut, "backup: truncated", "incomplete"},
		{other, enc, "backup: wrong key", "moat backup inspect FILE"},
		{priv, notBackup, "backup: unknown or malformed format", "not a moat1 or pghoa1"},
		{pub, enc, "parse private key", "--key takes an RSA private key"},
	}
	for _, tt := range tests {
		out := filepath.Join(dir, "out")
		code, _, stderr := runCLI(t, nil, "backup", "decrypt", "--key", tt.key, tt.in, out)
		if code != 1 || !strings.Contains(stderr, tt.wantErr) || !strings.Contains(stderr, "moat: hint: ") || !strings.Contains(stderr, tt.wantHint) {
			t.Errorf("decrypt %s with %s = %d, stderr:\n%s\nwant exit 1, %q and a hint with %q", filepath.Base(tt.in), filepath.Base(tt.key), code, stderr, tt.wantErr, tt.wantHint)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 9 { // keys (3), in, enc, tampered, truncated, header-cut, plain: no out, no temporary file
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("decrypt %s left %v", filepath.Base(tt.in), names)
		}
	}
	// Usage errors.
	for _, args := range [][]string{
		{"backup", "encrypt", "--key", pub, "--format", "zip", in, enc},
		{"backup", "encrypt", "--key", pub, "--format", "pghoa1", "--compress", in, enc},
		{"backup", "decrypt", enc, "out"},
		{"backup", "inspect"},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 2 {
			t.Errorf("moat %q = %d (%s), want 2", args, code, stderr)
		}
	}
}

func TestBackupInspectGolden(t *testing.T) {
	t.Parallel()
	dir, pub, _, _ := backupKeys(t)
	in := filepath.Join(dir, "in")
	os.WriteFile(in, bytes.Repeat([]byte("0123456789abcdef"), 10000), 0o600)
	for _, format := range []string{"moat1", "pghoa1"} {
		enc := filepath.Join(dir, format)
		if code, _, stderr := runCLI(t, nil, "backup", "encrypt", "--key", pub, "--format", format, in, enc); code != 0 {
			t.Fatalf("encrypt = %d: %s", code, stderr)
		}
		for _, o := range []string{"table", "json"} {
			code, stdout, stderr := runCLI(t, nil, "backup", "inspect", "-o", o, enc)
			if code != 0 {
				t.Fatalf("inspect = %d: %s", code, stderr)
			}
			golden(t, filepath.Join("testdata", "backup", "inspect-"+format+"."+o), []byte(stdout))
		}
	}
}

func TestBackupHelpGolden(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"backup", "--help"},
		{"backup", "inspect", "--help"},
		{"backup", "decrypt", "--help"},
		{"backup", "encrypt", "--help"},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("moat %q = %d, stderr %q", args, code, stderr)
		}
		golden(t, filepath.Join("testdata", "help", strings.Join(args[:len(args)-1], "-")+".txt"), []byte(stdout))
	}
}
