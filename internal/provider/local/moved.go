package local

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/moatdb/moat/internal/localcloud"
)

// ErrClosed is returned by HoldAddress after Close.
var ErrClosed = errors.New("local provider closed")

// movedHosts keeps the responders of moved addresses, per provider.
type movedHosts struct {
	mu      sync.Mutex
	closed  bool
	servers map[netip.Addr]*movedServer
}

// movedServer answers PostgreSQL connections on one moved address with
// where the service went. Close stops it and waits for its goroutines.
type movedServer struct {
	ln      net.Listener
	message string
	cert    *tls.Certificate
	wg      sync.WaitGroup // the accept loop and a goroutine per connection

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// movedName is the local-cloud host that holds a moved address.
func movedName(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("mv-%02x%02x%02x%02x", b[0], b[1], b[2], b[3])
}

// HoldAddress keeps answering on addr (on the internet, or in vpcID) after
// a node left it: a namespace takes the address (and the node's MAC, so
// neighbours' ARP entries stay right), and a responder on port 5432 answers
// every PostgreSQL connection attempt with an error whose message says
// where the service went. Idempotent; call it again after a restart (the
// namespace outlives the provider, the responder does not: Close stops
// it).
func (p *Provider) HoldAddress(ctx context.Context, addr netip.Addr, vpcID, message string, cert *tls.Certificate) error {
	p.moved.mu.Lock()
	defer p.moved.mu.Unlock()
	if p.moved.closed {
		return fmt.Errorf("hold %s: %w", addr, ErrClosed)
	}
	if _, ok := p.moved.servers[addr]; ok {
		return nil
	}
	h, err := p.cloud.AddHost(ctx, movedName(addr), netRef(vpcID))
	if err != nil {
		return fmt.Errorf("hold %s: %w", addr, err)
	}
	var ln net.Listener
	err = p.cloud.Do(h.NS, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			bits := 0
			for _, a := range addrs {
				if a.IP.Equal(net.IP(addr.AsSlice())) {
					bits = -1
					break
				}
				bits, _ = a.Mask.Size()
				if err := netlink.AddrDel(l, &a); err != nil {
					return err
				}
			}
			if bits > 0 {
				if err := netlink.LinkSetHardwareAddr(l, localcloud.MACFor(addr)); err != nil {
					return err
				}
				ipn := &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(bits, 32)}
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
					return err
				}
			}
		}
		var err2 error
		ln, err2 = net.Listen("tcp", netip.AddrPortFrom(addr, 5432).String())
		return err2
	})
	if err != nil {
		return fmt.Errorf("hold %s: %w", addr, err)
	}
	if p.moved.servers == nil {
		p.moved.servers = map[netip.Addr]*movedServer{}
	}
	srv := &movedServer{ln: ln, message: message, cert: cert, conns: map[net.Conn]struct{}{}}
	p.moved.servers[addr] = srv
	srv.wg.Go(srv.serve)
	return nil
}

// ReleaseAddress stops answering on addr and frees it.
func (p *Provider) ReleaseAddress(ctx context.Context, addr netip.Addr) error {
	p.moved.mu.Lock()
	srv := p.moved.servers[addr]
	delete(p.moved.servers, addr)
	p.moved.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	err := p.cloud.RemoveHost(ctx, movedName(addr))
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}

// Run returns when ctx ends, after Close: the provider's responders live
// as long as the control plane that runs it. (New is caddy's Provision,
// Close its Cleanup.)
func (p *Provider) Run(ctx context.Context) error {
	<-ctx.Done()
	return p.Close()
}

// Close stops every moved-address responder, ends their connections and
// waits for their goroutines; HoldAddress fails afterwards. The moved
// addresses' namespaces stay, holding the addresses, until ReleaseAddress
// or the local cloud's cleanup; a new provider answers on them again when
// HoldAddress is called again. Idempotent.
func (p *Provider) Close() error {
	p.moved.mu.Lock()
	p.moved.closed = true
	servers := p.moved.servers
	p.moved.servers = nil
	p.moved.mu.Unlock()
	for _, srv := range servers {
		srv.Close()
	}
	return nil
}

// Close stops s: its listener, then its connections, and waits for its
// goroutines.
func (s *movedServer) Close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// track records c as open, or closes it and reports false when s is
// closed.
func (s *movedServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *movedServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serve answers each connection with a FATAL ErrorResponse carrying
// message. A client asking for TLS gets it first, with the service's own
// certificate when one is given, so a verify-full client authenticates the
// answer and shows it (libpq does not show an error sent in place of TLS).
func (s *movedServer) serve() {
	message, cert := s.message, s.cert
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			return
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			const sslRequest = 80877103
			var conn net.Conn = c
			if binary.BigEndian.Uint32(hdr[4:]) == sslRequest && cert != nil {
				if _, err := c.Write([]byte{'S'}); err != nil {
					return
				}
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
				if err := tc.Handshake(); err != nil {
					return
				}
				conn = tc
				if _, err := io.ReadFull(conn, hdr[:]); err != nil { // the StartupMessage
					return
				}
				n := int(binary.BigEndian.Uint32(hdr[:4])) - 8
				if n < 0 || n > 1<<16 {
					return
				}
				if _, err := io.CopyN(io.Discard, conn, int64(n)); err != nil {
					return
				}
			}
			conn.Write(movedError(message))
		})
	}
}

// movedError is a protocol-3 ErrorResponse: FATAL, SQLSTATE 08004 (the
// server rejected the connection).
func movedError(message string) []byte {
	clean := strings.ReplaceAll(message, "\x00", "")
	var body []byte
	for _, f := range []struct {
		t byte
		v string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', "08004"}, {'M', clean}} {
		body = append(body, f.t)
		body = append(body, f.v...)
		body = append(body, 0)
	}
	body = append(body, 0)
	out := []byte{'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
	return append(out, body...)
}
