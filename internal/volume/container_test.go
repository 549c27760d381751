package volume

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
)

func newTestContainer(t *testing.T) (*Container, string, Key) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vol")
	key, err := Create(path, testSize)
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenContainer(path, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path, key
}

func TestOpenContainerRefuses(t *testing.T) {
	t.Parallel()
	_, path, key := newTestContainer(t)
	if _, err := OpenContainer(path, key); !errors.Is(err, ErrLocked) {
		t.Errorf("second OpenContainer = %v, want ErrLocked", err)
	}
	other, _ := NewKey()
	if _, err := OpenContainer(path, other); !errors.Is(err, ErrLocked) && !errors.Is(err, ErrWrongKey) {
		t.Errorf("OpenContainer(other key) = %v, want an error", err)
	}
}

func TestOpenContainerWrongKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "vol")
	if _, err := Create(path, testSize); err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	if _, err := OpenContainer(path, other); !errors.Is(err, ErrWrongKey) {
		t.Errorf("OpenContainer(other key) = %v, want ErrWrongKey", err)
	}
}

// TestContainerIO: reads and writes at any offset and length, from
// several goroutines sharing sectors, match a plaintext model.
func TestContainerIO(t *testing.T) {
	t.Parallel()
	c, _, _ := newTestContainer(t)
	const span = 64 << 10
	model := make([]byte, span)
	// Start from what the data area decrypts to.
	if _, err := c.ReadAt(model, 0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		off := rng.IntN(span - 9000)
		n := 1 + rng.IntN(9000)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := c.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	// Writers interleaved inside the same sectors, each its own bytes.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * 100; i+100 <= span; i += 800 {
				p := bytes.Repeat([]byte{byte(w + 1)}, 100)
				if _, err := c.WriteAt(p, int64(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for i := w * 100; i+100 <= span; i += 800 {
			copy(model[i:i+100], bytes.Repeat([]byte{byte(w + 1)}, 100))
		}
	}
	wg.Wait()
	got := make([]byte, span)
	for off := 0; off < span; {
		n := min(1+rng.IntN(5000), span-off)
		if _, err := c.ReadAt(got[off:off+n], int64(off)); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !bytes.Equal(got, model) {
		t.Error("data read back differs from what was written")
	}
	// The end of the data area.
	end := make([]byte, 10)
	if n, err := c.ReadAt(end, c.Size()-5); n != 5 || err != io.EOF {
		t.Errorf("ReadAt(past the end) = %d, %v, want 5, EOF", n, err)
	}
	if _, err := c.WriteAt(end, c.Size()-5); err == nil {
		t.Error("WriteAt(past the end) succeeded")
	}
}

func TestStatUnmounted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "vol")
	if _, err := Create(path, testSize); err != nil {
		t.Fatal(err)
	}
	info, err := Stat(path, filepath.Join(dir, "mnt"))
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Format: "LUKS2", Cipher: Cipher, KeyBits: 512, SectorSize: 4096, Size: testSize - dataOffset}
	if info != want {
		t.Errorf("Stat = %+v, want %+v", info, want)
	}
}
