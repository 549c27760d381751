package volume

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/xts"
)

// TestEngineMatchesXTS: each 4096-byte sector n is one XTS data unit whose
// tweak is the 512-byte sector number 8n, exactly what x/crypto/xts
// computes for sector number 8n; both the AES-NI and the one-block paths.
func TestEngineMatchesXTS(t *testing.T) {
	t.Parallel()
	t.Logf("implementations: %v", impls())
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
		for _, im := range impls() {
			got := make([]byte, len(plain))
			e.cryptWith(im, got, plain, first, true)
			if !bytes.Equal(got, want) {
				t.Errorf("Encrypt(sector %d, impl %d) differs from x/crypto/xts at sector number %d", first, im, first*8)
			}
			back := make([]byte, len(plain))
			e.cryptWith(im, back, got, first, false)
			if !bytes.Equal(back, plain) {
				t.Errorf("Decrypt(Encrypt(x), sector %d, impl %d) != x", first, im)
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

// impls returns the implementations this CPU runs.
func impls() []int {
	ims := []int{implGeneric}
	if useAESNI {
		ims = append(ims, implAESNI)
	}
	if useVAES {
		ims = append(ims, implVAES)
	}
	return ims
}

func BenchmarkEngine(b *testing.B) {
	key, _ := NewKey()
	e, _ := NewEngine(key)
	buf := make([]byte, 64<<10)
	for _, im := range impls() {
		b.Run(implNames[im], func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for i := 0; b.Loop(); i++ {
				e.cryptWith(im, buf, buf, uint64(i), true)
			}
		})
	}
}

// BenchmarkAESCTR is the reference: AES-256 through crypto/aes's batched
// AES-NI on the same buffer size (bench/volume prints the ratio).
func BenchmarkAESCTR(b *testing.B) {
	key, _ := NewKey()
	block, _ := aes.NewCipher(key[:32])
	buf := make([]byte, 64<<10)
	iv := make([]byte, 16)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		cipher.NewCTR(block, iv).XORKeyStream(buf, buf)
	}
}
