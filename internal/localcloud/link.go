package localcloud

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// LinkPool is where point-to-point links between routers take their /31s.
// A link's addresses only need to be unique within its two namespaces.
var LinkPool = netip.MustParsePrefix("169.254.0.0/16")

// Link is a point-to-point veth between two of the Cloud's namespaces
// (typically two VPC routers: a peering), with a /31 from LinkPool. It is
// created forwarding nothing: both ends are up (so routes through it can be
// installed ahead of time) but IPv4 forwarding is off on them, so a packet
// arriving over the link is never forwarded on (the sender gets "no route
// to host"). SetUp(ctx, true) turns forwarding on at both ends.
type Link struct {
	// Name identifies the link (a peering's pcx ID, for instance).
	Name string
	// A and B are the namespaces at its ends.
	A, B string
	// IfName is the interface's name at both ends.
	IfName string
	// AAddr and BAddr are the ends' addresses: a route in A to B's
	// networks goes via BAddr, and the other way round.
	AAddr, BAddr netip.Addr
	// Up reports whether the link forwarded when it was read.
	Up bool

	c *Cloud
}

// Link makes the link name exist between namespaces a and b and returns
// it. It is idempotent: an existing link keeps its state and addresses, so
// after a restart calling Link again gives back the handle.
func (c *Cloud) Link(ctx context.Context, name string, a, b string) (*Link, error) {
	if err := checkName("link", name); err != nil {
		return nil, err
	}
	if a == b {
		return nil, fmt.Errorf("link %s: both ends in %s", name, a)
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return c.link(name, a, b)
}

// link is Link under the lock.
func (c *Cloud) link(name, a, b string) (*Link, error) {
	l := &Link{Name: name, A: a, B: b, IfName: linkIfName(name), c: c}
	found, err := l.read()
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	if found {
		return l, nil
	}
	if err := l.create(); err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

// linkIfName derives the interface name (at most 15 bytes) from the link's
// name.
func linkIfName(name string) string {
	s := sha256.Sum256([]byte(name))
	return "p" + hex.EncodeToString(s[:5])
}

// read fills l from the kernel; false when A has no such link. A link
// left without its alias by an interrupted create is deleted.
func (l *Link) read() (bool, error) {
	found := false
	err := l.c.withNetlink(l.A, func(h *netlink.Handle) error {
		ln, err := h.LinkByName(l.IfName)
		if err != nil {
			return nil
		}
		switch alias := ln.Attrs().Alias; {
		case alias == "":
			return h.LinkDel(ln) // left by an interrupted create
		case alias != linkAliasPrefix+l.Name:
			return fmt.Errorf("interface %s in %s belongs to %q: %w", l.IfName, l.A, alias, ErrExists)
		}
		addrs, err := h.AddrList(ln, netlink.FAMILY_V4)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("read %s in %s: no address", l.IfName, l.A)
		}
		l.AAddr = toPrefix(addrs[0].IPNet).Addr()
		found = true
		return nil
	})
	if err != nil || !found {
		return false, err
	}
	err = l.c.Do(l.A, func() error {
		b, err := os.ReadFile(l.forwardingPath())
		l.Up = strings.TrimSpace(string(b)) == "1"
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read forwarding of %s in %s: %w", l.IfName, l.A, err)
	}
	err = l.c.withNetlink(l.B, func(h *netlink.Handle) error {
		ln, err := h.LinkByName(l.IfName)
		if err != nil {
			return fmt.Errorf("other end in %s: %w", l.B, ErrNotFound)
		}
		addrs, err := h.AddrList(ln, netlink.FAMILY_V4)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("read %s in %s: no address", l.IfName, l.B)
		}
		l.BAddr = toPrefix(addrs[0].IPNet).Addr()
		return nil
	})
	return true, err
}

// create builds the veth, addresses it from a /31 free in both
// namespaces, leaves it down, and marks A's end last.
func (l *Link) create() error {
	usedA, err := l.c.linkAddrs(l.A)
	if err != nil {
		return err
	}
	usedB, err := l.c.linkAddrs(l.B)
	if err != nil {
		return err
	}
	for a := LinkPool.Addr(); LinkPool.Contains(a); a = a.Next().Next() {
		if !usedA[a] && !usedB[a] && !usedA[a.Next()] && !usedB[a.Next()] {
			l.AAddr, l.BAddr = a, a.Next()
			break
		}
	}
	if !l.AAddr.IsValid() {
		return fmt.Errorf("link pool %v: %w", LinkPool, ErrExhausted)
	}
	return l.c.withNS(l.A, func(_ netns.NsHandle, ha *netlink.Handle) error {
		return l.c.withNS(l.B, func(bfd netns.NsHandle, hb *netlink.Handle) error {
			veth := &netlink.Veth{
				LinkAttrs:     netlink.LinkAttrs{Name: l.IfName, TxQLen: -1},
				PeerName:      l.IfName,
				PeerNamespace: netlink.NsFd(bfd),
			}
			if err := ha.LinkAdd(veth); err != nil {
				return fmt.Errorf("add veth: %w", err)
			}
			// Forwarding off before the ends are up and marked.
			if err := l.setForwarding(false); err != nil {
				return err
			}
			for _, end := range []struct {
				h    *netlink.Handle
				addr netip.Addr
			}{{hb, l.BAddr}, {ha, l.AAddr}} {
				ln, err := end.h.LinkByName(l.IfName)
				if err != nil {
					return err
				}
				if err := end.h.AddrAdd(ln, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(end.addr, 31))}); err != nil {
					return fmt.Errorf("add %v: %w", end.addr, err)
				}
				if err := end.h.LinkSetUp(ln); err != nil {
					return fmt.Errorf("set %s up: %w", l.IfName, err)
				}
			}
			// Both ends up: wait for the link watcher (see waitOperUp),
			// then mark them, A last.
			for _, h := range []*netlink.Handle{hb, ha} {
				if err := waitOperUp(h, l.IfName); err != nil {
					return err
				}
			}
			for _, h := range []*netlink.Handle{hb, ha} {
				ln, err := h.LinkByName(l.IfName)
				if err != nil {
					return err
				}
				if err := h.LinkSetAlias(ln, linkAliasPrefix+l.Name); err != nil {
					return fmt.Errorf("mark %s: %w", l.IfName, err)
				}
			}
			return nil
		})
	})
}

func (l *Link) forwardingPath() string {
	return "/proc/sys/net/ipv4/conf/" + l.IfName + "/forwarding"
}

// setForwarding turns IPv4 forwarding of packets arriving over l on or off
// at both ends.
func (l *Link) setForwarding(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	for _, ns := range []string{l.B, l.A} {
		err := l.c.Do(ns, func() error {
			return os.WriteFile(l.forwardingPath(), []byte(v), 0o644)
		})
		if err != nil {
			return fmt.Errorf("set forwarding of %s in %s: %w", l.IfName, ns, err)
		}
	}
	return nil
}

// linkAddrs returns the addresses in LinkPool used in ns.
func (c *Cloud) linkAddrs(ns string) (map[netip.Addr]bool, error) {
	used := map[netip.Addr]bool{}
	err := c.withNetlink(ns, func(h *netlink.Handle) error {
		addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p := toPrefix(a.IPNet); LinkPool.Contains(p.Addr()) {
				used[p.Addr()] = true
			}
		}
		return nil
	})
	return used, err
}

// SetUp makes l forward (up) or forward nothing (down) in both
// directions; routes through it stay either way.
func (l *Link) SetUp(ctx context.Context, up bool) error {
	unlock, err := l.c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.setForwarding(up); err != nil {
		return fmt.Errorf("link %s: %w", l.Name, err)
	}
	l.Up = up
	return nil
}

// Remove deletes l (both ends go together). A missing link is not an
// error.
func (l *Link) Remove(ctx context.Context) error {
	unlock, err := l.c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return l.remove()
}

// remove is Remove under the lock.
func (l *Link) remove() error {
	err := l.c.withNetlink(l.A, func(h *netlink.Handle) error {
		ln, err := h.LinkByName(l.IfName)
		if err != nil {
			return nil
		}
		return h.LinkDel(ln)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove link %s: %w", l.Name, err)
	}
	return nil
}

// Route is a gateway route in a namespace.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// AddRoute makes ns send dst via the neighbour via, which must be on one
// of ns's links or networks (a Link's far address, typically). The route
// is added "onlink", so it can be installed while the link is down. It
// replaces any route to dst.
func (c *Cloud) AddRoute(ctx context.Context, ns string, dst netip.Prefix, via netip.Addr) error {
	if dst.Masked() != dst || !dst.Addr().Is4() || !via.Is4() {
		return fmt.Errorf("add route %v via %v in %s: want a canonical IPv4 prefix and gateway", dst, via, ns)
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	err = c.withNetlink(ns, func(h *netlink.Handle) error {
		addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		idx := 0
		for _, a := range addrs {
			if p := toPrefix(a.IPNet); p.Masked().Contains(via) && p.Bits() > 0 {
				idx = a.LinkIndex
			}
		}
		if idx == 0 {
			return fmt.Errorf("no interface on the gateway's subnet: %w", ErrNotFound)
		}
		return h.RouteReplace(&netlink.Route{
			LinkIndex: idx,
			Dst:       prefixNet(dst),
			Gw:        via.AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
		})
	})
	if err != nil {
		return fmt.Errorf("add route %v via %v in %s: %w", dst, via, ns, err)
	}
	return nil
}

// DeleteRoute removes ns's route to dst. A missing route is not an error.
func (c *Cloud) DeleteRoute(ctx context.Context, ns string, dst netip.Prefix) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	err = c.withNetlink(ns, func(h *netlink.Handle) error {
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, rt := range routes {
			if rt.Dst != nil && toPrefix(rt.Dst) == dst && rt.Gw != nil {
				if err := h.RouteDel(&rt); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete route %v in %s: %w", dst, ns, err)
	}
	return nil
}

// Routes lists ns's gateway routes other than the default route.
func (c *Cloud) Routes(ctx context.Context, ns string) ([]Route, error) {
	var out []Route
	err := c.withNetlink(ns, func(h *netlink.Handle) error {
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, rt := range routes {
			if rt.Gw == nil || isDefault(rt.Dst) {
				continue
			}
			via, _ := netip.AddrFromSlice(rt.Gw)
			out = append(out, Route{Dst: toPrefix(rt.Dst), Via: via.Unmap()})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list routes in %s: %w", ns, err)
	}
	return out, nil
}
