package backup

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
)

// Format names a backup file format.
type Format string

// The formats this package reads.
const (
	FormatMoat1  Format = "moat1"
	FormatPghoa1 Format = "pghoa1"
)

// Decode detects the format of src by its magic and returns a reader of
// its plaintext, as [NewReader] or [NewPghoa1Reader] (with zero options)
// would. Empty input is an error wrapping [ErrTruncated]: it is a valid
// empty pghoa1 file, but also what any truncated file becomes, so a
// caller importing legacy files that may be empty must call
// NewPghoa1Reader itself.
func Decode(src io.Reader, priv *rsa.PrivateKey) (io.Reader, error) {
	f, src, err := sniff(src)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatMoat1:
		return NewReader(src, priv)
	default:
		return newPghoa1Reader(src, priv, Pghoa1ReaderOptions{})
	}
}

// sniff reads src's magic and returns its format and a reader of all of
// src. If src is an io.ReadSeeker, the returned reader is src itself,
// rewound.
func sniff(src io.Reader) (Format, io.Reader, error) {
	var magic [len(magicPghoa1)]byte
	n, err := io.ReadFull(src, magic[:])
	switch {
	case err == nil || errors.Is(err, io.ErrUnexpectedEOF):
	case errors.Is(err, io.EOF):
		return "", nil, fmt.Errorf("detect backup format: empty input: %w", ErrTruncated)
	default:
		return "", nil, fmt.Errorf("detect backup format: %w", err)
	}
	var f Format
	switch {
	case bytes.HasPrefix(magic[:n], []byte(magicMoat1)):
		f = FormatMoat1
	case n == len(magicPghoa1) && string(magic[:]) == magicPghoa1:
		f = FormatPghoa1
	case bytes.HasPrefix([]byte(magicMoat1), magic[:n]), bytes.HasPrefix([]byte(magicPghoa1), magic[:n]):
		return "", nil, fmt.Errorf("detect backup format: %w", ErrTruncated)
	default:
		return "", nil, fmt.Errorf("detect backup format: unknown magic %q: %w", magic[:n], ErrFormat)
	}
	if s, ok := src.(io.ReadSeeker); ok {
		if _, err := s.Seek(-int64(n), io.SeekCurrent); err == nil {
			return f, s, nil
		}
	}
	return f, io.MultiReader(bytes.NewReader(magic[:n]), src), nil
}

// Info describes a backup file without decrypting it.
type Info struct {
	Format Format
	// Key is the fingerprint of the public key the file is encrypted to
	// (moat1 only; pghoa1 does not record it).
	Key Fingerprint
	// Compressed reports zstd compression of the plaintext (moat1 only).
	Compressed bool
	// SegmentSize is the plaintext size of a full segment (moat1 only).
	SegmentSize int
	// Segments is the number of segments (moat1 only).
	Segments int64
	// HeaderSize, PayloadSize and FileSize are in bytes. PayloadSize is the
	// encrypted payload: the plaintext size, or the compressed size if
	// Compressed. FileSize = HeaderSize + PayloadSize + the MACs.
	HeaderSize  int64
	PayloadSize int64
	FileSize    int64
}

// Inspect reads all of r and describes it. It needs no key and therefore
// verifies nothing but structure: a file it describes may still fail to
// decrypt.
func Inspect(r io.Reader) (Info, error) {
	f, r, err := sniff(r)
	if err != nil {
		return Info{}, fmt.Errorf("inspect: %w", err)
	}
	if f == FormatPghoa1 {
		hdr := make([]byte, len(magicPghoa1)+2)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return Info{}, fmt.Errorf("inspect: %w", readErr("pghoa1 header", err))
		}
		hsize := int64(len(hdr)) + int64(hdr[len(magicPghoa1)])<<8 | int64(hdr[len(magicPghoa1)+1])
		rest, err := io.Copy(io.Discard, r)
		if err != nil {
			return Info{}, fmt.Errorf("inspect: read pghoa1 body: %w", err)
		}
		total := int64(len(hdr)) + rest
		if total < hsize+tagSize {
			return Info{}, fmt.Errorf("inspect: pghoa1: %w", ErrTruncated)
		}
		return Info{Format: f, HeaderSize: hsize, PayloadSize: total - hsize - tagSize, FileSize: total}, nil
	}
	h, err := readMoat1Header(r)
	if err != nil {
		return Info{}, fmt.Errorf("inspect: %w", err)
	}
	body, err := io.Copy(io.Discard, r)
	if err != nil {
		return Info{}, fmt.Errorf("inspect: read moat1 body: %w", err)
	}
	const full = SegmentSize + tagSize
	segs := (body + full - 1) / full
	if segs == 0 || body-(segs-1)*full < tagSize {
		return Info{}, fmt.Errorf("inspect: moat1 body: %w", ErrTruncated)
	}
	return Info{
		Format:      f,
		Key:         h.fingerprint,
		Compressed:  h.flags&flagZstd != 0,
		SegmentSize: SegmentSize,
		Segments:    segs,
		HeaderSize:  int64(len(h.raw)),
		PayloadSize: body - segs*tagSize,
		FileSize:    int64(len(h.raw)) + body,
	}, nil
}
