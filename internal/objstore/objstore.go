// Package objstore stores backup files in object storage: a local
// directory (the default) or any S3-compatible service. Every Put is
// atomic: readers see the whole new object or nothing.
//
// It moves opaque bytes (what package backup produced) and knows nothing of
// their format. The directory store never follows a symbolic link
// ([ErrSymlink]). Who may import it: package archive (which stores WAL and
// base backups through it, for the agent), the
// control plane that opens the store, the API server (listing backups), the
// reconcilers (retention, restores) and the benchmarks.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) by Get, Stat when the key does not exist.
var ErrNotFound = errors.New("objstore: not found")

// ErrInvalidKey is returned (wrapped) for a key that [ValidKey] rejects.
var ErrInvalidKey = errors.New("objstore: invalid key")

// Store is an object store. Keys are slash-separated paths as checked by
// [ValidKey]. Implementations are safe for concurrent use.
type Store interface {
	// Put stores everything r yields under key, replacing any object
	// there. The new object becomes visible all at once, and only if Put
	// returns nil.
	Put(ctx context.Context, key string, r io.Reader) error
	// Get opens the object at key. The caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes the object at key.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List describes the objects whose keys start with prefix (a plain
	// string prefix, "" for all), sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes the object at key. Deleting a missing key is not an
	// error, as in S3.
	Delete(ctx context.Context, key string) error
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// ValidKey reports whether key is a valid object key: a non-empty,
// relative, slash-separated path of at most 1024 bytes whose elements are
// non-empty, do not start with "." (reserved for temporary files) and
// contain no backslash or control character.
func ValidKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("key %q: length %d: %w", key, len(key), ErrInvalidKey)
	}
	for elem := range strings.SplitSeq(key, "/") {
		if err := validElem(elem); err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
	}
	return nil
}

func validElem(elem string) error {
	if elem == "" {
		return fmt.Errorf("empty path element: %w", ErrInvalidKey)
	}
	if elem[0] == '.' {
		return fmt.Errorf("element %q starts with a dot: %w", elem, ErrInvalidKey)
	}
	for _, c := range elem {
		if c < 0x20 || c == 0x7f || c == '\\' || c == '/' {
			return fmt.Errorf("element %q contains %q: %w", elem, c, ErrInvalidKey)
		}
	}
	return nil
}

// Kind is the kind of file a key names.
type Kind string

// The kinds of backup file.
const (
	KindBase Kind = "base" // a base backup
	KindWAL  Kind = "wal"  // an archived WAL segment or history file
)

// Key returns the key of a service's backup file:
//
//	<region>/<service>/<timeline>/<kind>/<name>
//
// where timeline is eight hex digits as in PostgreSQL WAL file names
// (timeline 1 is "00000001"). Every element must be a valid key element.
func Key(region, service string, timeline uint32, kind Kind, name string) (string, error) {
	for _, e := range []string{region, service, string(kind), name} {
		if err := validElem(e); err != nil {
			return "", fmt.Errorf("backup key: %w", err)
		}
	}
	return fmt.Sprintf("%s/%s/%08X/%s/%s", region, service, timeline, kind, name), nil
}

// ServicePrefix returns the prefix of every key of a service's backups, for
// List. It ends with a slash.
func ServicePrefix(region, service string) (string, error) {
	for _, e := range []string{region, service} {
		if err := validElem(e); err != nil {
			return "", fmt.Errorf("backup prefix: %w", err)
		}
	}
	return region + "/" + service + "/", nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
