package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func mustKeyring(t *testing.T, primary []byte, older ...[]byte) *Keyring {
	t.Helper()
	k, err := NewKeyring(primary, older...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, testKey(1))
	pt := []byte("hunter2")
	ad := []byte("meta/ca_key")
	s1 := k.Seal(pt, ad)
	s2 := k.Seal(pt, ad)
	if bytes.Equal(s1, s2) {
		t.Errorf("Seal twice gave the same output; nonce is not random")
	}
	if bytes.Contains(s1, pt) {
		t.Errorf("sealed value contains the plaintext")
	}
	got, err := k.Open(s1, ad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open(Seal(%q)) = %q, %v; want %q, nil", pt, got, err, pt)
	}
	empty, err := k.Open(k.Seal(nil, nil), nil)
	if err != nil || len(empty) != 0 {
		t.Errorf("Open(Seal(nil)) = %q, %v; want empty, nil", empty, err)
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, testKey(1))
	other := mustKeyring(t, testKey(2))
	ad := []byte("ad")
	good := k.Seal([]byte("secret"), ad)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name   string
		sealed []byte
		ad     []byte
		k      *Keyring
	}{
		{"wrong ad", good, []byte("other"), k},
		{"nil ad", good, nil, k},
		{"other key", good, ad, other},
		{"version", flip(0), ad, k},
		{"key id", flip(1), ad, k},
		{"nonce", flip(headerSize), ad, k},
		{"ciphertext", flip(headerSize + nonceSize), ad, k},
		{"tag", flip(len(good) - 1), ad, k},
		{"truncated", good[:len(good)-1], ad, k},
		{"short", good[:headerSize+nonceSize+tagSize-1], ad, k},
		{"empty", nil, ad, k},
	}
	for _, tt := range tests {
		got, err := tt.k.Open(tt.sealed, tt.ad)
		if !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: Open = %q, %v; want nil, ErrOpen", tt.name, got, err)
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldK := mustKeyring(t, testKey(1))
	sealed := oldK.Seal([]byte("x"), nil)
	newK := mustKeyring(t, testKey(2), testKey(1))
	if got, err := newK.Open(sealed, nil); err != nil || string(got) != "x" {
		t.Errorf("rotated keyring Open(old) = %q, %v; want x, nil", got, err)
	}
	if newK.KeyID() == oldK.KeyID() {
		t.Errorf("different keys have the same ID %s", newK.KeyID())
	}
	if _, err := oldK.Open(newK.Seal([]byte("y"), nil), nil); !errors.Is(err, ErrOpen) {
		t.Errorf("old keyring opened a value sealed with the new key: %v", err)
	}
	if _, err := NewKeyring(make([]byte, 16)); err == nil {
		t.Errorf("NewKeyring(16-byte key) succeeded")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "master.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", perm)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if k1.KeyID() != k2.KeyID() {
		t.Errorf("reloaded key ID %s, want %s", k2.KeyID(), k1.KeyID())
	}
	if _, err := k2.Open(k1.Seal([]byte("x"), nil), nil); err != nil {
		t.Errorf("reloaded keyring cannot open: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the key (temp file left behind?)", len(entries))
	}
}

func TestLoadOrCreateKeyRace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "master.key")
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			errs[i] = err
			if err == nil {
				ids[i] = k.KeyID()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("start %d got key %s, start 0 got %s", i, ids[i], ids[0])
		}
	}
}

func TestLoadKeyRefusesOpenPermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "master.key")
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKey(path); !errors.Is(err, ErrKeyFilePermissions) {
			t.Errorf("mode %04o: LoadOrCreateKey err = %v, want ErrKeyFilePermissions", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestLoadKeyRejectsGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":     "",
		"noheader":  "AAAA\n",
		"badbase64": keyFileHeader + "!!!\n",
		"short":     keyFileHeader + "AAAA\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKey(path); err == nil {
			t.Errorf("%s: LoadOrCreateKey succeeded on a bad key file", name)
		}
	}
	if _, err := LoadOrCreateKey(filepath.Join(dir, "missing", "key")); err == nil {
		t.Errorf("LoadOrCreateKey in a missing directory succeeded")
	}
}
