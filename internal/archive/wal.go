package archive

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

// ErrNotFound is returned (wrapped) by Fetch when the archive does not
// hold the file. For restore_command that is the normal answer, not an
// error: PostgreSQL asks for files that do not exist.
var ErrNotFound = errors.New("archive: not in the archive")

// ErrConflict is returned (wrapped) by Push when the archive already holds
// a different file under the same name. PostgreSQL must never overwrite an
// archived file.
var ErrConflict = errors.New("archive: a different file is already archived under this name")

// digestSuffix names the object beside each WAL file that holds its
// record (its keyed digests, MACed; see auth.go); it is written after the
// file, so it also marks a completed Push.
const digestSuffix = ".digest"

// walKey returns the key of WAL file name (a segment, a .partial or
// .backup file, or a timeline history file).
func walKey(cfg *Config, name string) (string, error) {
	if name == "" || name != filepath.Base(name) || strings.HasSuffix(name, digestSuffix) {
		return "", fmt.Errorf("wal file name %q: want a plain file name like 000000010000000000000001", name)
	}
	return objstore.Key(cfg.Region, cfg.Service, walTimeline(name, cfg.Timeline), objstore.KindWAL, name)
}

// walTimeline returns the timeline a WAL file name starts with (eight hex
// digits), or def.
func walTimeline(name string, def uint32) uint32 {
	if len(name) >= 8 {
		if tl, err := strconv.ParseUint(name[:8], 16, 32); err == nil && tl != 0 {
			return uint32(tl)
		}
	}
	return def
}

// maxWALSize bounds a WAL file Push archives: it is read into memory
// once (PostgreSQL's largest segment size is 1 GiB; Moat's nodes use the
// default 16 MiB).
const maxWALSize = 1 << 30

// Push archives the WAL file at walPath (PostgreSQL's %p, relative to the
// data directory, which is the archive_command's working directory): it
// reads it once and archives its bytes with [PushData].
func Push(ctx context.Context, cfg *Config, walPath string) error {
	name := filepath.Base(walPath)
	f, err := os.Open(walPath)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxWALSize+1))
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	if len(data) > maxWALSize {
		return fmt.Errorf("push %s: larger than %d bytes", name, maxWALSize)
	}
	return PushData(ctx, cfg, name, data)
}

// PushData archives data as the WAL file name: it encrypts it (moat1,
// compressed) into the store and then stores its record (name.digest,
// MACed with the service's authentication key; see ErrUnauthenticated).
// Pushing a file that is already archived with the same content succeeds
// without storing it again; a different content under the same name is
// an error wrapping [ErrConflict].
func PushData(ctx context.Context, cfg *Config, name string, data []byte) error {
	key, err := walKey(cfg, name)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	pub, err := cfg.publicKey()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	ak, err := cfg.authKey()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	st, err := cfg.store()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	plain := authMAC(ak, "moat wal plaintext v2", data)

	have, err := readSmall(ctx, st, key+digestSuffix)
	switch {
	case err == nil:
		// A record that does not verify is not the agent's: replaced
		// below, as if absent.
		if old, _, err := openWALRecord(ak, key, have); err == nil {
			if !hmac.Equal(old, plain) {
				return fmt.Errorf("push %s: %w (key %s)", name, ErrConflict, key)
			}
			if _, err := st.Stat(ctx, key); err == nil {
				return nil // archived before, identical
			} else if !errors.Is(err, objstore.ErrNotFound) {
				return fmt.Errorf("push %s: %w", name, err)
			}
			// The record without its file: someone deleted the file. Store it again.
		}
	case !errors.Is(err, objstore.ErrNotFound):
		return fmt.Errorf("push %s: %w", name, err)
	}

	header, err := putEncrypted(ctx, st, key, bytes.NewReader(data), pub)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	if err := st.Put(ctx, key+digestSuffix, strings.NewReader(walRecord(ak, key, plain, header))); err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	return nil
}

// putEncrypted streams src through a compressing moat1 writer into the
// store under key and returns the digest of the header it stored.
func putEncrypted(ctx context.Context, st objstore.Store, key string, src io.Reader, pub *rsa.PublicKey) ([32]byte, error) {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Encrypt(pw, src, pub, EncryptOptions{Format: backup.FormatMoat1, Compress: true}))
	}()
	head := &headBuffer{max: backup.HeaderSize}
	err := st.Put(ctx, key, io.TeeReader(pr, head))
	pr.CloseWithError(errors.New("upload ended")) // unblocks the writer if Put returned early
	if err != nil {
		return [32]byte{}, err
	}
	return headerOf(head.Bytes())
}

func readSmall(ctx context.Context, st objstore.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<10))
}

// Fetch restores the archived WAL file walName (PostgreSQL's %f) to dest
// (%p): it writes what [FetchTo] yields to a temporary file beside dest
// and renames it into place only once all of it verified, so dest never
// holds unverified bytes.
func Fetch(ctx context.Context, cfg *Config, walName, dest string) error {
	return atomicfile.Write(dest, 0o600, func(w io.Writer) error {
		return FetchTo(ctx, cfg, walName, w)
	})
}

// FetchTo writes the plaintext of the archived WAL file walName to w. It
// first checks the file's record (name.digest) with the service's
// authentication key, then decrypts the file with the private key,
// checking that it is the file the record names; w receives only verified
// segments, but a file that fails part way leaves w with a prefix. A file
// the archive does not hold (or holds without its record: a Push that did
// not complete) returns an error wrapping [ErrNotFound]; a record the key
// does not authenticate, one wrapping [ErrUnauthenticated]; a file that
// fails to verify, one wrapping backup.ErrAuth, ErrTruncated, ErrFormat or
// ErrWrongKey.
func FetchTo(ctx context.Context, cfg *Config, walName string, w io.Writer) error {
	key, err := walKey(cfg, walName)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	priv, err := cfg.privateKey()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	ak, err := cfg.authKey()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	st, err := cfg.store()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	rec, err := readSmall(ctx, st, key+digestSuffix)
	if errors.Is(err, objstore.ErrNotFound) {
		return fmt.Errorf("fetch %s: %w", walName, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	_, header, err := openWALRecord(ak, key, rec)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	rc, err := st.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return fmt.Errorf("fetch %s: %w", walName, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	defer rc.Close()
	if err := decryptPinned(w, rc, priv, header); err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	return nil
}

// decryptPinned decrypts the moat1 file src, whose header must have the
// digest header, to dst.
func decryptPinned(dst io.Writer, src io.Reader, priv *rsa.PrivateKey, header [32]byte) error {
	r, err := backup.NewPinnedReader(src, priv, header)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if _, err := io.Copy(dst, r); err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	return nil
}

// Archived reports whether the WAL file walName is in the archive, Push
// completed (its digest, written last, is there).
func Archived(ctx context.Context, cfg *Config, walName string) (bool, error) {
	key, err := walKey(cfg, walName)
	if err != nil {
		return false, err
	}
	st, err := cfg.store()
	if err != nil {
		return false, err
	}
	_, err = st.Stat(ctx, key+digestSuffix)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, objstore.ErrNotFound):
		return false, nil
	}
	return false, err
}
