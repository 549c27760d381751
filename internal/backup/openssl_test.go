package backup

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/moatdb/moat/internal/testenv"
)

// The interop tests check both formats against an independent
// implementation, the openssl command line: openssl decrypts and verifies
// what Moat writes, and produces files that Moat reads.

type openssl struct {
	t   *testing.T
	dir string
	n   int
}

func newOpenSSL(t *testing.T) *openssl {
	t.Helper()
	testenv.MustHaveCommand(t, "openssl")
	return &openssl{t: t, dir: t.TempDir()}
}

// file writes b to a fresh temporary file and returns its path.
func (o *openssl) file(b []byte) string {
	o.n++
	p := filepath.Join(o.dir, strconv.Itoa(o.n))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		o.t.Fatal(err)
	}
	return p
}

// run runs openssl with args and returns its standard output.
func (o *openssl) run(args ...string) []byte {
	o.t.Helper()
	cmd := exec.Command("openssl", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		o.t.Fatalf("openssl %v: %v: %s", args, err, stderr.Bytes())
	}
	return out
}

func (o *openssl) hmac(key, data []byte) []byte {
	return o.run("dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(key), "-binary", o.file(data))
}

func (o *openssl) sha256(data []byte) []byte {
	return o.run("dgst", "-sha256", "-binary", o.file(data))
}

func (o *openssl) ctr(bits string, decrypt bool, key, iv, data []byte) []byte {
	mode := "-e"
	if decrypt {
		mode = "-d"
	}
	return o.run("enc", mode, "-aes-"+bits+"-ctr", "-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(iv), "-in", o.file(data))
}

func (o *openssl) oaep(md string, decrypt bool, data []byte) []byte {
	opts := []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:" + md, "-pkeyopt", "rsa_mgf1_md:" + md}
	if decrypt {
		return o.run(append([]string{"pkeyutl", "-decrypt", "-inkey", "testdata/test-key.pem", "-in", o.file(data)}, opts...)...)
	}
	pub := o.run("pkey", "-in", "testdata/test-key.pem", "-pubout")
	return o.run(append([]string{"pkeyutl", "-encrypt", "-pubin", "-inkey", o.file(pub), "-in", o.file(data)}, opts...)...)
}

func segIV(nonce []byte, i int) []byte {
	iv := make([]byte, 16)
	copy(iv, nonce)
	binary.BigEndian.PutUint32(iv[8:], uint32(i))
	return iv
}

func tagInput(headerHash []byte, i int, final bool, ct []byte) []byte {
	b := binary.BigEndian.AppendUint64(bytes.Clone(headerHash), uint64(i))
	if final {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return append(b, ct...)
}

func TestOpenSSLReadsMoat1(t *testing.T) {
	t.Parallel()
	o := newOpenSSL(t)
	pt := randBytes(42, 2*SegmentSize+100)
	enc := encrypt(t, pt, WriterOptions{}, 0)
	h, err := readMoat1Header(bytes.NewReader(enc))
	if err != nil {
		t.Fatal(err)
	}

	// The fingerprint is SHA-256 of the PKIX DER public key.
	der := o.run("pkey", "-in", "testdata/test-key.pem", "-pubout", "-outform", "DER")
	if fp := o.sha256(der); !bytes.Equal(fp, h.fingerprint[:]) {
		t.Errorf("header fingerprint %x, openssl says %x", h.fingerprint[:], fp)
	}
	material := o.oaep("sha256", true, h.wrapped)
	if len(material) != fileKeySize {
		t.Fatalf("openssl unwrapped %d bytes, want %d", len(material), fileKeySize)
	}
	aesKey, macKey, nonce := material[:32], material[32:96], material[96:]
	if got := o.hmac(macKey, h.raw[:len(h.raw)-tagSize]); !bytes.Equal(got, h.mac) {
		t.Errorf("header MAC %x, openssl computes %x", h.mac, got)
	}
	hh := o.sha256(h.raw)
	body := enc[len(h.raw):]
	var got []byte
	for i := 0; len(body) > 0; i++ {
		n := min(len(body), SegmentSize+tagSize)
		ct, tag := body[:n-tagSize], body[n-tagSize:n]
		body = body[n:]
		final := len(body) == 0
		if mac := o.hmac(macKey, tagInput(hh, i, final, ct)); !bytes.Equal(mac, tag) {
			t.Errorf("segment %d: tag %x, openssl computes %x", i, tag, mac)
		}
		got = append(got, o.ctr("256", true, aesKey, segIV(nonce, i), ct)...)
	}
	if !bytes.Equal(got, pt) {
		t.Errorf("openssl decrypted %d bytes that differ from the %d-byte plaintext", len(got), len(pt))
	}
}

func TestMoat1ReadsOpenSSL(t *testing.T) {
	t.Parallel()
	o := newOpenSSL(t)
	pt := randBytes(43, SegmentSize+7)
	material := make([]byte, fileKeySize)
	rand.Read(material)
	aesKey, macKey, nonce := material[:32], material[32:96], material[96:]
	wrapped := o.oaep("sha256", false, material)
	der := o.run("pkey", "-in", "testdata/test-key.pem", "-pubout", "-outform", "DER")

	hdr := append([]byte("moat1"), 1, 0)
	hdr = append(hdr, o.sha256(der)...)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(wrapped)))
	hdr = append(hdr, wrapped...)
	hdr = append(hdr, o.hmac(macKey, hdr)...)
	hh := o.sha256(hdr)
	file := bytes.Clone(hdr)
	segs := [][]byte{pt[:SegmentSize], pt[SegmentSize:]}
	for i, seg := range segs {
		ct := o.ctr("256", false, aesKey, segIV(nonce, i), seg)
		file = append(file, ct...)
		file = append(file, o.hmac(macKey, tagInput(hh, i, i == len(segs)-1, ct))...)
	}
	got, err := decodeAll(file, testKey(t))
	if err != nil {
		t.Fatalf("Decode(openssl moat1 file): %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Errorf("Decode(openssl moat1 file) = %d bytes differing from the %d-byte plaintext", len(got), len(pt))
	}
}

func TestOpenSSLReadsPghoa1(t *testing.T) {
	t.Parallel()
	o := newOpenSSL(t)
	pt := randBytes(44, 100000)
	enc := encryptPghoa1(t, pt)
	n := int(binary.BigEndian.Uint16(enc[6:8]))
	material := o.oaep("sha1", true, enc[8:8+n])
	if len(material) != pghoa1KeySize {
		t.Fatalf("openssl unwrapped %d bytes, want %d", len(material), pghoa1KeySize)
	}
	ct, mac := enc[8+n:len(enc)-tagSize], enc[len(enc)-tagSize:]
	if got := o.hmac(material[32:], ct); !bytes.Equal(got, mac) {
		t.Errorf("pghoa1 MAC %x, openssl computes %x", mac, got)
	}
	if got := o.ctr("128", true, material[:16], material[16:32], ct); !bytes.Equal(got, pt) {
		t.Errorf("openssl decrypted %d bytes that differ from the %d-byte plaintext", len(got), len(pt))
	}
}

func TestPghoa1ReadsOpenSSL(t *testing.T) {
	t.Parallel()
	o := newOpenSSL(t)
	pt := randBytes(45, 100000)
	material := make([]byte, pghoa1KeySize)
	rand.Read(material)
	wrapped := o.oaep("sha1", false, material)
	ct := o.ctr("128", false, material[:16], material[16:32], pt)
	file := append([]byte("pghoa1"), 0, 0)
	binary.BigEndian.PutUint16(file[6:], uint16(len(wrapped)))
	file = append(file, wrapped...)
	file = append(file, ct...)
	file = append(file, o.hmac(material[32:], ct)...)
	got, err := decodeAll(file, testKey(t))
	if err != nil {
		t.Fatalf("Decode(openssl pghoa1 file): %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Errorf("Decode(openssl pghoa1 file) = %d bytes differing from the %d-byte plaintext", len(got), len(pt))
	}
}
