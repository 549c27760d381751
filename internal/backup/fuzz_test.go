package backup

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/originals")

type original struct {
	name      string
	plaintext []byte
	encrypt   func(testing.TB, []byte) []byte
}

// originals are the files FuzzDecode mutates. They live in
// testdata/originals so that a failing input saved by the fuzzer
// reproduces (file keys are random).
var originals = []original{
	{"moat1-empty", nil, moat1Plain},
	{"moat1-1", randBytes(1001, 1), moat1Plain},
	{"moat1-100", randBytes(1002, 100), moat1Plain},
	{"moat1-2seg", randBytes(1003, SegmentSize+10), moat1Plain},
	{"moat1-zstd", bytes.Repeat([]byte("compressible "), 100), func(t testing.TB, pt []byte) []byte {
		return encrypt(t, pt, WriterOptions{Compress: true}, 0)
	}},
	{"pghoa1-300", randBytes(2000, 300), encryptPghoa1},
}

func moat1Plain(t testing.TB, pt []byte) []byte { return encrypt(t, pt, WriterOptions{}, 0) }

func originalFile(t testing.TB, o original) []byte {
	t.Helper()
	path := filepath.Join("testdata", "originals", o.name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestOriginals -update)", err)
	}
	return b
}

// TestOriginals checks that the fuzz originals decrypt to their plaintext;
// with -update it makes new ones.
func TestOriginals(t *testing.T) {
	for _, o := range originals {
		if *update {
			if err := os.MkdirAll(filepath.Join("testdata", "originals"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", "originals", o.name), o.encrypt(t, o.plaintext), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := decodeAll(originalFile(t, o), testKey(t))
		if err != nil || !bytes.Equal(got, o.plaintext) {
			t.Errorf("Decode(%s) = %d bytes, %v; want its %d-byte plaintext", o.name, len(got), err, len(o.plaintext))
		}
	}
}

// FuzzDecode checks the decoder's security invariant: whatever the input,
// Decode never yields a byte that is not part of a plaintext that was really
// encrypted (a prefix of one of the originals), and returns a whole
// plaintext without error only for the exact file that encrypted it.
func FuzzDecode(f *testing.F) {
	files := make([][]byte, len(originals))
	for i, o := range originals {
		files[i] = originalFile(f, o)
		f.Add(files[i])
	}
	f.Add([]byte("moat1"))
	f.Add([]byte("pghoa1"))
	priv := testKey(f)

	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := decodeAll(in, priv)
		if err == nil {
			for i, o := range originals {
				if bytes.Equal(in, files[i]) {
					if !bytes.Equal(got, o.plaintext) {
						t.Fatalf("Decode(%s) = %d bytes differing from its plaintext", o.name, len(got))
					}
					return
				}
			}
			t.Fatalf("Decode accepted a modified file (%d bytes), yielding %d bytes", len(in), len(got))
		}
		if len(got) == 0 {
			return
		}
		for _, o := range originals {
			if bytes.HasPrefix(o.plaintext, got) {
				return
			}
		}
		t.Fatalf("Decode yielded %d bytes that are no original's plaintext prefix (error: %v)", len(got), err)
	})
}
