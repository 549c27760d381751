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

// movedHosts keeps the responders of moved addresses, per provider.
type movedHosts struct {
	mu        sync.Mutex
	listeners map[netip.Addr]net.Listener
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
// where the service went. Idempotent; call it again after a restart.
func (p *Provider) HoldAddress(ctx context.Context, addr netip.Addr, vpcID, message string, cert *tls.Certificate) error {
	p.moved.mu.Lock()
	defer p.moved.mu.Unlock()
	if _, ok := p.moved.listeners[addr]; ok {
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
	if p.moved.listeners == nil {
		p.moved.listeners = map[netip.Addr]net.Listener{}
	}
	p.moved.listeners[addr] = ln
	go serveMoved(ln, message, cert)
	return nil
}

// ReleaseAddress stops answering on addr and frees it.
func (p *Provider) ReleaseAddress(ctx context.Context, addr netip.Addr) error {
	p.moved.mu.Lock()
	if ln, ok := p.moved.listeners[addr]; ok {
		ln.Close()
		delete(p.moved.listeners, addr)
	}
	p.moved.mu.Unlock()
	err := p.cloud.RemoveHost(ctx, movedName(addr))
	if errors.Is(err, localcloud.ErrNotFound) {
		return nil
	}
	return err
}

// serveMoved answers each connection with a FATAL ErrorResponse carrying
// message. A client asking for TLS gets it first, with the service's own
// certificate when one is given, so a verify-full client authenticates the
// answer and shows it (libpq does not show an error sent in place of TLS).
func serveMoved(ln net.Listener, message string, cert *tls.Certificate) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
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
		}()
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
