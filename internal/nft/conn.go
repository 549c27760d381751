package nft

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// sockets opens the nf_tables sockets of one namespace and closes them off
// the caller's path. Closing an nf_tables socket waits until the kernel has
// freed what committed transactions removed (any namespace's: after an RCU
// grace period, and for a replaced 100,000-prefix table, the freeing
// itself): ~15 ms after deleting a single element. Nothing an apply does
// depends on that memory being freed, so each close runs on a goroutine of
// its own, tracked: wait returns when every close has.
type sockets struct {
	ns netns.NsHandle
	wg sync.WaitGroup
}

// conn opens a google/nftables conn whose socket buffers hold a batch of
// batchBytes. The conn keeps one socket for all its requests (the
// library's default opens and closes one per request, and each close may
// wait); the caller hands it back with release(conn.CloseLasting).
func (s *sockets) conn(batchBytes int) (*nftables.Conn, error) {
	snd := max(batchBytes+batchBytes/4+(1<<20), 4<<20)
	rcv := 8 << 20
	return nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(s.ns)), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return setBuffers(c, snd, rcv)
	}))
}

// kernel opens a plain netlink socket to nf_tables (kernel.go); the caller
// hands it back with release(k.Close).
func (s *sockets) kernel() (*kernel, error) { return dialKernel(s.ns) }

// release closes a socket on a tracked goroutine.
func (s *sockets) release(close func() error) {
	s.wg.Go(func() { _ = close() })
}

// wait returns when every socket released so far is closed.
func (s *sockets) wait() { s.wg.Wait() }

// setBuffers sets the send and receive buffers of c. A batch is sent in one
// sendmsg, so the send buffer must hold all of it; the limits are raised
// past net.core.wmem_max with SO_SNDBUFFORCE, as nft does.
func setBuffers(c *netlink.Conn, snd, rcv int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd); e != nil {
			serr = fmt.Errorf("set netlink send buffer: %w", e)
			return
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv); e != nil {
			serr = fmt.Errorf("set netlink receive buffer: %w", e)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// setIDMu guards google/nftables v0.3.0's set-ID counter: AddSet
// increments a package-level variable without a lock, a data race when two
// namespaces are written at once. It is the only global state the library
// has, so tables in different namespaces are safe to write concurrently.
// (The lock is this package's only package-level variable besides its
// sentinel errors: it guards the library's, it holds no state of ours.)
var setIDMu sync.Mutex

func addSet(conn *nftables.Conn, set *nftables.Set) error {
	setIDMu.Lock()
	defer setIDMu.Unlock()
	return conn.AddSet(set, nil)
}

func moatTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func newSet(t *nftables.Table, name string, v4 bool) *nftables.Set {
	kt := nftables.TypeIP6Addr
	if v4 {
		kt = nftables.TypeIPAddr
	}
	return &nftables.Set{Table: t, Name: name, Interval: true, KeyType: kt}
}
