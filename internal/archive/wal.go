package archive

import (
	"context"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
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
// keyed digest; it is written after the file, so it also marks a
// completed Push.
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

// digestKey derives the HMAC key for WAL digests from the public key: a
// guess can be confirmed only by someone who holds it.
func digestKey(pub *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("moat archive wal digest v1\x00"))
	h.Write(der)
	return h.Sum(nil), nil
}

func fileDigest(path string, key []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := hmac.New(sha256.New, key)
	if _, err := io.Copy(m, f); err != nil {
		return nil, err
	}
	return m.Sum(nil), nil
}

// Push archives the WAL file at walPath (PostgreSQL's %p, relative to the
// data directory, which is the archive_command's working directory): it
// encrypts it (moat1, compressed) into the store under its name. Pushing a
// file that is already archived with the same content succeeds without
// storing it again; a different content under the same name is an error
// wrapping [ErrConflict].
func Push(ctx context.Context, cfg *Config, walPath string) error {
	name := filepath.Base(walPath)
	key, err := walKey(cfg, name)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	pub, err := cfg.publicKey()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	st, err := cfg.store()
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	dk, err := digestKey(pub)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	sum, err := fileDigest(walPath, dk)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	want := hex.EncodeToString(sum) + "\n"

	have, err := readSmall(ctx, st, key+digestSuffix)
	switch {
	case err == nil:
		if !hmac.Equal(have, []byte(want)) {
			return fmt.Errorf("push %s: %w (key %s)", name, ErrConflict, key)
		}
		if _, err := st.Stat(ctx, key); err == nil {
			return nil // archived before, identical
		} else if !errors.Is(err, objstore.ErrNotFound) {
			return fmt.Errorf("push %s: %w", name, err)
		}
		// The digest without its file: someone deleted the file. Store it again.
	case !errors.Is(err, objstore.ErrNotFound):
		return fmt.Errorf("push %s: %w", name, err)
	}

	f, err := os.Open(walPath)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	defer f.Close()
	if err := putEncrypted(ctx, st, key, f, pub); err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	if err := st.Put(ctx, key+digestSuffix, strings.NewReader(want)); err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	return nil
}

// putEncrypted streams src through a compressing moat1 writer into the
// store under key.
func putEncrypted(ctx context.Context, st objstore.Store, key string, src io.Reader, pub *rsa.PublicKey) error {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Encrypt(pw, src, pub, EncryptOptions{Format: backup.FormatMoat1, Compress: true}))
	}()
	err := st.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("upload ended")) // unblocks the writer if Put returned early
	return err
}

func readSmall(ctx context.Context, st objstore.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 4096))
}

// Fetch restores the archived WAL file walName (PostgreSQL's %f) to dest
// (%p): it fetches, decrypts and verifies the whole file into a temporary
// file beside dest and renames it into place, so dest never holds
// unverified bytes. A file the archive does not hold returns an error
// wrapping [ErrNotFound]; a file that fails to verify, one wrapping
// backup.ErrAuth, ErrTruncated, ErrFormat or ErrWrongKey.
func Fetch(ctx context.Context, cfg *Config, walName, dest string) error {
	key, err := walKey(cfg, walName)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	priv, err := cfg.privateKey()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	st, err := cfg.store()
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
	err = atomicfile.Write(dest, 0o600, func(w io.Writer) error {
		// moat1 releases verified segments as it goes; the temporary file
		// is renamed only once the final segment verified.
		return Decrypt(w, rc, priv)
	})
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
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
