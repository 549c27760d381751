package archive

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/moatdb/moat/internal/backup"
)

// ErrExists is returned (wrapped) when an output file is already there.
var ErrExists = errors.New("archive: already exists")

// EncryptOptions configures [Encrypt].
type EncryptOptions struct {
	// Format is the format to write: backup.FormatMoat1 (the default) or
	// backup.FormatPghoa1 (for pghoard; weaker, see package backup).
	Format backup.Format
	// Compress compresses with zstd before encryption (moat1 only).
	Compress bool
}

// Encrypt encrypts all of src to pub and writes the result to dst.
func Encrypt(dst io.Writer, src io.Reader, pub *rsa.PublicKey, opts EncryptOptions) error {
	var w io.WriteCloser
	var err error
	switch opts.Format {
	case "", backup.FormatMoat1:
		w, err = backup.NewWriter(dst, pub, backup.WriterOptions{Compress: opts.Compress})
	case backup.FormatPghoa1:
		if opts.Compress {
			return errors.New("encrypt: pghoa1 has no compression flag; compression is moat1 only")
		}
		w, err = backup.NewPghoa1Writer(dst, pub)
	default:
		return fmt.Errorf("encrypt: unknown format %q", opts.Format)
	}
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// Decrypt decrypts src (moat1 or pghoa1, detected) with priv and writes
// the plaintext to dst. Only verified plaintext reaches dst, but a moat1
// file that fails part way leaves dst with the segments before the bad one:
// use [atomicfile.Write] for all-or-nothing output.
func Decrypt(dst io.Writer, src io.Reader, priv *rsa.PrivateKey) error {
	r, err := backup.Decode(src, priv)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if _, err := io.Copy(dst, r); err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	return nil
}
