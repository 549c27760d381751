package postgres

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// serverAddrs returns the local address of each backend's TCP connection
// (the address the client connected to), by backend pid. It reads the
// postmaster's network namespace's TCP tables (/proc/<postmaster>/net/tcp
// and tcp6) and each backend's descriptors; a backend whose socket is not
// found (it exited, or this process may not read its descriptors) is
// absent from the result.
func serverAddrs(postmaster int, port int, backends []int32) (map[int32]netip.Addr, error) {
	byInode := map[string]netip.Addr{}
	for _, table := range []string{"tcp", "tcp6"} {
		if err := readTCPTable(filepath.Join("/proc", strconv.Itoa(postmaster), "net", table), port, byInode); err != nil {
			return nil, err
		}
	}
	out := map[int32]netip.Addr{}
	for _, pid := range backends {
		fds := filepath.Join("/proc", strconv.Itoa(int(pid)), "fd")
		entries, err := os.ReadDir(fds)
		if err != nil {
			continue
		}
		for _, e := range entries {
			link, err := os.Readlink(filepath.Join(fds, e.Name()))
			if err != nil {
				continue
			}
			inode, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			if a, ok := byInode[strings.TrimSuffix(inode, "]")]; ok {
				out[pid] = a
				break
			}
		}
	}
	return out, nil
}

// readTCPTable adds to byInode the local address of every connected
// socket of a /proc/net/tcp{,6} table whose local port is port.
func readTCPTable(path string, port int, byInode map[string]netip.Addr) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil // no IPv6
	}
	if err != nil {
		return fmt.Errorf("read tcp table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		local, lport, err := parseProcAddr(fs[1])
		if err != nil || lport != port {
			continue
		}
		if _, rport, err := parseProcAddr(fs[2]); err != nil || rport == 0 {
			continue // a listening socket
		}
		byInode[fs[9]] = local
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read tcp table %s: %w", path, err)
	}
	return nil
}

// parseProcAddr parses a /proc/net/tcp address: the address in hex, each
// 32-bit word of it printed as a native integer, and the port in hex.
func parseProcAddr(s string) (netip.Addr, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("address %q: port: %w", s, err)
	}
	if len(h) != 8 && len(h) != 32 {
		return netip.Addr{}, 0, fmt.Errorf("address %q: not 4 or 16 hex bytes", s)
	}
	b := make([]byte, len(h)/2)
	for i := 0; i < len(b); i += 4 {
		w, err := strconv.ParseUint(h[2*i:2*i+8], 16, 32)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("address %q: %w", s, err)
		}
		binary.NativeEndian.PutUint32(b[i:], uint32(w)) // the kernel prints the word as a native integer
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), int(port), nil
}
