package volume

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// Engine is AES-256-XTS over whole 4096-byte sectors with dm-crypt's
// plain64 IVs for LUKS2: the tweak of 4096-byte sector n is the 512-byte
// sector number 8n, little-endian (cryptsetup does not set
// iv_large_sectors for LUKS2). The first half of the 64-byte key encrypts
// the data, the second the tweak.
//
// On amd64 the blocks of a sector go through the cipher sixteen at a time
// with VAES, else eight at a time with AES-NI (xts_amd64.s); elsewhere one
// at a time through crypto/aes.
// An Engine is safe for concurrent use.
type Engine struct {
	enc, dec   [15 * 16]byte // AES-256 round keys of the data key (AES-NI order)
	encY, decY [15 * 32]byte // the same, each twice (one per YMM lane)
	data       cipher.Block  // the data key through crypto/aes (the fallback)
	tweak      cipher.Block  // the tweak key
}

// NewEngine returns the engine for a 64-byte volume key. The engine keeps
// its own expanded copy; the caller may clear key afterwards.
func NewEngine(key Key) (*Engine, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("xts engine: key is %d bytes, want %d", len(key), KeySize)
	}
	e := &Engine{}
	var err error
	if e.data, err = aes.NewCipher(key[:32]); err != nil {
		return nil, fmt.Errorf("xts engine: %w", err)
	}
	if e.tweak, err = aes.NewCipher(key[32:]); err != nil {
		return nil, fmt.Errorf("xts engine: %w", err)
	}
	expandKey256(key[:32], &e.enc, &e.dec)
	for r := range 15 {
		copy(e.encY[32*r:], e.enc[16*r:16*r+16])
		copy(e.encY[32*r+16:], e.enc[16*r:16*r+16])
		copy(e.decY[32*r:], e.dec[16*r:16*r+16])
		copy(e.decY[32*r+16:], e.dec[16*r:16*r+16])
	}
	return e, nil
}

// clear wipes the engine's own copies of the key (crypto/aes keeps its
// schedules out of reach).
func (e *Engine) clear() {
	clear(e.enc[:])
	clear(e.dec[:])
	clear(e.encY[:])
	clear(e.decY[:])
}

// Encrypt encrypts src into dst (which may be src), len(src) a multiple of
// SectorSize; sector is the index of src's first 4096-byte sector in the
// data segment.
func (e *Engine) Encrypt(dst, src []byte, sector uint64) { e.crypt(dst, src, sector, true) }

// Decrypt is the inverse of Encrypt.
func (e *Engine) Decrypt(dst, src []byte, sector uint64) { e.crypt(dst, src, sector, false) }

const blocksPerSector = SectorSize / 16

// The implementations, fastest last.
const (
	implGeneric = iota
	implAESNI
	implVAES
)

// impl is the fastest implementation this CPU has.
var impl = func() int {
	switch {
	case useVAES:
		return implVAES
	case useAESNI:
		return implAESNI
	}
	return implGeneric
}()

// EnginePath names the implementation the engine uses on this CPU:
// "vaes" (sixteen blocks a pass), "aes-ni" (eight) or "generic" (one).
func EnginePath() string { return implNames[impl] }

var implNames = [...]string{implGeneric: "generic", implAESNI: "aes-ni", implVAES: "vaes"}

func (e *Engine) crypt(dst, src []byte, sector uint64, encrypt bool) {
	e.cryptWith(impl, dst, src, sector, encrypt)
}

func (e *Engine) cryptWith(impl int, dst, src []byte, sector uint64, encrypt bool) {
	if len(src)%SectorSize != 0 || len(dst) < len(src) {
		panic("volume: xts input is not whole sectors")
	}
	switch impl {
	case implGeneric:
		var tw [SectorSize]byte // the sector's 256 tweaks
		for off := 0; off < len(src); off += SectorSize {
			e.tweaks(tw[:], (sector+uint64(off/SectorSize))*(SectorSize/512))
			xtsGeneric(e.data, encrypt, dst[off:off+SectorSize], src[off:off+SectorSize], tw[:])
		}
		clear(tw[:])
	case implAESNI:
		// Only the first tweak of each sector is computed here; the
		// assembly doubles it in registers between the blocks.
		var t, scratch [128]byte
		for off := 0; off < len(src); off += SectorSize {
			e.tweaks(t[:16], (sector+uint64(off/SectorSize))*(SectorSize/512))
			if encrypt {
				xtsEncAESNI(&e.enc[0], &dst[off], &src[off], &t[0], &scratch[0], blocksPerSector)
			} else {
				xtsDecAESNI(&e.dec[0], &dst[off], &src[off], &t[0], &scratch[0], blocksPerSector)
			}
		}
		clear(scratch[:])
		clear(t[:])
	case implVAES:
		// The first sixteen tweaks of each sector are computed here; the
		// assembly derives the rest, sixteen blocks ahead.
		var tw [512]byte
		for off := 0; off < len(src); off += SectorSize {
			e.tweaks(tw[:256], (sector+uint64(off/SectorSize))*(SectorSize/512))
			if encrypt {
				xtsEncVAES(&e.encY[0], &dst[off], &src[off], &tw[0], &tw[256], blocksPerSector)
			} else {
				xtsDecVAES(&e.decY[0], &dst[off], &src[off], &tw[0], &tw[256], blocksPerSector)
			}
		}
		clear(tw[:])
	}
}

// tweaks fills tw with the first len(tw)/16 tweaks of a sector: T0 =
// E_K2(iv), then T(j+1) = T(j)·α in GF(2^128) (IEEE P1619).
func (e *Engine) tweaks(tw []byte, iv uint64) {
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], iv)
	e.tweak.Encrypt(t[:], t[:])
	lo := binary.LittleEndian.Uint64(t[:8])
	hi := binary.LittleEndian.Uint64(t[8:])
	for j := 0; j < len(tw)/16; j++ {
		binary.LittleEndian.PutUint64(tw[16*j:], lo)
		binary.LittleEndian.PutUint64(tw[16*j+8:], hi)
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ 0x87&-carry
	}
}

// xtsGeneric is the one-block-at-a-time path.
func xtsGeneric(b cipher.Block, encrypt bool, dst, src, tw []byte) {
	var x [16]byte
	for i := 0; i < len(src); i += 16 {
		subtle.XORBytes(x[:], src[i:i+16], tw[i:i+16])
		if encrypt {
			b.Encrypt(x[:], x[:])
		} else {
			b.Decrypt(x[:], x[:])
		}
		subtle.XORBytes(dst[i:i+16], x[:], tw[i:i+16])
	}
}

// sbox is AES's S-box, computed (FIPS-197 5.1.1): the multiplicative
// inverse in GF(2^8) followed by the affine map.
var sbox = func() (s [256]byte) {
	rotl := func(x byte, n uint) byte { return x<<n | x>>(8-n) }
	p, q := byte(1), byte(1)
	for {
		if p&0x80 != 0 {
			p ^= p<<1 ^ 0x1b
		} else {
			p ^= p << 1
		}
		q ^= q << 1
		q ^= q << 2
		q ^= q << 4
		if q&0x80 != 0 {
			q ^= 0x09
		}
		s[p] = q ^ rotl(q, 1) ^ rotl(q, 2) ^ rotl(q, 3) ^ rotl(q, 4) ^ 0x63
		if p == 1 {
			break
		}
	}
	s[0] = 0x63
	return s
}()

// expandKey256 computes AES-256's round keys (FIPS-197 5.2) for the
// cipher, and for the equivalent inverse cipher that AESDEC implements
// (the middle keys through InvMixColumns, in reverse order).
func expandKey256(key []byte, enc, dec *[15 * 16]byte) {
	copy(enc[:32], key)
	rcon := byte(1)
	for i := 8; i < 60; i++ {
		var t [4]byte
		copy(t[:], enc[4*(i-1):4*i])
		switch i % 8 {
		case 0:
			t = [4]byte{sbox[t[1]] ^ rcon, sbox[t[2]], sbox[t[3]], sbox[t[0]]}
			rcon = gfMul(rcon, 2)
		case 4:
			t = [4]byte{sbox[t[0]], sbox[t[1]], sbox[t[2]], sbox[t[3]]}
		}
		for j := range 4 {
			enc[4*i+j] = enc[4*(i-8)+j] ^ t[j]
		}
	}
	copy(dec[0:16], enc[14*16:])
	for r := 1; r < 14; r++ {
		k := enc[(14-r)*16 : (15-r)*16]
		d := dec[r*16 : (r+1)*16]
		for c := 0; c < 16; c += 4 {
			a0, a1, a2, a3 := k[c], k[c+1], k[c+2], k[c+3]
			d[c] = gfMul(a0, 14) ^ gfMul(a1, 11) ^ gfMul(a2, 13) ^ gfMul(a3, 9)
			d[c+1] = gfMul(a0, 9) ^ gfMul(a1, 14) ^ gfMul(a2, 11) ^ gfMul(a3, 13)
			d[c+2] = gfMul(a0, 13) ^ gfMul(a1, 9) ^ gfMul(a2, 14) ^ gfMul(a3, 11)
			d[c+3] = gfMul(a0, 11) ^ gfMul(a1, 13) ^ gfMul(a2, 9) ^ gfMul(a3, 14)
		}
	}
	copy(dec[14*16:], enc[0:16])
}

// gfMul multiplies in AES's GF(2^8).
func gfMul(a, b byte) byte {
	var p byte
	for b != 0 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1b
		}
		b >>= 1
	}
	return p
}
