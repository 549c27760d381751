package backup

import (
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
	for i := range b {
		o := p.off + int64(i)
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], uint64(o&^7))
		b[i] = w[o&7]
	}
	p.off += int64(len(b))
	return len(b), nil
}

// patternChecker checks that what is written to it is patternReader's output.
type patternChecker struct{ off int64 }

func (c *patternChecker) Write(b []byte) (int, error) {
	for i := range b {
		o := c.off + int64(i)
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], uint64(o&^7))
		if b[i] != w[o&7] {
			return i, fmt.Errorf("byte %d = %#x, want %#x", o, b[i], w[o&7])
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
