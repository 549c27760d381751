package backup

import (
	"bytes"
	crand "crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var testKeys = sync.OnceValues(func() (*rsa.PrivateKey, *rsa.PrivateKey) {
	load := func(name string) *rsa.PrivateKey {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			panic(err)
		}
		k, err := ParsePrivateKeyPEM(b)
		if err != nil {
			panic(err)
		}
		return k
	}
	return load("test-key.pem"), load("other-key.pem")
})

func testKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, _ := testKeys()
	return k
}

func otherKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	_, k := testKeys()
	return k
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// encrypt writes pt in chunks of chunk bytes (all at once if 0).
func encrypt(t testing.TB, pt []byte, opts WriterOptions, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &testKey(t).PublicKey, opts)
	if err != nil {
		t.Fatal(err)
	}
	writeChunks(t, w, pt, chunk)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeChunks(t testing.TB, w io.Writer, pt []byte, chunk int) {
	t.Helper()
	if chunk <= 0 {
		chunk = len(pt)
	}
	for p := pt; len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
}

// readAll reads r to the end, returning what it yielded even on error.
func readAll(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, 7000) // not a divisor of the segment size
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func decodeAll(src []byte, priv *rsa.PrivateKey) ([]byte, error) {
	r, err := Decode(bytes.NewReader(src), priv)
	if err != nil {
		return nil, err
	}
	return readAll(r)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	const S = SegmentSize
	sizes := []int{0, 1, 100, S - 1, S, S + 1, 2*S - 1, 2 * S, 2*S + 1, 3*S + 17, 4 * S, 4*S + 1, 8*S + 5}
	for _, size := range sizes {
		for _, compress := range []bool{false, true} {
			for _, conc := range []int{1, 2, 3} {
				name := fmt.Sprintf("size=%d/zstd=%v/conc=%d", size, compress, conc)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					pt := randBytes(uint64(size), size)
					if compress {
						pt = bytes.Repeat([]byte("moat "), size/5+1)[:size]
					}
					chunk := 0
					if conc == 2 {
						chunk = 4093
					}
					enc := encrypt(t, pt, WriterOptions{Compress: compress, Concurrency: conc}, chunk)
					if !compress {
						segs := max((size+S-1)/S, 1)
						h, _ := readMoat1Header(bytes.NewReader(enc))
						if want := len(h.raw) + size + segs*tagSize; len(enc) != want {
							t.Errorf("len(encrypted) = %d, want %d", len(enc), want)
						}
					}
					r, err := NewReader(bytes.NewReader(enc), testKey(t))
					if err != nil {
						t.Fatal(err)
					}
					got, err := readAll(r)
					if err != nil {
						t.Fatalf("read: %v", err)
					}
					if !bytes.Equal(got, pt) {
						t.Fatalf("round trip: got %d bytes, want %d (contents differ: %v)", len(got), len(pt), len(got) == len(pt))
					}
					got, err = decodeAll(enc, testKey(t))
					if err != nil || !bytes.Equal(got, pt) {
						t.Fatalf("Decode: %d bytes, %v; want %d bytes", len(got), err, len(pt))
					}
				})
			}
		}
	}
}

func TestInspect(t *testing.T) {
	t.Parallel()
	priv := testKey(t)
	fp, err := KeyFingerprint(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pt := randBytes(1, 2*SegmentSize+5)
	enc := encrypt(t, pt, WriterOptions{}, 0)
	h, _ := readMoat1Header(bytes.NewReader(enc))
	legacy := encryptPghoa1(t, pt)
	tests := []struct {
		name string
		in   []byte
		want Info
	}{
		{"moat1", enc, Info{
			Format: FormatMoat1, Key: fp, SegmentSize: SegmentSize, Segments: 3,
			HeaderSize: int64(len(h.raw)), PayloadSize: int64(len(pt)), FileSize: int64(len(enc)),
		}},
		{"moat1-empty", encrypt(t, nil, WriterOptions{}, 0), Info{
			Format: FormatMoat1, Key: fp, SegmentSize: SegmentSize, Segments: 1,
			HeaderSize: int64(len(h.raw)), PayloadSize: 0, FileSize: int64(len(h.raw) + tagSize),
		}},
		{"pghoa1", legacy, Info{
			Format: FormatPghoa1, HeaderSize: 8 + 384, PayloadSize: int64(len(pt)), FileSize: int64(len(legacy)),
		}},
	}
	for _, tt := range tests {
		got, err := Inspect(bytes.NewReader(tt.in))
		if err != nil {
			t.Fatalf("Inspect(%s): %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Inspect(%s) mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	if got, err := Inspect(bytes.NewReader(encrypt(t, pt, WriterOptions{Compress: true}, 0))); err != nil || !got.Compressed {
		t.Errorf("Inspect(compressed) = %+v, %v; want Compressed", got, err)
	}
	if _, err := Inspect(bytes.NewReader(enc[:len(h.raw)])); !errors.Is(err, ErrTruncated) {
		t.Errorf("Inspect(header only) = %v, want ErrTruncated", err)
	}
	if _, err := Inspect(bytes.NewReader([]byte("hello world"))); !errors.Is(err, ErrFormat) {
		t.Errorf("Inspect(hello world) = %v, want ErrFormat", err)
	}
}

func TestKeysPEM(t *testing.T) {
	t.Parallel()
	priv := testKey(t)
	b, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePrivateKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Errorf("ParsePrivateKeyPEM(MarshalPrivateKeyPEM(k)) != k")
	}
	pb, err := MarshalPublicKeyPEM(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pb)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Errorf("ParsePublicKeyPEM(MarshalPublicKeyPEM(k)) != k")
	}
	for _, bad := range []string{"", "junk", string(pb)} {
		if _, err := ParsePrivateKeyPEM([]byte(bad)); err == nil {
			t.Errorf("ParsePrivateKeyPEM(%.20q) succeeded, want error", bad)
		}
	}
	small, err := rsa.GenerateKey(crand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(io.Discard, &small.PublicKey, WriterOptions{}); err == nil {
		t.Errorf("NewWriter(1024-bit key) succeeded, want error")
	}
}

func TestGenerateKey(t *testing.T) {
	if testing.Short() {
		t.Skip("RSA-3072 generation is slow")
	}
	t.Parallel()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if got := k.N.BitLen(); got != KeyBits {
		t.Errorf("GenerateKey() has %d bits, want %d", got, KeyBits)
	}
}
