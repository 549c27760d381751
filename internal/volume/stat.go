package volume

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Info is what the node shows of its volume.
type Info struct {
	Format     string `json:"format"`      // "LUKS2"
	Cipher     string `json:"cipher"`      // "aes-xts-plain64"
	KeyBits    int    `json:"key_bits"`    // 512
	SectorSize int    `json:"sector_size"` // 4096
	Engine     string `json:"engine"`      // EngineDMCrypt or EngineUserspace, when served
	Size       int64  `json:"size"`        // the data area, bytes
	Mounted    bool   `json:"mounted"`
	// Of the file system, when mounted:
	Used  int64 `json:"used"`
	Avail int64 `json:"avail"`
	// Full: too little space left for an unprivileged writer
	// (PostgreSQL) to go on: less than fullMargin. The node reports it
	// as its state instead of failing writes silently.
	Full bool `json:"full"`
}

// fullMargin is the free space below which a volume of size bytes counts
// as full: one WAL segment (PostgreSQL's next allocation may be one), or
// 1% of a small volume.
func fullMargin(size int64) int64 { return min(16<<20, size/100) }

// Stat describes the container and, when it is mounted at mountpoint, its
// file system's use.
func Stat(container, mountpoint string) (Info, error) {
	f, err := os.Open(container)
	if err != nil {
		return Info{}, fmt.Errorf("stat volume: %w", err)
	}
	defer f.Close()
	hdr, err := ReadHeader(f)
	if err != nil {
		return Info{}, fmt.Errorf("stat volume %s: %w", container, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("stat volume: %w", err)
	}
	info := Info{
		Format:     FormatName,
		Cipher:     hdr.Cipher,
		KeyBits:    KeySize * 8,
		SectorSize: hdr.SectorSize,
		Size:       fi.Size() - hdr.DataOffset,
	}
	if _, ok := dmMapping(container); ok {
		info.Engine = EngineDMCrypt
	} else if m, _ := isMountpoint(fuseDir(container)); m {
		info.Engine = EngineUserspace
	}
	if info.Mounted, err = isMountpoint(mountpoint); err != nil {
		return Info{}, fmt.Errorf("stat volume: %w", err)
	}
	if info.Mounted {
		var st unix.Statfs_t
		if err := unix.Statfs(mountpoint, &st); err != nil {
			return Info{}, fmt.Errorf("stat volume: %w", err)
		}
		info.Used = int64(st.Blocks-st.Bfree) * st.Bsize
		info.Avail = int64(st.Bavail) * st.Bsize
		info.Full = st.Bavail == 0 || info.Avail < fullMargin(info.Size)
	}
	return info, nil
}
