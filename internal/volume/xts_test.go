package volume

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/xts"
)

// TestEngineMatchesXTS: each 4096-byte sector n is one XTS data unit whose
// tweak is the 512-byte sector number 8n, exactly what x/crypto/xts
// computes for sector number 8n; both the AES-NI and the one-block paths.
func TestEngineMatchesXTS(t *testing.T) {
	t.Parallel()
	key, _ := NewKey()
	e, err := NewEngine(key)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	const sectors = 5
	plain := make([]byte, sectors*SectorSize)
	rand.Read(plain)
	for _, first := range []uint64{0, 1, 1 << 33} {
		want := make([]byte, len(plain))
		for i := range uint64(sectors) {
			ref.Encrypt(want[i*SectorSize:(i+1)*SectorSize], plain[i*SectorSize:(i+1)*SectorSize], (first+i)*8)
		}
		for _, aesni := range []bool{false, true} {
			if aesni && !useAESNI {
				continue
			}
			got := make([]byte, len(plain))
			cryptWith(e, aesni, got, plain, first, true)
			if !bytes.Equal(got, want) {
				t.Errorf("Encrypt(sector %d, aesni=%v) differs from x/crypto/xts at sector number %d", first, aesni, first*8)
			}
			back := make([]byte, len(plain))
			cryptWith(e, aesni, back, got, first, false)
			if !bytes.Equal(back, plain) {
				t.Errorf("Decrypt(Encrypt(x), sector %d, aesni=%v) != x", first, aesni)
			}
		}
	}
	// In place.
	buf := bytes.Clone(plain)
	e.Encrypt(buf, buf, 3)
	e.Decrypt(buf, buf, 3)
	if !bytes.Equal(buf, plain) {
		t.Error("in-place round trip differs")
	}
}

// cryptWith runs the engine on the AES-NI path or the one-block path.
func cryptWith(e *Engine, aesni bool, dst, src []byte, sector uint64, encrypt bool) {
	if aesni {
		e.crypt(dst, src, sector, encrypt)
		return
	}
	var tw [SectorSize]byte
	for off := 0; off < len(src); off += SectorSize {
		e.tweaks(&tw, (sector+uint64(off/SectorSize))*8)
		xtsGeneric(e.data, encrypt, dst[off:off+SectorSize], src[off:off+SectorSize], tw[:])
	}
}

func BenchmarkEngine(b *testing.B) {
	key, _ := NewKey()
	e, _ := NewEngine(key)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		e.Encrypt(buf, buf, uint64(i))
	}
}
