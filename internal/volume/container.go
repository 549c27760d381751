package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Container is an open container whose data area reads and writes as
// plaintext through the engine: offset 0 is the first byte of the data
// segment. I/O at any offset works; whole aligned sectors avoid a
// read-modify-write. Writes to one sector from two goroutines at once are
// serialized (a partial write reads, changes and rewrites the sector).
type Container struct {
	f      *os.File
	engine *Engine
	hdr    *Header
	size   int64 // bytes in the data area
	locks  [64]sync.Mutex
}

// ErrLocked is returned when another process serves the container.
var ErrLocked = errors.New("volume is served by another process")

// OpenContainer opens the container at path for key: it takes an
// exclusive lock on the file (a second server for the same container gets
// ErrLocked), reads the header and checks the key against its digest.
func OpenContainer(path string, key Key) (_ *Container, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open volume %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock volume %s: %w", path, err)
	}
	hdr, err := ReadHeader(f)
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", path, err)
	}
	if err := hdr.VerifyKey(key); err != nil {
		return nil, fmt.Errorf("open volume %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	e, err := NewEngine(key)
	if err != nil {
		return nil, err
	}
	size := (fi.Size() - hdr.DataOffset) / SectorSize * SectorSize
	return &Container{f: f, engine: e, hdr: hdr, size: size}, nil
}

// Size is the data area's size in bytes.
func (c *Container) Size() int64 { return c.size }

// Close clears the engine's keys and releases the file and its lock.
func (c *Container) Close() error {
	c.engine.clear()
	return c.f.Close()
}

// ReadAt reads plaintext from the data area.
func (c *Container) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read volume: negative offset")
	}
	if off >= c.size {
		return 0, io.EOF
	}
	var short error
	if rest := c.size - off; int64(len(p)) > rest {
		p, short = p[:rest], io.EOF
	}
	first := off / SectorSize
	end := (off + int64(len(p)) + SectorSize - 1) / SectorSize
	if off%SectorSize == 0 && len(p)%SectorSize == 0 {
		if err := c.readSectors(p, first); err != nil {
			return 0, err
		}
		return len(p), short
	}
	buf := make([]byte, (end-first)*SectorSize)
	if err := c.readSectors(buf, first); err != nil {
		return 0, err
	}
	return copy(p, buf[off-first*SectorSize:]), short
}

// readSectors reads and decrypts whole sectors starting at sector first.
func (c *Container) readSectors(p []byte, first int64) error {
	if _, err := c.f.ReadAt(p, c.hdr.DataOffset+first*SectorSize); err != nil {
		return fmt.Errorf("read volume: %w", err)
	}
	c.engine.Decrypt(p, p, uint64(first))
	return nil
}

// WriteAt encrypts p into the data area.
func (c *Container) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > c.size {
		return 0, fmt.Errorf("write volume: %d bytes at %d: %w", len(p), off, unix.ENOSPC)
	}
	first := off / SectorSize
	end := (off + int64(len(p)) + SectorSize - 1) / SectorSize
	buf := getBuf(int((end - first) * SectorSize))
	defer putBuf(buf)
	if off%SectorSize != 0 || len(p)%SectorSize != 0 {
		// Partial sectors: read, change, write under the sectors' locks.
		// Stripes are taken in index order, each once.
		var held [len(Container{}.locks)]bool
		for s := first; s < end; s++ {
			held[s%int64(len(held))] = true
		}
		for i, h := range held {
			if h {
				c.locks[i].Lock()
				defer c.locks[i].Unlock()
			}
		}
		if err := c.readSectors(buf, first); err != nil {
			return 0, err
		}
	}
	copy(buf[off-first*SectorSize:], p)
	c.engine.Encrypt(buf, buf, uint64(first))
	if _, err := c.f.WriteAt(buf, c.hdr.DataOffset+first*SectorSize); err != nil {
		return 0, fmt.Errorf("write volume: %w", err)
	}
	return len(p), nil
}

// bufs holds ciphertext buffers of writes (up to the FUSE maximum).
var bufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func getBuf(n int) []byte {
	if n > 1<<20 {
		return make([]byte, n)
	}
	return (*bufs.Get().(*[]byte))[:n]
}

func putBuf(b []byte) {
	if cap(b) == 1<<20 {
		b = b[:cap(b)]
		bufs.Put(&b)
	}
}

// Sync flushes the container file.
func (c *Container) Sync() error {
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("sync volume: %w", err)
	}
	return nil
}
