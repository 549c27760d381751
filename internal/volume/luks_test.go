package volume

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/testenv"
)

const testSize = 64 << 20

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "vol")
	key, err := Create(path, testSize)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatalf("ReadHeader = %v", err)
	}
	if h.Cipher != Cipher || h.SectorSize != SectorSize || h.DataOffset != dataOffset {
		t.Errorf("ReadHeader = %+v, want %s/%d/%d", h, Cipher, SectorSize, dataOffset)
	}
	if err := h.VerifyKey(key); err != nil {
		t.Errorf("VerifyKey(key) = %v", err)
	}
	other, _ := NewKey()
	if err := h.VerifyKey(other); !errors.Is(err, ErrWrongKey) {
		t.Errorf("VerifyKey(other key) = %v, want ErrWrongKey", err)
	}
	if fi, _ := f.Stat(); fi.Size() != testSize {
		t.Errorf("size = %d, want %d", fi.Size(), testSize)
	}
	assertNoKey(t, path, key)

	// A flipped bit in the metadata fails the checksum.
	raw, _ := os.ReadFile(path)
	raw[4096+10] ^= 1
	if _, err := ReadHeader(bytes.NewReader(raw)); !errors.Is(err, ErrNotLUKS2) {
		t.Errorf("ReadHeader(tampered) = %v, want ErrNotLUKS2", err)
	}
}

func TestFormatRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, _ := NewKey()
	for _, tc := range []struct {
		name string
		size int64
		key  []byte
	}{
		{"small", 1 << 20, key},
		{"unaligned", testSize + 512, key},
		{"short key", testSize, key[:32]},
	} {
		if err := FormatFile(filepath.Join(dir, tc.name), tc.size, tc.key); err == nil {
			t.Errorf("FormatFile(%s) = nil, want an error", tc.name)
		}
		if _, err := os.Stat(filepath.Join(dir, tc.name)); !os.IsNotExist(err) {
			t.Errorf("FormatFile(%s) left a file behind", tc.name)
		}
	}
}

func TestReadKey(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, KeySize)
	got, err := ReadKey(bytes.NewReader(key))
	if err != nil || !bytes.Equal(got, key) {
		t.Errorf("ReadKey(64 bytes) = %x, %v", got, err)
	}
	for _, in := range [][]byte{key[:63], append(key, 1)} {
		if _, err := ReadKey(bytes.NewReader(in)); err == nil {
			t.Errorf("ReadKey(%d bytes) = nil error", len(in))
		}
	}
}

// TestCryptsetupReadsHeader: Debian's cryptsetup reads every header Moat
// writes and accepts the key (only the key) for it.
func TestCryptsetupReadsHeader(t *testing.T) {
	t.Parallel()
	cs := testenv.MustHaveCommand(t, "cryptsetup")
	dir := t.TempDir()
	path := filepath.Join(dir, "vol")
	key, err := Create(path, testSize)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cs, "luksDump", path).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksDump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		"Version:       \t2",
		"cipher: aes-xts-plain64",
		"sector: 4096 [bytes]",
		"offset: 16777216 [bytes]",
		"0: pbkdf2",
		"Hash:       sha256",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("luksDump lacks %q:\n%s", want, dump)
		}
	}
	if ks := between(dump, "Keyslots:\n", "Tokens:"); ks != "" {
		t.Errorf("luksDump shows keyslots %q, want none", ks)
	}

	// The key size is not in a LUKS2 segment (only keyslots carry it):
	// cryptsetup accepts the key as a 512-bit key and no other.
	test := func(keyFile, bits string) error {
		out, err := exec.Command(cs, "open", "--test-passphrase", "--key-size", bits,
			"--volume-key-file", keyFile, path).CombinedOutput()
		if err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	}
	keyFile := writeTestKey(t, dir, key)
	if err := test(keyFile, "512"); err != nil {
		t.Errorf("cryptsetup open --test-passphrase (the key) = %v", err)
	}
	if err := test(keyFile, "256"); err == nil {
		t.Errorf("cryptsetup open --test-passphrase --key-size 256 accepted half the key")
	}
	other, _ := NewKey()
	if err := test(writeTestKey(t, t.TempDir(), other), "512"); err == nil {
		t.Errorf("cryptsetup open --test-passphrase accepted another key")
	}
}

// writeTestKey writes key to a file for cryptsetup: test-only (the product
// never writes a key anywhere).
func writeTestKey(t *testing.T, dir string, key []byte) string {
	t.Helper()
	p := filepath.Join(dir, "test-only.key")
	if err := os.WriteFile(p, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func between(s, from, to string) string {
	_, rest, _ := strings.Cut(s, from)
	mid, _, _ := strings.Cut(rest, to)
	return strings.TrimSpace(mid)
}

// assertNoKey fails t if the file at path holds the key, either half of
// it, or its hex or base64 forms.
func assertNoKey(t *testing.T, path string, key []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range keyForms(key) {
		if bytes.Contains(data, needle) {
			t.Errorf("%s contains the key (%d-byte form)", path, len(needle))
		}
	}
}

func keyForms(key []byte) [][]byte {
	var forms [][]byte
	for _, k := range [][]byte{key, key[:32], key[32:]} {
		forms = append(forms, k, []byte(hex.EncodeToString(k)), []byte(base64.StdEncoding.EncodeToString(k)))
	}
	return forms
}

// TestKeyRedacted: a key never prints or logs, in any form.
func TestKeyRedacted(t *testing.T) {
	t.Parallel()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("config", "key", key, "config", Config{Container: "c", Key: key})
	slog.New(slog.NewTextHandler(&logged, nil)).Info("text", "key", key)
	out := logged.String() + fmt.Sprintf("%v %s %x %X %q %#v %+v %d", key, key, key, key, key, key, Config{Key: key}, key)
	js, _ := json.Marshal(struct{ K Key }{key})
	out += string(js)
	if strings.Contains(out, strings.Trim(fmt.Sprint([]byte(key)), "[]")) {
		t.Fatalf("key printed as numbers: %s", out)
	}
	for _, needle := range keyForms(key) {
		if strings.Contains(out, string(needle)) {
			t.Fatalf("key printed (%d-byte form) in %s", len(needle), out)
		}
	}
	if !strings.Contains(out, "REDACTED") {
		t.Errorf("no REDACTED in %s", out)
	}
}
