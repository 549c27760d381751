package backup

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// The pghoa1 format of pghoard/rohmu (rohmu/encryptor.py):
//
//	magic        6 bytes  "pghoa1"
//	wrapped len  2 bytes  big-endian length L
//	wrapped      L bytes  RSA-OAEP-SHA1 (MGF1-SHA1, no label) of
//	                      AES-128 key (16) || initial CTR counter block (16) || HMAC key (32)
//	ciphertext            AES-128-CTR of the whole plaintext
//	MAC         32 bytes  HMAC-SHA256(HMAC key, ciphertext)
//
// An empty plaintext is an empty file. The header is not covered by the
// MAC (a changed header yields different keys, so the MAC fails), and
// truncation is only detected once the whole file has been read.
const (
	magicPghoa1       = "pghoa1"
	pghoa1KeySize     = 16 + 16 + 32
	pghoa1MemorySpool = 4 << 20
)

// NewPghoa1Writer returns a writer that encrypts to pub in the pghoa1
// format. It exists to produce files for pghoard-compatible tooling and
// for tests; new backups use [NewWriter], whose format authenticates in
// segments, binds the header, detects truncation as it reads and uses
// SHA-256 rather than SHA-1 in OAEP. Nothing is written until the first
// non-empty Write, so an empty plaintext is an empty file. Close writes the
// MAC; it does not close dst.
func NewPghoa1Writer(dst io.Writer, pub *rsa.PublicKey) (io.WriteCloser, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("new pghoa1 writer: %w", err)
	}
	return &pghoa1Writer{dst: dst, pub: pub}, nil
}

type pghoa1Writer struct {
	dst    io.Writer
	pub    *rsa.PublicKey
	stream cipher.Stream
	mac    hash.Hash
	buf    []byte
	err    error
}

func (w *pghoa1Writer) start() error {
	material := make([]byte, pghoa1KeySize)
	if _, err := rand.Read(material); err != nil {
		return fmt.Errorf("pghoa1 file key: %w", err)
	}
	wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, w.pub, material, nil)
	if err != nil {
		return fmt.Errorf("pghoa1 wrap file key: %w", err)
	}
	block, err := aes.NewCipher(material[:16])
	if err != nil {
		return fmt.Errorf("pghoa1 aes key: %w", err)
	}
	w.stream = cipher.NewCTR(block, material[16:32])
	w.mac = hmac.New(sha256.New, material[32:])
	clear(material)
	hdr := append([]byte(magicPghoa1), 0, 0)
	binary.BigEndian.PutUint16(hdr[len(magicPghoa1):], uint16(len(wrapped)))
	hdr = append(hdr, wrapped...)
	if _, err := w.dst.Write(hdr); err != nil {
		return fmt.Errorf("write pghoa1 header: %w", err)
	}
	return nil
}

func (w *pghoa1Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.stream == nil {
		if w.err = w.start(); w.err != nil {
			return 0, w.err
		}
	}
	if cap(w.buf) < len(p) {
		w.buf = make([]byte, min(len(p), 1<<20))
	}
	total := 0
	for len(p) > 0 {
		ct := w.buf[:min(len(p), cap(w.buf))]
		w.stream.XORKeyStream(ct, p[:len(ct)])
		w.mac.Write(ct)
		if _, err := w.dst.Write(ct); err != nil {
			w.err = fmt.Errorf("write pghoa1 body: %w", err)
			return total, w.err
		}
		total += len(ct)
		p = p[len(ct):]
	}
	return total, nil
}

func (w *pghoa1Writer) Close() error {
	if w.err != nil {
		if errors.Is(w.err, errClosed) {
			return nil
		}
		return w.err
	}
	w.err = errClosed
	if w.stream == nil {
		return nil
	}
	if _, err := w.dst.Write(w.mac.Sum(nil)); err != nil {
		w.err = fmt.Errorf("write pghoa1 mac: %w", err)
		return w.err
	}
	return nil
}

// Pghoa1ReaderOptions configures [NewPghoa1Reader]. The zero value is valid.
type Pghoa1ReaderOptions struct {
	// TempDir is where the body is spooled once it exceeds
	// 4 MiB; "" means os.TempDir().
	TempDir string
}

// NewPghoa1Reader returns a reader of the plaintext of the pghoa1 stream
// src, encrypted to priv's public key. Because the format has a single MAC
// at its end, NewPghoa1Reader reads and verifies the whole file before it
// returns; the returned reader releases only verified bytes.
//
// The body is read from src exactly once: the bytes the MAC covers are
// spooled (in memory up to 4 MiB, beyond that to an unlinked temporary
// file in opts.TempDir that only this process holds) and decrypted from
// the spool. A seekable source is never read a second time, so a file
// changed after verification cannot release unverified plaintext. The
// spool is closed when the reader returns EOF or an error.
//
// An empty src is the empty plaintext, as in pghoard. (Decode, which sees
// no format, refuses empty input.)
func NewPghoa1Reader(src io.Reader, priv *rsa.PrivateKey, opts Pghoa1ReaderOptions) (io.Reader, error) {
	var first [1]byte
	n, err := io.ReadFull(src, first[:])
	if n == 0 {
		if errors.Is(err, io.EOF) {
			return bytes.NewReader(nil), nil
		}
		return nil, fmt.Errorf("read pghoa1 header: %w", err)
	}
	return newPghoa1Reader(io.MultiReader(bytes.NewReader(first[:]), src), priv, opts)
}

// afterPghoa1Verify, when set (by tests), runs once the MAC has verified
// and before any plaintext is released: a test changes the source there.
var afterPghoa1Verify func()

// newPghoa1Reader reads src once, spooling its body.
func newPghoa1Reader(src io.Reader, priv *rsa.PrivateKey, opts Pghoa1ReaderOptions) (io.Reader, error) {
	if priv == nil {
		return nil, errors.New("pghoa1: no private key")
	}
	hdr := make([]byte, len(magicPghoa1)+2)
	if _, err := io.ReadFull(src, hdr); err != nil {
		return nil, readErr("pghoa1 header", err)
	}
	if string(hdr[:len(magicPghoa1)]) != magicPghoa1 {
		return nil, fmt.Errorf("pghoa1 header: bad magic: %w", ErrFormat)
	}
	n := int(binary.BigEndian.Uint16(hdr[len(magicPghoa1):]))
	if n == 0 || n > maxWrappedSize {
		return nil, fmt.Errorf("pghoa1 header: wrapped key length %d: %w", n, ErrFormat)
	}
	wrapped := make([]byte, n)
	if _, err := io.ReadFull(src, wrapped); err != nil {
		return nil, readErr("pghoa1 header", err)
	}
	material, err := rsa.DecryptOAEP(sha1.New(), nil, priv, wrapped, nil)
	if err != nil {
		return nil, fmt.Errorf("pghoa1 header: unwrap file key: %w", ErrWrongKey)
	}
	if len(material) != pghoa1KeySize {
		return nil, fmt.Errorf("pghoa1 header: file key is %d bytes: %w", len(material), ErrFormat)
	}
	defer clear(material)
	block, err := aes.NewCipher(material[:16])
	if err != nil {
		return nil, fmt.Errorf("pghoa1 aes key: %w", err)
	}
	th := &tailHasher{h: hmac.New(sha256.New, material[32:])}

	// One read of the body: MAC it and spool it; decrypt the spool.
	sp := &spool{dir: opts.TempDir}
	if _, err := io.Copy(io.MultiWriter(th, sp), src); err != nil {
		sp.Close()
		return nil, fmt.Errorf("read pghoa1 body: %w", err)
	}
	if th.n < tagSize {
		sp.Close()
		return nil, fmt.Errorf("pghoa1 body: no MAC: %w", ErrTruncated)
	}
	if !hmac.Equal(th.h.Sum(nil), th.tail[:]) {
		sp.Close()
		return nil, fmt.Errorf("pghoa1 body: modified or truncated: %w", ErrAuth)
	}
	if afterPghoa1Verify != nil {
		afterPghoa1Verify()
	}
	body, err := sp.reader()
	if err != nil {
		sp.Close()
		return nil, err
	}
	return &pghoa1Reader{
		src:    io.LimitReader(body, th.total),
		left:   th.total,
		stream: cipher.NewCTR(block, material[16:32]),
		closer: sp,
	}, nil
}

type pghoa1Reader struct {
	src    io.Reader
	left   int64
	stream cipher.Stream
	closer *spool
	err    error
}

func (r *pghoa1Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(p)
	r.stream.XORKeyStream(p[:n], p[:n])
	r.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if r.left != 0 {
			// The spool lost bytes: never released as complete.
			err = fmt.Errorf("pghoa1 body: spool shrank after verification: %w", ErrTruncated)
		}
	} else if err != nil {
		err = fmt.Errorf("read pghoa1 body: %w", err)
	}
	if err != nil {
		r.err = err
		r.closer.Close()
	}
	return n, err
}

// tailHasher hashes everything written to it but the last tagSize bytes,
// which it keeps in tail.
type tailHasher struct {
	h     hash.Hash
	tail  [tagSize]byte
	n     int   // bytes in tail
	total int64 // bytes hashed
}

func (t *tailHasher) Write(p []byte) (int, error) {
	if len(p) >= tagSize {
		t.h.Write(t.tail[:t.n])
		t.h.Write(p[:len(p)-tagSize])
		t.total += int64(t.n + len(p) - tagSize)
		copy(t.tail[:], p[len(p)-tagSize:])
		t.n = tagSize
		return len(p), nil
	}
	if excess := t.n + len(p) - tagSize; excess > 0 {
		t.h.Write(t.tail[:excess])
		t.total += int64(excess)
		copy(t.tail[:], t.tail[excess:t.n])
		t.n -= excess
	}
	copy(t.tail[t.n:], p)
	t.n += len(p)
	return len(p), nil
}

// spool keeps written bytes in memory up to pghoa1MemorySpool, then in an
// unlinked temporary file.
type spool struct {
	dir  string
	mem  bytes.Buffer
	file *os.File
}

func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && s.mem.Len()+len(p) <= pghoa1MemorySpool {
		return s.mem.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "moat-pghoa1-*")
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		// Unlink at once: the data lives only as long as the descriptor.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.file = f
		if _, err := s.file.Write(s.mem.Bytes()); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.mem = bytes.Buffer{}
	}
	n, err := s.file.Write(p)
	if err != nil {
		return n, fmt.Errorf("spool: %w", err)
	}
	return n, nil
}

func (s *spool) reader() (io.Reader, error) {
	if s.file == nil {
		return &s.mem, nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool rewind: %w", err)
	}
	return s.file, nil
}

// Close releases the spool; it is safe on a nil spool.
func (s *spool) Close() error {
	if s == nil || s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}
