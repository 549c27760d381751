package backup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// patternReader yields n bytes in which each aligned 8-byte word is its
// own offset, so a reader can check any position without storing it.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	fillPattern(b, p.off)
	p.off += int64(len(b))
	return len(b), nil
}

// fillPattern writes the pattern from offset off into b, a word at a time
// where aligned (the race detector makes byte loops over 1 GiB slow).
func fillPattern(b []byte, off int64) {
	at := func(o int64) byte { return byte(uint64(o&^7) >> (8 * (o & 7))) }
	i := 0
	for ; i < len(b) && (off+int64(i))&7 != 0; i++ {
		b[i] = at(off + int64(i))
	}
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(off+int64(i)))
	}
	for ; i < len(b); i++ {
		b[i] = at(off + int64(i))
	}
}

// patternChecker checks that what is written to it is patternReader's output.
type patternChecker struct {
	off  int64
	want []byte
}

func (c *patternChecker) Write(b []byte) (int, error) {
	if cap(c.want) < len(b) {
		c.want = make([]byte, len(b))
	}
	want := c.want[:len(b)]
	fillPattern(want, c.off)
	if !bytes.Equal(b, want) {
		for i := range b {
			if b[i] != want[i] {
				return i, fmt.Errorf("byte %d = %#x, want %#x", c.off+int64(i), b[i], want[i])
			}
		}
	}
	c.off += int64(len(b))
	return len(b), nil
}

// TestStreamConstantMemory encrypts and decrypts 1 GiB through a pipe and
// checks that the heap stays bounded while it does.
func TestStreamConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GiB")
	}
	const size = 1 << 30
	pr, pw := io.Pipe()
	go func() {
		w, err := NewWriter(pw, &testKey(t).PublicKey, WriterOptions{})
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.CopyBuffer(w, &patternReader{n: size}, make([]byte, 1<<20)); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(w.Close())
	}()

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	r, err := NewReader(pr, testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &patternChecker{}
	n, err := io.CopyBuffer(c, r, make([]byte, 1<<20))
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("decrypt stream: %v", err)
	}
	if n != size {
		t.Fatalf("decrypted %d bytes, want %d", n, size)
	}
	// Both ends hold 2×GOMAXPROCS segments plus copy buffers: well under
	// 16 MiB. A leak proportional to the stream would be ~1 GiB.
	const bound = 16 << 20
	if grew := int64(peak.Load()) - int64(base.HeapInuse); grew > bound {
		t.Errorf("heap in use grew by %d bytes while streaming 1 GiB, want at most %d", grew, bound)
	}
	t.Logf("peak heap growth %d KiB", (int64(peak.Load())-int64(base.HeapInuse))>>10)
}

// TestPattern: the word-at-a-time pattern is the byte-at-a-time one, from
// any offset, and the checker finds a wrong byte.
func TestPattern(t *testing.T) {
	for off := int64(0); off < 20; off++ {
		for n := 0; n < 40; n++ {
			b := make([]byte, n)
			fillPattern(b, off)
			for i := range b {
				o := off + int64(i)
				var w [8]byte
				binary.LittleEndian.PutUint64(w[:], uint64(o&^7))
				if b[i] != w[o&7] {
					t.Fatalf("offset %d length %d: byte %d = %#x, want %#x", off, n, i, b[i], w[o&7])
				}
			}
		}
	}
	b := make([]byte, 100)
	fillPattern(b, 3)
	b[42] ^= 1
	c := &patternChecker{off: 3}
	if n, err := c.Write(b); err == nil || n != 42 {
		t.Errorf("checker on a wrong byte 42: %d, %v", n, err)
	}
}
