package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Dir is a [Store] in a local directory. A key is a path below the root.
type Dir struct {
	root string
	// uid and gid own what Put creates, when set (see SetOwner).
	uid, gid int
	owned    bool
}

// SetOwner makes Put give the directories and files it creates to uid and
// gid: a root process (the agent, taking a base backup) then writes into a
// store the postgres user (archive_command) writes into too.
func (d *Dir) SetOwner(uid, gid int) {
	d.uid, d.gid, d.owned = uid, gid, true
}

// mkdirAll is os.MkdirAll giving every directory it creates to the owner.
func (d *Dir) mkdirAll(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir && len(parent) >= len(d.root) {
		if err := d.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if d.owned {
		if err := os.Chown(dir, d.uid, d.gid); err != nil {
			return err
		}
	}
	return shareLikeParent(dir)
}

// shareLikeParent makes dir 02770 when its parent is setgid: a store
// whose root is setgid is shared by its group (the agent's nodes each
// write it as their own user, see internal/agent), so every directory in
// it stays writable by that group, whatever the writer's umask
// (PostgreSQL runs archive_command under umask 077).
func shareLikeParent(dir string) error {
	pfi, err := os.Stat(filepath.Dir(dir))
	if err != nil || pfi.Mode()&fs.ModeSetgid == 0 {
		return err
	}
	return os.Chmod(dir, 0o770|fs.ModeSetgid)
}

var _ Store = (*Dir)(nil)

// NewDir returns a store rooted at root, which must be an existing
// directory.
func NewDir(root string) (*Dir, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("open dir store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open dir store: %s is not a directory", root)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open dir store: %w", err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put writes r to a temporary file next to the key's path, fsyncs it,
// renames it into place and fsyncs the directory, so that after a crash
// the key holds either the old object or the whole new one.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader) (err error) {
	p, err := d.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	dir := filepath.Dir(p)
	var f *os.File
	for try := 0; ; try++ {
		if err := d.mkdirAll(dir); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		f, err = os.CreateTemp(dir, ".tmp-*")
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
			os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Chmod(0o640); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if d.owned {
		if err := f.Chown(d.uid, d.gid); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
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
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
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
	p, err := d.path(key)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	f, err := os.Open(p)
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
	p, err := d.path(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (d *Dir) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	// Walk only the deepest directory the prefix names.
	start := d.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(d.root, filepath.FromSlash(prefix[:i]))
		if !strings.HasPrefix(start, d.root+string(filepath.Separator)) && start != d.root {
			return nil, fmt.Errorf("list %q: %w", prefix, ErrInvalidKey)
		}
	}
	var out []ObjectInfo
	err := filepath.WalkDir(start, func(p string, de fs.DirEntry, err error) error {
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
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (d *Dir) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	// Directories left empty go too (a key's directories are only its
	// prefix, as in S3); one another Put just filled stays (ENOTEMPTY).
	for dir := filepath.Dir(p); len(dir) > len(d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
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
