package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dataName is the one file in the FUSE mount: the decrypted data area.
const dataName = "data"

// fuseRoot is the FUSE mount's root directory, holding the data file.
type fuseRoot struct {
	fs.Inode
	c *Container
}

var (
	_ fs.NodeOnAdder   = (*fuseRoot)(nil)
	_ fs.NodeGetattrer = (*fuseRoot)(nil)
)

// Getattr shows the root as root's alone (FUSE's default is 0755; without
// allow_other no other user may enter it anyway).
func (r *fuseRoot) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o700
	return 0
}

func (r *fuseRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &dataFile{c: r.c}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(dataName, ch, false)
}

// dataFile is the decrypted data area as one file, opened with direct I/O
// (the kernel caches nothing of it: the loop device and ext4 above do).
type dataFile struct {
	fs.Inode
	c *Container
}

var (
	_ fs.NodeOpener    = (*dataFile)(nil)
	_ fs.NodeReader    = (*dataFile)(nil)
	_ fs.NodeWriter    = (*dataFile)(nil)
	_ fs.NodeGetattrer = (*dataFile)(nil)
	_ fs.NodeSetattrer = (*dataFile)(nil)
	_ fs.NodeFsyncer   = (*dataFile)(nil)
	_ fs.NodeFlusher   = (*dataFile)(nil)
)

func (f *dataFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

func (f *dataFile) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := f.c.ReadAt(dest, off)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *dataFile) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.c.WriteAt(data, off)
	if err != nil {
		return uint32(n), fs.ToErrno(err)
	}
	return uint32(n), 0
}

func (f *dataFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(f.c.Size())
	out.Blksize = SectorSize
	out.Blocks = uint64(f.c.Size()) / 512
	return 0
}

// Setattr allows what the loop driver and open(O_TRUNC) ask for, but the
// size is fixed.
func (f *dataFile) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != f.c.Size() {
		return syscall.EPERM
	}
	return f.Getattr(ctx, nil, out)
}

func (f *dataFile) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	return fs.ToErrno(f.c.Sync())
}

func (f *dataFile) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

// mountFUSE serves c at dir as dir/data.
func mountFUSE(dir string, c *Container) (*fuse.Server, error) {
	srv, err := fs.Mount(dir, &fuseRoot{c: c}, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "moat-volume",
			Name:              "moat-volume",
			DirectMountStrict: true, // no fusermount: the server runs as root
			// A reply (header and data) must fit a pipe (1 MiB) for
			// go-fuse to splice it.
			MaxWrite:      512 << 10,
			DisableXAttrs: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount fuse at %s: %w", dir, err)
	}
	if err := fuseCloseOnExec(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount fuse at %s: %w", dir, err)
	}
	return srv, nil
}

// fuseCloseOnExec marks this process's /dev/fuse descriptors
// close-on-exec. go-fuse's direct mount opens /dev/fuse without it, so a
// child (mkfs.ext4 on the loop device) would inherit the FUSE connection:
// if the server then dies while the child waits on the device, the
// kernel never aborts the connection (the child still holds it) and every
// access to the mount, the child's included, hangs for good.
func fuseCloseOnExec() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/fuse" {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}
