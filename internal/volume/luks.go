package volume

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/google/uuid"
)

// The container's fixed format (what luksFormat would make with
// --cipher aes-xts-plain64 --key-size 512 --hash sha256 --sector-size 4096,
// less the keyslot).
const (
	// KeySize is the volume key's length in bytes (two AES-256 keys).
	KeySize = 64
	// SectorSize is the encryption sector: one XTS data unit.
	SectorSize = 4096
	// Cipher is the dm-crypt cipher specification of the data segment.
	Cipher = "aes-xts-plain64"
	// Format names the container format.
	FormatName = "LUKS2"

	hdrSize    = 16 << 10 // one binary header plus its JSON area
	jsonSize   = hdrSize - 4096
	dataOffset = 16 << 20 // where the data segment starts (cryptsetup's default)
	// headerArea is what Destroy overwrites: both headers and the (empty)
	// keyslot area.
	headerArea      = dataOffset
	digestIter      = 1000 // cryptsetup's minimum; the key is random, no KDF cost needed
	digestSaltSize  = 32
	magicPrimary    = "LUKS\xba\xbe"
	magicSecondary  = "SKUL\xba\xbe"
	checksumAlg     = "sha256"
	minVolumeSize   = dataOffset + 1<<20
	binaryHdrCsumAt = 448
)

// ErrNotLUKS2 is returned for a file that does not hold a LUKS2 header
// written by this package's format (or a compatible one).
var ErrNotLUKS2 = errors.New("not a LUKS2 container")

// ErrWrongKey is returned when a key does not match the container's digest.
var ErrWrongKey = errors.New("key does not match the volume's digest")

// Key is a volume key. It prints and logs as REDACTED, whatever the verb.
type Key []byte

// LogValue keeps the key out of logs.
func (Key) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Format keeps the key out of every fmt verb (%v, %x, %#v, …).
func (Key) Format(f fmt.State, verb rune) { io.WriteString(f, "REDACTED") }

// MarshalText keeps the key out of JSON and other encodings.
func (Key) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// NewKey returns a fresh random volume key.
func NewKey() (Key, error) {
	key := make(Key, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("volume key: %w", err)
	}
	return key, nil
}

// Create makes a new container of size bytes at path (which must not exist)
// with a fresh key, and returns the key. The caller holds the key in memory
// only and hands it to the volume server.
func Create(path string, size int64) (Key, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := FormatFile(path, size, key); err != nil {
		clear(key)
		return nil, err
	}
	return key, nil
}

// FormatFile creates path as a sparse file of size bytes holding a LUKS2
// header for key (its digest, no keyslot). The data area is left sparse:
// it reads as noise once decrypted, until a file system is made on it.
func FormatFile(path string, size int64, key Key) (err error) {
	if size < minVolumeSize {
		return fmt.Errorf("format %s: size %d is below the minimum %d", path, size, minVolumeSize)
	}
	if size%SectorSize != 0 {
		return fmt.Errorf("format %s: size %d is not a multiple of %d", path, size, SectorSize)
	}
	hdr, err := buildHeader(key)
	if err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("format: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("format %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	return nil
}

// luksJSON is the LUKS2 metadata Moat writes and reads.
type luksJSON struct {
	Keyslots map[string]json.RawMessage `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
	Segments map[string]luksSegment     `json:"segments"`
	Digests  map[string]luksDigest      `json:"digests"`
	Config   luksConfig                 `json:"config"`
}

type luksSegment struct {
	Type       string `json:"type"`
	Offset     string `json:"offset"`
	Size       string `json:"size"`
	IVTweak    string `json:"iv_tweak"`
	Encryption string `json:"encryption"`
	SectorSize int    `json:"sector_size"`
}

type luksDigest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

type luksConfig struct {
	JSONSize     string `json:"json_size"`
	KeyslotsSize string `json:"keyslots_size"`
}

// buildHeader returns both LUKS2 headers (primary at 0, secondary at
// hdrSize), 2*hdrSize bytes.
func buildHeader(key []byte) ([]byte, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	salt := make([]byte, digestSaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	digest, err := keyDigest(key, salt, digestIter)
	if err != nil {
		return nil, err
	}
	meta := luksJSON{
		Keyslots: map[string]json.RawMessage{},
		Tokens:   map[string]json.RawMessage{},
		Segments: map[string]luksSegment{"0": {
			Type:       "crypt",
			Offset:     strconv.Itoa(dataOffset),
			Size:       "dynamic",
			IVTweak:    "0",
			Encryption: Cipher,
			SectorSize: SectorSize,
		}},
		Digests: map[string]luksDigest{"0": {
			Type:       "pbkdf2",
			Keyslots:   []string{},
			Segments:   []string{"0"},
			Hash:       "sha256",
			Iterations: digestIter,
			Salt:       base64.StdEncoding.EncodeToString(salt),
			Digest:     base64.StdEncoding.EncodeToString(digest),
		}},
		Config: luksConfig{
			JSONSize:     strconv.Itoa(jsonSize),
			KeyslotsSize: strconv.Itoa(dataOffset - 2*hdrSize),
		},
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(js) >= jsonSize {
		return nil, fmt.Errorf("metadata of %d bytes does not fit", len(js))
	}
	hdrSalt := make([]byte, 64)
	if _, err := rand.Read(hdrSalt); err != nil {
		return nil, err
	}
	id := uuid.New().String()
	out := make([]byte, 2*hdrSize)
	for i, magic := range []string{magicPrimary, magicSecondary} {
		h := out[i*hdrSize : (i+1)*hdrSize]
		copy(h[0:6], magic)
		binary.BigEndian.PutUint16(h[6:8], 2)
		binary.BigEndian.PutUint64(h[8:16], hdrSize)
		binary.BigEndian.PutUint64(h[16:24], 1) // seqid
		copy(h[72:104], checksumAlg)
		copy(h[104:168], hdrSalt)
		copy(h[168:208], id)
		binary.BigEndian.PutUint64(h[256:264], uint64(i*hdrSize))
		copy(h[4096:], js)
		sum := sha256.Sum256(h) // checksum field still zero
		copy(h[binaryHdrCsumAt:], sum[:])
	}
	return out, nil
}

// keyDigest is LUKS2's pbkdf2 digest of a volume key.
func keyDigest(key, salt []byte, iter int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, string(key), salt, iter, sha256.Size)
}

// Header is what a container's LUKS2 header says.
type Header struct {
	UUID       string
	Cipher     string
	SectorSize int
	DataOffset int64
	salt       []byte
	digest     []byte
	iterations int
}

// ReadHeader reads and checks the primary LUKS2 header of r: checksum,
// version and the one crypt segment this package serves.
func ReadHeader(r io.ReaderAt) (*Header, error) {
	h := make([]byte, hdrSize)
	if _, err := r.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("read luks2 header: %w", err)
	}
	if string(h[0:6]) != magicPrimary || binary.BigEndian.Uint16(h[6:8]) != 2 {
		return nil, ErrNotLUKS2
	}
	if binary.BigEndian.Uint64(h[8:16]) != hdrSize {
		return nil, fmt.Errorf("%w: header size %d, want %d", ErrNotLUKS2, binary.BigEndian.Uint64(h[8:16]), hdrSize)
	}
	var want [sha256.Size]byte
	copy(want[:], h[binaryHdrCsumAt:])
	clear(h[binaryHdrCsumAt : binaryHdrCsumAt+64])
	if sum := sha256.Sum256(h); sum != want {
		return nil, fmt.Errorf("%w: header checksum mismatch", ErrNotLUKS2)
	}
	js := h[4096:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	var meta luksJSON
	if err := json.Unmarshal(js, &meta); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrNotLUKS2, err)
	}
	seg, ok := meta.Segments["0"]
	if !ok || len(meta.Segments) != 1 || seg.Type != "crypt" {
		return nil, fmt.Errorf("%w: want one crypt segment", ErrNotLUKS2)
	}
	if seg.Encryption != Cipher || seg.SectorSize != SectorSize || seg.Size != "dynamic" || seg.IVTweak != "0" {
		return nil, fmt.Errorf("unsupported segment %s/%d/%s/%s", seg.Encryption, seg.SectorSize, seg.Size, seg.IVTweak)
	}
	off, err := strconv.ParseInt(seg.Offset, 10, 64)
	if err != nil || off <= 0 || off%SectorSize != 0 {
		return nil, fmt.Errorf("%w: segment offset %q", ErrNotLUKS2, seg.Offset)
	}
	out := &Header{UUID: string(bytes.TrimRight(h[168:208], "\x00")), Cipher: seg.Encryption, SectorSize: seg.SectorSize, DataOffset: off}
	for _, d := range meta.Digests {
		if d.Type != "pbkdf2" || d.Hash != "sha256" || !contains(d.Segments, "0") {
			continue
		}
		if out.salt, err = base64.StdEncoding.DecodeString(d.Salt); err != nil {
			return nil, fmt.Errorf("%w: digest salt: %v", ErrNotLUKS2, err)
		}
		if out.digest, err = base64.StdEncoding.DecodeString(d.Digest); err != nil {
			return nil, fmt.Errorf("%w: digest: %v", ErrNotLUKS2, err)
		}
		out.iterations = d.Iterations
		return out, nil
	}
	return nil, fmt.Errorf("%w: no sha256 pbkdf2 digest for the segment", ErrNotLUKS2)
}

// VerifyKey checks key against the header's digest.
func (h *Header) VerifyKey(key Key) error {
	if len(key) != KeySize {
		return fmt.Errorf("%w: %d bytes", ErrWrongKey, len(key))
	}
	d, err := keyDigest(key, h.salt, h.iterations)
	if err != nil {
		return fmt.Errorf("verify key: %w", err)
	}
	if subtle.ConstantTimeCompare(d, h.digest) != 1 {
		return ErrWrongKey
	}
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// ReadKey reads a volume key from r (the pipe the agent writes it to):
// exactly KeySize bytes, then end of input.
func ReadKey(r io.Reader) (Key, error) {
	key := make(Key, KeySize)
	if _, err := io.ReadFull(r, key); err != nil {
		clear(key)
		return nil, fmt.Errorf("read volume key: %w", err)
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n != 0 {
		clear(key)
		return nil, errors.New("read volume key: more than 64 bytes")
	}
	return key, nil
}
