package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// failWriter accepts limit bytes, then fails every write. It counts the
// writes it sees after closed is set.
type failWriter struct {
	limit  int
	n      int
	closed atomic.Bool
	late   atomic.Int32
}

var errDst = errors.New("dst is full")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.closed.Load() {
		f.late.Add(1)
	}
	if f.n+len(p) > f.limit {
		return 0, errDst
	}
	f.n += len(p)
	return len(p), nil
}

// TestWriterDstError checks that a failing destination surfaces from Write
// or Close, and that the writer does not touch it after Close returns (its
// background writes have all finished).
func TestWriterDstError(t *testing.T) {
	t.Parallel()
	pt := randBytes(7, 3<<20)
	for _, compress := range []bool{false, true} {
		for _, conc := range []int{1, 2, 4} {
			for _, limit := range []int{0, 1000, SegmentSize + 500, 1 << 20} {
				name := fmt.Sprintf("zstd=%v/conc=%d/limit=%d", compress, conc, limit)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					dst := &failWriter{limit: 1 << 30}
					w, err := NewWriter(dst, &testKey(t).PublicKey, WriterOptions{Compress: compress, Concurrency: conc})
					if err != nil {
						t.Fatal(err)
					}
					dst.limit = dst.n + limit // the header went through
					var werr error
					for p := pt; len(p) > 0 && werr == nil; {
						n := min(len(p), 40000)
						_, werr = w.Write(p[:n])
						p = p[n:]
					}
					cerr := w.Close()
					dst.closed.Store(true)
					if !errors.Is(werr, errDst) && !errors.Is(cerr, errDst) {
						t.Errorf("Write error %v, Close error %v; want one of them to wrap %v", werr, cerr, errDst)
					}
					if cerr == nil {
						t.Errorf("Close = nil after a failed write, want an error")
					}
					if _, err := w.Write([]byte("x")); err == nil {
						t.Errorf("Write after Close = nil error, want an error")
					}
					time.Sleep(10 * time.Millisecond)
					if n := dst.late.Load(); n > 0 {
						t.Errorf("%d writes to dst after Close returned", n)
					}
				})
			}
		}
	}
}

type failReader struct {
	r   io.Reader
	err error
}

func (f *failReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestWriterSourceError checks that io.Copy into a writer returns the
// source's error as it is (the compressing writer reads the source itself)
// and that Close then fails rather than finishing a truncated file.
func TestWriterSourceError(t *testing.T) {
	t.Parallel()
	errSrc := errors.New("pg_basebackup: exit status 1")
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("zstd=%v", compress), func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			w, err := NewWriter(&buf, &testKey(t).PublicKey, WriterOptions{Compress: compress, Concurrency: 2})
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(w, &failReader{r: bytes.NewReader(randBytes(3, 1<<20)), err: errSrc})
			if !errors.Is(err, errSrc) || strings.Contains(err.Error(), "zstd") {
				t.Errorf("io.Copy error = %v, want %v as it is", err, errSrc)
			}
			if compress {
				if err := w.Close(); err == nil {
					t.Errorf("Close after a source error = nil, want an error")
				}
			}
		})
	}
}

// TestWriterCloseTwice checks that a second Close is a no-op and that
// writing after Close fails.
func TestWriterCloseTwice(t *testing.T) {
	t.Parallel()
	for _, compress := range []bool{false, true} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, &testKey(t).PublicKey, WriterOptions{Compress: compress})
		if err != nil {
			t.Fatal(err)
		}
		writeChunks(t, w, randBytes(1, 5*SegmentSize+3), 0)
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		n := buf.Len()
		if err := w.Close(); err != nil {
			t.Errorf("zstd=%v: second Close = %v, want nil", compress, err)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("zstd=%v: Write after Close = nil error, want an error", compress)
		}
		if buf.Len() != n {
			t.Errorf("zstd=%v: output grew from %d to %d bytes after Close", compress, n, buf.Len())
		}
	}
}

// TestWriterCompressed checks that a stream compressed elsewhere (here two
// zstd frames from another encoder configuration) is stored as it is and
// read back decompressed.
func TestWriterCompressed(t *testing.T) {
	t.Parallel()
	pt := bytes.Repeat([]byte("pg_basebackup --compress=client-zstd "), 50000)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	half := len(pt) / 2
	z := enc.EncodeAll(pt[half:], enc.EncodeAll(pt[:half], nil))
	in := encrypt(t, z, WriterOptions{Compressed: true, Concurrency: 2}, 10000)
	h, err := readMoat1Header(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if h.flags&flagZstd == 0 {
		t.Errorf("header flags %#x: no zstd flag", h.flags)
	}
	segs := (len(z) + SegmentSize - 1) / SegmentSize
	if want := len(h.raw) + len(z) + segs*tagSize; len(in) != want {
		t.Errorf("len(encrypted) = %d, want %d (the compressed stream as it is)", len(in), want)
	}
	got, err := decodeAll(in, testKey(t))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Decode: %d bytes, %v; want %d bytes", len(got), err, len(pt))
	}
	if _, err := NewWriter(io.Discard, &testKey(t).PublicKey, WriterOptions{Compress: true, Compressed: true}); err == nil {
		t.Errorf("NewWriter(Compress and Compressed) = nil error, want an error")
	}
}
