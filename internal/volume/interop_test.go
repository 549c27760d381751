package volume

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/testenv"
)

// TestCryptsetupDecryptsEngine: an ext4 image written through Moat's
// engine is decrypted by cryptsetup (reencrypt --decrypt with a detached
// copy of the header) into an image e2fsck finds clean, holding the files
// that were written.
func TestCryptsetupDecryptsEngine(t *testing.T) {
	t.Parallel()
	cs := testenv.MustHaveCommand(t, "cryptsetup")
	mkfs := testenv.MustHaveCommand(t, "mkfs.ext4")
	fsck := testenv.MustHaveCommand(t, "e2fsck")
	debugfs := testenv.MustHaveCommand(t, "debugfs")
	dir := t.TempDir()

	// A plaintext ext4 image with known files, made without mounting.
	src := filepath.Join(dir, "src")
	files := map[string]string{
		"a.txt":         "first file\n",
		"big.bin":       strings.Repeat("moat-volume-interop ", 40000),
		"sub/third.txt": "third\n",
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "vol")
	key, err := Create(path, testSize)
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.img")
	run(t, mkfs, "-q", "-F", "-b", "4096", "-d", src, plain, "48M")

	// Write the image through the engine.
	c, err := OpenContainer(path, key)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The container holds none of the plaintext.
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("moat-volume-interop")) {
		t.Fatal("container holds plaintext")
	}

	// Decrypt with cryptsetup. LUKS2 decryption wants a detached header
	// whose data offset is 0: the test takes Moat's header, sets the
	// offset to 0 and decrypts the data area, copied out. Cryptsetup
	// reencrypts through a keyslot: that test-only copy gets one (the
	// volume's own header never has one). The copy is a plain file that
	// nothing has open, so offline reencryption is safe (--force-offline-reencrypt).
	hdr := filepath.Join(dir, "hdr")
	if err := os.WriteFile(hdr, detachedHeader(t, raw[:dataOffset]), 0o600); err != nil {
		t.Fatal(err)
	}
	dec := filepath.Join(dir, "dec.img")
	if err := os.WriteFile(dec, raw[dataOffset:dataOffset+len(img)], 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := writeTestKey(t, dir, key)
	pass := filepath.Join(dir, "test-only.pass")
	os.WriteFile(pass, []byte("test-only"), 0o600)
	run(t, cs, "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-size", "512", "--volume-key-file", keyFile, hdr, pass)
	run(t, cs, "reencrypt", "--decrypt", "--batch-mode", "--force-offline-reencrypt", "--header", hdr, "--key-file", pass, dec)

	decrypted, _ := os.ReadFile(dec)
	if !bytes.Equal(decrypted, img) {
		t.Error("cryptsetup's decryption differs from the image written")
	}
	run(t, fsck, "-fn", dec)
	for name, want := range files {
		got := run(t, debugfs, "-R", "cat /"+name, dec)
		if got != want {
			t.Errorf("decrypted %s = %d bytes, want %d", name, len(got), len(want))
		}
	}
}

// detachedHeader returns the header area raw with the data segment's
// offset set to 0 in both headers, checksums recomputed.
func detachedHeader(t *testing.T, raw []byte) []byte {
	t.Helper()
	out := bytes.Clone(raw)
	for _, at := range []int{0, hdrSize} {
		h := out[at : at+hdrSize]
		js := bytes.Replace(h[4096:], []byte(`"offset":"16777216"`), []byte(`"offset":"0"`), 1)
		if bytes.Equal(js, h[4096:]) {
			t.Fatal("detachedHeader: no data offset in the metadata")
		}
		clear(h[4096:])
		copy(h[4096:], js)
		clear(h[binaryHdrCsumAt : binaryHdrCsumAt+64])
		sum := sha256.Sum256(h)
		copy(h[binaryHdrCsumAt:], sum[:])
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
