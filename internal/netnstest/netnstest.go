// Package netnstest creates throwaway network namespaces for tests, like
// net/http/httptest does for servers: a namespace pair joined by a veth,
// commands run inside a namespace, TCP listeners and probes inside one.
//
// Every namespace it creates is named "moat-t-<random>" and is deleted when
// the test ends, pass or fail. It never adds an address or a route to the
// caller's own namespace, and never moves a shared thread into another
// namespace: work that must happen inside one runs on a dedicated, locked OS
// thread that is discarded afterwards. Addresses come from the benchmarking
// blocks 198.18.0.0/15 and 2001:2::/48.
//
// Only tests import it.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/testenv"
)

// Prefix is the start of the name of every namespace the package creates.
const Prefix = "moat-t-"

// RequireRoot ends t unless namespaces can be created here: root and the
// `ip` command (iproute2). See testenv: a skip locally, a failure under
// CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "ip")
}

// NS is a network namespace created for a test.
type NS struct {
	// Name is the namespace's name, as `ip netns` knows it.
	Name string
	// Handle refers to the namespace; it stays open until the test ends.
	Handle netns.NsHandle
}

// New creates an empty namespace with loopback up, deleted when t ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := Prefix + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testenv.Unavailable(t, "cannot create a network namespace: ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, Handle: -1}
	t.Cleanup(func() {
		if n.Handle >= 0 {
			n.Handle.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			if _, serr := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			} // else the test deleted it itself
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	n.Handle = h
	nl := n.netlink(t)
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatalf("%s: find lo: %v", name, err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatalf("%s: set lo up: %v", name, err)
	}
	return n
}

// netlink returns a netlink handle bound to n, closed when t ends.
func (n *NS) netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.Handle)
	if err != nil {
		t.Fatalf("%s: netlink handle: %v", n.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Pair is a server and a client namespace joined by a veth, each end with
// an IPv4 and an IPv6 address on one subnet. The client end also holds
// the Extra addresses, so a test can connect from several sources.
type Pair struct {
	Server, Client *NS
	// ServerV4, ServerV6 are the server end's addresses.
	ServerV4, ServerV6 netip.Addr
	// ClientV4, ClientV6 are the client end's first addresses.
	ClientV4, ClientV6 netip.Addr
	// ExtraV4, ExtraV6 are more client addresses, as many as asked for.
	ExtraV4, ExtraV6 []netip.Addr
}

// Subnets of the veth between a pair; they exist only inside the pair.
var (
	subnetV4 = netip.MustParsePrefix("198.18.0.0/24")
	subnetV6 = netip.MustParsePrefix("2001:2::/64")
)

// NewPair creates a server and a client namespace joined by a veth, with
// extra additional client addresses of each family (for sources that are
// allowed or not), all deleted when t ends. The server is 198.18.0.1 and
// 2001:2::1; the client 198.18.0.2 and 2001:2::2, then .3, .4, ...
func NewPair(t testing.TB, extra int) *Pair {
	t.Helper()
	if extra > 200 {
		t.Fatalf("netnstest: at most 200 extra addresses, not %d", extra)
	}
	p := &Pair{Server: New(t), Client: New(t)}
	snl, cnl := p.Server.netlink(t), p.Client.netlink(t)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0"},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(p.Server.Handle),
	}
	if err := cnl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	addr := func(pfx netip.Prefix, host int) netip.Addr {
		a := pfx.Addr().As16()
		if pfx.Addr().Is4() {
			b := pfx.Addr().As4()
			b[3] = byte(host)
			return netip.AddrFrom4(b)
		}
		a[15] = byte(host)
		return netip.AddrFrom16(a)
	}
	p.ServerV4, p.ServerV6 = addr(subnetV4, 1), addr(subnetV6, 1)
	p.ClientV4, p.ClientV6 = addr(subnetV4, 2), addr(subnetV6, 2)
	for i := range extra {
		p.ExtraV4 = append(p.ExtraV4, addr(subnetV4, 3+i))
		p.ExtraV6 = append(p.ExtraV6, addr(subnetV6, 3+i))
	}
	setup := func(n *NS, h *netlink.Handle, addrs ...netip.Addr) {
		link, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatalf("%s: find eth0: %v", n.Name, err)
		}
		for _, a := range addrs {
			bits := subnetV4.Bits()
			if !a.Is4() {
				bits = subnetV6.Bits()
			}
			na := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, bits)), Flags: unix.IFA_F_NODAD}
			if err := h.AddrAdd(link, na); err != nil {
				t.Fatalf("%s: add %v: %v", n.Name, a, err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatalf("%s: set eth0 up: %v", n.Name, err)
		}
	}
	setup(p.Server, snl, p.ServerV4, p.ServerV6)
	setup(p.Client, cnl, append(append([]netip.Addr{p.ClientV4, p.ClientV6}, p.ExtraV4...), p.ExtraV6...)...)
	return p
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Do runs f on a fresh OS thread inside n and returns its error. The thread
// is never returned to the Go scheduler: it ends with f. Sockets f creates
// stay in n and may be used from any goroutine afterwards.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine, so
		// no other goroutine ever runs in n by accident.
		if err := netns.Set(n.Handle); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Run runs a command inside n with `ip netns exec` and returns its
// combined output.
func (n *NS) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return out, nil
}

// Listen listens on TCP addr inside n; the listener is closed when t ends.
func (n *NS) Listen(t testing.TB, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %v in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Echo serves ln until it is closed: every connection gets back what it
// sends.
func Echo(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:k]); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// Dial connects over TCP from inside n, from the source address src (any
// when invalid) to dst, giving up after timeout.
func (n *NS) Dial(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		var err error
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	return c, err
}

// ErrTimeout is returned by Probe when the connection attempt got no
// answer in time (the firewall dropped it).
var ErrTimeout = errors.New("probe timed out")

// Probe reports whether a TCP connection from src inside n to dst is
// accepted within timeout: nil when it is, an error wrapping ErrTimeout when
// nothing answered, another error (such as a refusal) otherwise.
func (n *NS) Probe(src netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	c, err := n.Dial(src, dst, timeout)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return fmt.Errorf("%w: %v -> %v", ErrTimeout, src, dst)
		}
		return err
	}
	return c.Close()
}
