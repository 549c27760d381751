package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// ErrSymlink is returned (wrapped) for a key whose path in a [Dir] store
// goes through, or ends at, a symbolic link. The store never follows one:
// nothing Moat writes is a link, so one is a sign of tampering, and
// following it could make a deletion (retention runs as root) remove a file
// outside the store.
var ErrSymlink = errors.New("objstore: symbolic link in the store")

// Dir is a [Store] in a local directory. A key is a path below the root.
// Every access goes through an [os.Root] (no path ever resolves outside
// the directory, whatever links it holds) and refuses any path with a
// symbolic link in it ([ErrSymlink]); List skips links. Files are created
// 0640 and directories 0750, owned by the calling process: the directory
// is meant to be the agent's and the control plane's alone.
type Dir struct {
	root *os.Root
	abs  string
}

var _ Store = (*Dir)(nil)

// NewDir returns a store rooted at root, which must be an existing
// directory.
func NewDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open dir store: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open dir store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open dir store: %s is not a directory", root)
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("open dir store: %w", err)
	}
	return &Dir{root: r, abs: abs}, nil
}

// Root returns the store's directory.
func (d *Dir) Root() string { return d.abs }

// path returns key's path relative to the root, after checking that no
// element of it is a symbolic link. With last false the final element
// (which need not exist) is not checked.
func (d *Dir) path(key string, last bool) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	elems := strings.Split(key, "/")
	n := len(elems) - 1
	if last {
		n++
	}
	for i := 1; i <= n; i++ {
		p := strings.Join(elems[:i], "/")
		fi, err := d.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			break // nothing below it exists either
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%s: %w", p, ErrSymlink)
		}
	}
	return filepath.FromSlash(key), nil
}

// Put writes r to a temporary file next to the key's path, fsyncs it,
// renames it into place and fsyncs the directory, so that after a crash
// the key holds either the old object or the whole new one.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader) (err error) {
	p, err := d.path(key, true)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	dir := filepath.Dir(p)
	var f *os.File
	var tmp string
	for try := 0; ; try++ {
		if err := d.root.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		// MkdirAll followed any link planted meanwhile, within the root
		// only; check again before writing through it.
		if _, err := d.path(key, true); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		var rnd [8]byte
		rand.Read(rnd[:])
		tmp = filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
		f, err = d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o640)
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			continue // a Delete removed the directory as it emptied
		}
		if err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		break
	}
	defer func() {
		if err != nil {
			f.Close()
			d.root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Chmod(0o640); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := d.root.Rename(tmp, p); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := d.syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (d *Dir) syncDir(dir string) error {
	f, err := d.root.OpenFile(dir, os.O_RDONLY|oNoFollow|oDirectory, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func (d *Dir) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key, false)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	f, err := d.root.OpenFile(p, os.O_RDONLY|oNoFollow, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("get %s: %w", key, ErrSymlink)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, notFound(err))
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return f, nil
}

func (d *Dir) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := d.path(key, true)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	fi, err := d.root.Lstat(p)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List walks the deepest directory the prefix names; it lists regular
// files only (links and anything below a linked directory are not
// followed).
func (d *Dir) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	start := "."
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = path.Clean(prefix[:i])
		if start == ".." || strings.HasPrefix(start, "../") || path.IsAbs(start) {
			return nil, fmt.Errorf("list %q: %w", prefix, ErrInvalidKey)
		}
		if start != "." {
			if _, err := d.path(start, true); err != nil {
				if errors.Is(err, ErrSymlink) {
					return nil, nil // nothing under a link is in the store
				}
				return nil, fmt.Errorf("list %q: %w", prefix, err)
			}
		}
	}
	var out []ObjectInfo
	err := fs.WalkDir(d.root.FS(), start, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(de.Name(), ".") && p != start {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil // temporary files
		}
		if !de.Type().IsRegular() {
			return nil // directories are walked, links skipped
		}
		if !strings.HasPrefix(p, prefix) {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		out = append(out, ObjectInfo{Key: p, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the regular file at key. A link there or on the way is
// refused ([ErrSymlink]), not removed or followed.
func (d *Dir) Delete(ctx context.Context, key string) error {
	p, err := d.path(key, true)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	fi, err := d.root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("delete %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("delete %s: not a regular file (%v): %w", key, fi.Mode().Type(), ErrSymlink)
	}
	if err := d.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	// Directories left empty go too (a key's directories are only its
	// prefix, as in S3); one another Put just filled stays (ENOTEMPTY).
	for dir := filepath.Dir(p); dir != "." && dir != "/"; dir = filepath.Dir(dir) {
		if d.root.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	return err
}
