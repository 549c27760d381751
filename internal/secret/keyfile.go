package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// keyFileHeader starts every master key file; the key follows in standard
// base64 on the same line.
const keyFileHeader = "moat-master-key-v1 "

// maxKeyFileSize bounds how much of a key file is read.
const maxKeyFileSize = 4096

// ErrKeyFilePermissions is returned (wrapped) when the master key file can be
// read by its group or by others.
var ErrKeyFilePermissions = errors.New("master key file is readable by group or others")

// LoadOrCreateKey returns the keyring for the master key in the file at
// path, creating the file with a new random key (mode 0600) if it does not
// exist. The directory must exist.
//
// The file is created atomically: the key is written to a temporary file in
// the same directory, synced, and then linked into place, which fails if
// path already exists. So two servers starting at once never see a partial
// file, and the loser of the race uses the winner's key.
//
// A key file that is not a regular file, or whose mode lets its group or
// others read or write it, is refused (ErrKeyFilePermissions) rather than
// used.
func LoadOrCreateKey(path string) (*Keyring, error) {
	key, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKeyFile(path)
		if errors.Is(err, fs.ErrExist) {
			key, err = readKeyFile(path) // another process created it first
		}
	}
	if err != nil {
		return nil, err
	}
	return NewKeyring(key)
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open master key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open master key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("master key %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrKeyFilePermissions, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize))
	if err != nil {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	key, err := decodeKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("master key %s: %w", path, err)
	}
	return key, nil
}

func decodeKeyFile(data []byte) ([]byte, error) {
	line, ok := bytes.CutPrefix(bytes.TrimSpace(data), []byte(keyFileHeader))
	if !ok {
		return nil, errors.New("not a moat master key file (missing header)")
	}
	key, err := base64.StdEncoding.DecodeString(string(line))
	if err != nil {
		return nil, fmt.Errorf("decode key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	return key, nil
}

func encodeKeyFile(key []byte) []byte {
	return []byte(keyFileHeader + base64.StdEncoding.EncodeToString(key) + "\n")
}

// createKeyFile writes a new key to path. It returns an error wrapping
// fs.ErrExist if path already exists.
func createKeyFile(path string) (key []byte, err error) {
	key = make([]byte, KeySize)
	rand.Read(key)

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create master key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create master key: %w", err)
	}
	if _, err := tmp.Write(encodeKeyFile(key)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write master key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sync master key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write master key: %w", err)
	}
	// Link, unlike rename, never replaces an existing file: it is the
	// O_EXCL of a rename.
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("install master key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("sync key directory: %w", err)
		}
	}
	return key, nil
}
