package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func encryptPghoa1(t testing.TB, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewPghoa1Writer(&buf, &testKey(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeChunks(t, w, pt, 10000)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestPghoa1RoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, 31, 32, 33, 100000, pghoa1MemorySpool + 1} {
		pt := randBytes(uint64(size), size)
		enc := encryptPghoa1(t, pt)
		if size == 0 && len(enc) != 0 {
			t.Errorf("pghoa1 of empty plaintext is %d bytes, want 0", len(enc))
		}
		for _, seekable := range []bool{true, false} {
			name := fmt.Sprintf("size=%d/seekable=%v", size, seekable)
			var src io.Reader = bytes.NewReader(enc)
			if !seekable {
				src = onlyReader{src}
			}
			r, err := NewPghoa1Reader(src, testKey(t), Pghoa1ReaderOptions{TempDir: t.TempDir()})
			if err != nil {
				t.Fatalf("%s: NewPghoa1Reader: %v", name, err)
			}
			got, err := readAll(r)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s: read %d bytes, %v; want %d bytes", name, len(got), err, len(pt))
			}
			if size == 0 {
				continue
			}
			src = bytes.NewReader(enc)
			if !seekable {
				src = onlyReader{src}
			}
			dr, err := Decode(src, testKey(t))
			if err != nil {
				t.Fatalf("%s: Decode: %v", name, err)
			}
			got, err = readAll(dr)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s: Decode read %d bytes, %v; want %d bytes", name, len(got), err, len(pt))
			}
		}
	}
	if _, err := Decode(bytes.NewReader(nil), testKey(t)); !errors.Is(err, ErrTruncated) {
		t.Errorf("Decode(empty) = %v, want ErrTruncated", err)
	}
}

func TestTamperPghoa1(t *testing.T) {
	t.Parallel()
	priv := testKey(t)
	pt := randBytes(9, 3000)
	enc := encryptPghoa1(t, pt)
	H := 8 + 384
	tests := []struct {
		name string
		in   []byte
		want []error
	}{
		{"magic", flip(enc, 0), []error{ErrFormat}},
		{"length", flip(enc, 7), []error{ErrFormat, ErrTruncated, ErrWrongKey}},
		{"wrapped key", flip(enc, 100), []error{ErrWrongKey}},
		{"first body byte", flip(enc, H), []error{ErrAuth}},
		{"last body byte", flip(enc, len(enc)-33), []error{ErrAuth}},
		{"mac byte", flip(enc, len(enc)-1), []error{ErrAuth}},
		{"truncate in header", enc[:H-1], []error{ErrTruncated}},
		{"truncate to header", enc[:H], []error{ErrTruncated}},
		{"truncate in mac", enc[:len(enc)-1], []error{ErrAuth}},
		{"truncate in body", enc[:H+1000], []error{ErrAuth}},
		{"append", append(bytes.Clone(enc), 0), []error{ErrAuth}},
		{"other file body", append(bytes.Clone(enc[:H]), encryptPghoa1(t, pt)[H:]...), []error{ErrAuth}},
	}
	for _, tt := range tests {
		for _, seekable := range []bool{true, false} {
			var src io.Reader = bytes.NewReader(tt.in)
			if !seekable {
				src = onlyReader{src}
			}
			var got []byte
			r, err := NewPghoa1Reader(src, priv, Pghoa1ReaderOptions{})
			if err == nil {
				got, err = readAll(r)
			}
			check(t, fmt.Sprintf("%s (seekable=%v)", tt.name, seekable), got, err, pt, 0, tt.want)
		}
	}
	_, err := NewPghoa1Reader(bytes.NewReader(enc), otherKey(t), Pghoa1ReaderOptions{})
	check(t, "wrong key", nil, err, pt, 0, []error{ErrWrongKey})
}

// TestPghoa1SourceSwappedAfterVerify changes the file being read once its
// MAC has verified: a reader that read the file a second time to decrypt
// would release the new, unverified bytes. The plaintext must be the one
// verified.
func TestPghoa1SourceSwappedAfterVerify(t *testing.T) {
	for _, size := range []int{1000, pghoa1MemorySpool + 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			pt := randBytes(uint64(size)+7, size)
			enc := encryptPghoa1(t, pt)
			path := filepath.Join(t.TempDir(), "wal.pghoa1")
			if err := os.WriteFile(path, enc, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			swapped := false
			afterPghoa1Verify = func() {
				// Same length, every body byte flipped: decrypting it
				// would yield the flipped plaintext.
				evil := bytes.Clone(enc)
				for i := len(evil) - tagSize - 1; i > len(evil)-tagSize-size; i-- {
					evil[i] ^= 0xff
				}
				if err := os.WriteFile(path, evil, 0o600); err != nil {
					t.Error(err)
				}
				swapped = true
			}
			t.Cleanup(func() { afterPghoa1Verify = nil })
			for _, open := range []func() (io.Reader, error){
				func() (io.Reader, error) {
					return NewPghoa1Reader(f, testKey(t), Pghoa1ReaderOptions{TempDir: t.TempDir()})
				},
				func() (io.Reader, error) { return Decode(f, testKey(t)) },
			} {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, enc, 0o600); err != nil {
					t.Fatal(err)
				}
				swapped = false
				r, err := open()
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if !swapped {
					t.Fatal("the hook did not run")
				}
				got, err := readAll(r)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatalf("read %d bytes that are not the verified plaintext: bytes changed after verification were released", len(got))
				}
			}
		})
	}
}
