package localcloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The internet's address plan (DESIGN.md 3.1). Every address exists only
// inside the Cloud's namespaces.
var (
	// InternetSubnet is the internet bridge's on-link subnet.
	InternetSubnet = netip.MustParsePrefix("198.18.0.0/15")
	// InternetGateway is the internet bridge's own address, every internet
	// interface's default gateway.
	InternetGateway = netip.MustParseAddr("198.18.0.1")
	// InfraPool is kept for the internet's own services (the gateway; a
	// DNS server, for instance on 198.18.0.53): never allocated.
	InfraPool = netip.MustParsePrefix("198.18.0.0/24")
	// PublicPool holds services' public addresses.
	PublicPool = netip.MustParsePrefix("198.18.0.0/16")
	// SimPool holds simulated internet hosts' addresses.
	SimPool = netip.MustParsePrefix("198.19.0.0/16")
)

const bridgeName = "br0"

// NetRef names a network (a bridge) to attach an interface to, and the
// pool its address comes from.
type NetRef struct {
	// VPC is the VPC's ID; empty for the internet.
	VPC string
	// Pool is where a new interface's address is allocated. Required for
	// the internet (PublicPool or SimPool); for a VPC the zero value means
	// the whole CIDR. Interfaces read back from the kernel leave it zero.
	Pool netip.Prefix
}

// Internet is the internet, allocating from pool.
func Internet(pool netip.Prefix) NetRef { return NetRef{Pool: pool} }

// InVPC is VPC id's network, allocating from its whole CIDR.
func InVPC(id string) NetRef { return NetRef{VPC: id} }

// String returns the network's key: "inet" or "vpc:<id>".
func (r NetRef) String() string {
	if r.VPC == "" {
		return "inet"
	}
	return "vpc:" + r.VPC
}

// Same reports whether r and o are the same network (pools aside).
func (r NetRef) Same(o NetRef) bool { return r.VPC == o.VPC }

const (
	netAliasPrefix  = "moat:net="
	linkAliasPrefix = "moat:link="
)

func parseNetAlias(alias string) (NetRef, bool) {
	key, ok := strings.CutPrefix(alias, netAliasPrefix)
	if !ok {
		return NetRef{}, false
	}
	if key == "inet" {
		return NetRef{}, true
	}
	if id, ok := strings.CutPrefix(key, "vpc:"); ok && id != "" {
		return NetRef{VPC: id}, true
	}
	return NetRef{}, false
}

// network is a bridge as read from the kernel.
type network struct {
	ref     NetRef
	ns      string       // namespace holding the bridge
	subnet  netip.Prefix // on-link subnet
	gateway netip.Addr   // the bridge's address
}

// VPC is a VPC's router as read from the kernel.
type VPC struct {
	ID string
	// NS is the router's namespace.
	NS string
	// CIDR is the VPC's CIDR, held by the router's bridge.
	CIDR netip.Prefix
	// Gateway is the bridge's address (the CIDR's first address), the
	// default gateway of the VPC's hosts.
	Gateway netip.Addr
}

// Interface is one of a namespace's interfaces on a network.
type Interface struct {
	// Name is the interface's name inside the namespace ("eth0").
	Name string
	// Net is the network it is attached to (Pool left zero).
	Net NetRef
	// Addr is its address with the network's prefix length.
	Addr netip.Prefix
	// Default reports whether the namespace's default route goes out
	// through it.
	Default bool
}

// Host is a host namespace as read from the kernel.
type Host struct {
	Name string
	// NS is the host's namespace, for Exec, Do and SetResolver.
	NS string
	// Interfaces are its network interfaces, by name.
	Interfaces []Interface
}

// Addr returns h's address on network r, if it has one.
func (h Host) Addr(r NetRef) (netip.Addr, bool) {
	for _, i := range h.Interfaces {
		if i.Net.Same(r) {
			return i.Addr.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// EnsureInternet creates the internet namespace and its bridge, holding
// InternetGateway, with forwarding on. It is idempotent.
func (c *Cloud) EnsureInternet(ctx context.Context) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.ensureBridge(ctx, c.InternetNS(), netip.PrefixFrom(InternetGateway, InternetSubnet.Bits())); err != nil {
		return fmt.Errorf("ensure internet: %w", err)
	}
	return nil
}

// EnsureVPC creates VPC id's router namespace with a bridge holding the
// CIDR's first address, with forwarding on. It is idempotent; an existing
// router with another CIDR is an ErrExists error.
func (c *Cloud) EnsureVPC(ctx context.Context, id string, cidr netip.Prefix) (VPC, error) {
	if err := checkName("vpc", id); err != nil {
		return VPC{}, err
	}
	if !cidr.Addr().Is4() || cidr.Masked() != cidr || cidr.Bits() > 28 || cidr.Bits() < 8 {
		return VPC{}, fmt.Errorf("ensure vpc %s: cidr %v: want a canonical IPv4 prefix from /8 to /28", id, cidr)
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return VPC{}, err
	}
	defer unlock()
	ns := c.RouterNS(id)
	if nsExists(ns) {
		if n, err := c.network(InVPC(id)); err == nil && n.subnet != cidr {
			return VPC{}, fmt.Errorf("ensure vpc %s with %v: it has %v: %w", id, cidr, n.subnet, ErrExists)
		}
	}
	gw := cidr.Addr().Next()
	if err := c.ensureBridge(ctx, ns, netip.PrefixFrom(gw, cidr.Bits())); err != nil {
		return VPC{}, fmt.Errorf("ensure vpc %s: %w", id, err)
	}
	return VPC{ID: id, NS: ns, CIDR: cidr, Gateway: gw}, nil
}

// VPCs lists the VPC routers.
func (c *Cloud) VPCs(ctx context.Context) ([]VPC, error) {
	nss, err := c.namespaces()
	if err != nil {
		return nil, err
	}
	var out []VPC
	for _, ns := range nss {
		id, ok := strings.CutPrefix(ns, c.prefix+"r-")
		if !ok {
			continue
		}
		n, err := c.network(InVPC(id))
		if err != nil {
			return nil, err
		}
		out = append(out, VPC{ID: id, NS: ns, CIDR: n.subnet, Gateway: n.gateway})
	}
	return out, nil
}

// RemoveVPC deletes VPC id's router namespace, and with it its bridge and
// its peering links. It refuses with ErrInUse while any namespace still has
// an interface on the VPC. A missing VPC is not an error.
func (c *Cloud) RemoveVPC(ctx context.Context, id string) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	ns := c.RouterNS(id)
	if !nsExists(ns) {
		return nil
	}
	users, err := c.attached(InVPC(id))
	if err != nil {
		return fmt.Errorf("remove vpc %s: %w", id, err)
	}
	if len(users) > 0 {
		return fmt.Errorf("remove vpc %s: attached: %s: %w", id, strings.Join(users, ", "), ErrInUse)
	}
	if err := c.deleteNS(ctx, ns); err != nil {
		return fmt.Errorf("remove vpc %s: %w", id, err)
	}
	return nil
}

// ensureBridge makes ns (forwarding on) hold bridge br0, up, with addr.
func (c *Cloud) ensureBridge(ctx context.Context, ns string, addr netip.Prefix) error {
	if err := c.ensureNS(ctx, ns, true); err != nil {
		return err
	}
	return c.withNetlink(ns, func(h *netlink.Handle) error {
		br, err := h.LinkByName(bridgeName)
		if err != nil {
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName, TxQLen: -1}}); err != nil {
				return fmt.Errorf("add bridge: %w", err)
			}
			if br, err = h.LinkByName(bridgeName); err != nil {
				return fmt.Errorf("find bridge: %w", err)
			}
		}
		// Pin the bridge's MAC address. Left alone, a Linux bridge takes
		// the lowest MAC of its ports and changes it when a port joins or
		// leaves, and every neighbour's ARP entry for the gateway goes
		// stale until it is probed again: seconds without a gateway (seen
		// as DNS lookups through a NAT failing when another VPC's uplink
		// joined the internet bridge). A MAC set explicitly never changes.
		if err := h.LinkSetHardwareAddr(br, br.Attrs().HardwareAddr); err != nil {
			return fmt.Errorf("pin bridge address: %w", err)
		}
		addrs, err := h.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list bridge addresses: %w", err)
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return toPrefix(a.IPNet) == addr }) {
			if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixNet(addr)}); err != nil {
				return fmt.Errorf("add %v to bridge: %w", addr, err)
			}
		}
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge up: %w", err)
		}
		return nil
	})
}

// network reads network r's bridge from the kernel.
func (c *Cloud) network(r NetRef) (network, error) {
	n := network{ref: NetRef{VPC: r.VPC}, ns: c.InternetNS()}
	if r.VPC != "" {
		n.ns = c.RouterNS(r.VPC)
	}
	if !nsExists(n.ns) {
		return network{}, fmt.Errorf("network %v: %w", r, ErrNotFound)
	}
	err := c.withNetlink(n.ns, func(h *netlink.Handle) error {
		br, err := h.LinkByName(bridgeName)
		if err != nil {
			return fmt.Errorf("find bridge: %w", ErrNotFound)
		}
		addrs, err := h.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list bridge addresses: %w", err)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("bridge has no address: %w", ErrNotFound)
		}
		p := toPrefix(addrs[0].IPNet)
		n.gateway, n.subnet = p.Addr(), p.Masked()
		return nil
	})
	if err != nil {
		return network{}, fmt.Errorf("network %v: %w", r, err)
	}
	return n, nil
}

// AddHost makes host name exist with an interface on network r: a
// namespace (loopback up) with a veth into r's bridge, an address from r's
// pool, and its default route through r's gateway. It is idempotent: a
// host that already has an interface on r is returned as it is, keeping
// its address. A host with interfaces on other networks only is an
// ErrExists error (use AttachInterface).
func (c *Cloud) AddHost(ctx context.Context, name string, r NetRef) (Host, error) {
	if err := checkName("host", name); err != nil {
		return Host{}, err
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return Host{}, err
	}
	defer unlock()
	ns := c.HostNS(name)
	n, err := c.network(r)
	if err != nil {
		return Host{}, fmt.Errorf("add host %s: %w", name, err)
	}
	if err := c.ensureNS(ctx, ns, false); err != nil {
		return Host{}, fmt.Errorf("add host %s: %w", name, err)
	}
	ifs, err := c.interfaces(ns, true)
	if err != nil {
		return Host{}, fmt.Errorf("add host %s: %w", name, err)
	}
	if !slices.ContainsFunc(ifs, func(i Interface) bool { return i.Net.Same(r) }) {
		if len(ifs) > 0 {
			return Host{}, fmt.Errorf("add host %s on %v: it is on %v: %w", name, r, ifs[0].Net, ErrExists)
		}
		if _, err := c.attach(ns, n, r.Pool); err != nil {
			return Host{}, fmt.Errorf("add host %s: %w", name, err)
		}
	}
	if err := c.ensureDefault(ns); err != nil {
		return Host{}, fmt.Errorf("add host %s: %w", name, err)
	}
	return c.host(name)
}

// RemoveHost deletes host name's namespace, its interfaces and its
// resolver file. A missing host is not an error.
func (c *Cloud) RemoveHost(ctx context.Context, name string) error {
	if err := checkName("host", name); err != nil {
		return err
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.deleteNS(ctx, c.HostNS(name)); err != nil {
		return fmt.Errorf("remove host %s: %w", name, err)
	}
	return nil
}

// Host reads host name back from the kernel; ErrNotFound if it does not
// exist.
func (c *Cloud) Host(ctx context.Context, name string) (Host, error) {
	if err := checkName("host", name); err != nil {
		return Host{}, err
	}
	return c.host(name)
}

func (c *Cloud) host(name string) (Host, error) {
	ns := c.HostNS(name)
	if !nsExists(ns) {
		return Host{}, fmt.Errorf("host %s: %w", name, ErrNotFound)
	}
	ifs, err := c.interfaces(ns, false)
	if err != nil {
		return Host{}, fmt.Errorf("host %s: %w", name, err)
	}
	return Host{Name: name, NS: ns, Interfaces: ifs}, nil
}

// Hosts lists the hosts, sorted by name.
func (c *Cloud) Hosts(ctx context.Context) ([]Host, error) {
	nss, err := c.namespaces()
	if err != nil {
		return nil, err
	}
	var out []Host
	for _, ns := range nss {
		name, ok := strings.CutPrefix(ns, c.prefix+"h-")
		if !ok {
			continue
		}
		h, err := c.host(name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// AttachInterface gives namespace ns (a host's, or a VPC router's for an
// uplink) an interface on network r with an address from r's pool. The
// default route is left alone, unless ns has none: then it goes through r.
// It is idempotent: an existing interface on r is returned as it is.
func (c *Cloud) AttachInterface(ctx context.Context, ns string, r NetRef) (Interface, error) {
	unlock, err := c.lock(ctx)
	if err != nil {
		return Interface{}, err
	}
	defer unlock()
	n, err := c.network(r)
	if err != nil {
		return Interface{}, fmt.Errorf("attach %s: %w", ns, err)
	}
	ifs, err := c.interfaces(ns, true)
	if err != nil {
		return Interface{}, fmt.Errorf("attach %s: %w", ns, err)
	}
	i := slices.IndexFunc(ifs, func(i Interface) bool { return i.Net.Same(r) })
	var ifc Interface
	if i >= 0 {
		ifc = ifs[i]
	} else if ifc, err = c.attach(ns, n, r.Pool); err != nil {
		return Interface{}, fmt.Errorf("attach %s: %w", ns, err)
	}
	if err := c.ensureDefault(ns); err != nil {
		return Interface{}, fmt.Errorf("attach %s: %w", ns, err)
	}
	ifs, err = c.interfaces(ns, false)
	if err != nil {
		return Interface{}, fmt.Errorf("attach %s: %w", ns, err)
	}
	for _, i := range ifs {
		if i.Name == ifc.Name {
			return i, nil
		}
	}
	return ifc, nil
}

// DetachInterface removes ns's interface on network r (and its address).
// If the default route went through it, it moves to a remaining interface.
// A missing interface is not an error.
func (c *Cloud) DetachInterface(ctx context.Context, ns string, r NetRef) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	err = c.withNetlink(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if nr, ok := parseNetAlias(l.Attrs().Alias); ok && nr.Same(r) {
				if err := h.LinkDel(l); err != nil {
					return fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
				}
			}
		}
		return nil
	})
	if err == nil {
		err = c.ensureDefault(ns)
	}
	if err != nil {
		return fmt.Errorf("detach %s from %v: %w", ns, r, err)
	}
	return nil
}

// SetDefaultRoute sends ns's default route through its interface on
// network r, to r's gateway.
func (c *Cloud) SetDefaultRoute(ctx context.Context, ns string, r NetRef) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.setDefault(ns, r); err != nil {
		return fmt.Errorf("set default route of %s: %w", ns, err)
	}
	return nil
}

func (c *Cloud) setDefault(ns string, r NetRef) error {
	n, err := c.network(r)
	if err != nil {
		return err
	}
	return c.withNetlink(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if nr, ok := parseNetAlias(l.Attrs().Alias); ok && nr.Same(r) {
				rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst(), Gw: n.gateway.AsSlice()}
				if err := h.RouteReplace(rt); err != nil {
					return fmt.Errorf("default via %v: %w", n.gateway, err)
				}
				return nil
			}
		}
		return fmt.Errorf("no interface on %v: %w", r, ErrNotFound)
	})
}

// ensureDefault gives ns a default route through its first interface if it
// has none.
func (c *Cloud) ensureDefault(ns string) error {
	ifs, err := c.interfaces(ns, false)
	if err != nil {
		return err
	}
	if len(ifs) == 0 || slices.ContainsFunc(ifs, func(i Interface) bool { return i.Default }) {
		return nil
	}
	return c.setDefault(ns, ifs[0].Net)
}

// interfaces reads ns's network interfaces, sorted by name. With sweep, it
// first deletes veths left without an alias by an interrupted attach.
func (c *Cloud) interfaces(ns string, sweep bool) ([]Interface, error) {
	var out []Interface
	err := c.withNetlink(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		defIdx := 0
		for _, rt := range routes {
			if isDefault(rt.Dst) && rt.Gw != nil {
				defIdx = rt.LinkIndex
			}
		}
		for _, l := range links {
			a := l.Attrs()
			r, ok := parseNetAlias(a.Alias)
			if !ok {
				if _, veth := l.(*netlink.Veth); sweep && veth && a.Alias == "" {
					// Both ends may be here: the first deletion takes both.
					if err := h.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
						return fmt.Errorf("delete unfinished %s: %w", a.Name, err)
					}
				}
				continue
			}
			ifc := Interface{Name: a.Name, Net: r, Default: a.Index == defIdx}
			addrs, err := h.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", a.Name, err)
			}
			if len(addrs) > 0 {
				ifc.Addr = toPrefix(addrs[0].IPNet)
			}
			out = append(out, ifc)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Interface) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// attached lists the namespaces with an interface on r.
func (c *Cloud) attached(r NetRef) ([]string, error) {
	nss, err := c.namespaces()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range nss {
		ifs, err := c.interfaces(ns, false)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(ifs, func(i Interface) bool { return i.Net.Same(r) }) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// used returns the addresses in use on network n.
func (c *Cloud) used(n network) (map[netip.Addr]bool, error) {
	nss, err := c.namespaces()
	if err != nil {
		return nil, err
	}
	used := map[netip.Addr]bool{n.gateway: true}
	for _, ns := range nss {
		ifs, err := c.interfaces(ns, false)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, i := range ifs {
			if i.Net.Same(n.ref) && i.Addr.IsValid() {
				used[i.Addr.Addr()] = true
			}
		}
	}
	return used, nil
}

// allocate picks the lowest free address of pool (the whole subnet when
// zero) on network n.
func (c *Cloud) allocate(n network, pool netip.Prefix) (netip.Addr, error) {
	if !pool.IsValid() {
		if n.ref.VPC == "" {
			return netip.Addr{}, errors.New("an internet address needs a pool (PublicPool or SimPool)")
		}
		pool = n.subnet
	}
	if pool.Masked() != pool || !n.subnet.Contains(pool.Addr()) || pool.Bits() < n.subnet.Bits() {
		return netip.Addr{}, fmt.Errorf("pool %v is not inside %v", pool, n.subnet)
	}
	used, err := c.used(n)
	if err != nil {
		return netip.Addr{}, err
	}
	last := lastAddr(n.subnet)
	for a := pool.Addr(); pool.Contains(a); a = a.Next() {
		switch {
		case a == n.subnet.Addr(), a == last, used[a]:
			continue
		case n.ref.VPC == "" && InfraPool.Contains(a):
			continue
		case n.subnet.Bits() < 24 && (a.As4()[3] == 0 || a.As4()[3] == 255):
			continue // valid, but confusing to read
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("pool %v: %w", pool, ErrExhausted)
}

// attach creates ns's interface on network n: a veth whose other end is a
// port of n's bridge, an address from pool, up. The interface's alias, set
// last, marks it complete.
func (c *Cloud) attach(ns string, n network, pool netip.Prefix) (Interface, error) {
	addr, err := c.allocate(n, pool)
	if err != nil {
		return Interface{}, err
	}
	ifc := Interface{Net: n.ref, Addr: netip.PrefixFrom(addr, n.subnet.Bits())}
	port := "v" + randHex(6)
	err = c.withNetlink(ns, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for k := 0; ; k++ {
			name := fmt.Sprintf("eth%d", k)
			if !slices.ContainsFunc(links, func(l netlink.Link) bool { return l.Attrs().Name == name }) {
				ifc.Name = name
				break
			}
		}
		return c.withNS(n.ns, func(bfd netns.NsHandle, bh *netlink.Handle) error {
			veth := &netlink.Veth{
				// The MAC follows the address: an address given back to
				// a host (detach, then attach again) keeps its MAC, so
				// the neighbours' ARP entries stay right instead of
				// blackholing it until they expire.
				LinkAttrs:     netlink.LinkAttrs{Name: ifc.Name, TxQLen: -1, HardwareAddr: MACFor(ifc.Addr.Addr())},
				PeerName:      port,
				PeerNamespace: netlink.NsFd(bfd),
			}
			if err := h.LinkAdd(veth); err != nil {
				return fmt.Errorf("add veth %s: %w", ifc.Name, err)
			}
			br, err := bh.LinkByName(bridgeName)
			if err != nil {
				return fmt.Errorf("find bridge in %s: %w", n.ns, err)
			}
			p, err := bh.LinkByName(port)
			if err != nil {
				return fmt.Errorf("find port %s in %s: %w", port, n.ns, err)
			}
			_ = bh.LinkSetAlias(p, "moat:port="+ns+"/"+ifc.Name) // informative only
			if err := bh.LinkSetMaster(p, br); err != nil {
				return fmt.Errorf("enslave port %s: %w", port, err)
			}
			if err := bh.LinkSetUp(p); err != nil {
				return fmt.Errorf("set port %s up: %w", port, err)
			}
			l, err := h.LinkByName(ifc.Name)
			if err != nil {
				return err
			}
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(ifc.Addr)}); err != nil {
				return fmt.Errorf("add %v to %s: %w", ifc.Addr, ifc.Name, err)
			}
			if err := h.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", ifc.Name, err)
			}
			// Packets sent before the kernel's link watcher has run
			// are dropped (no qdisc yet): wait for it at both ends and
			// on the bridge, so the first packet is not lost.
			if err := waitOperUp(h, ifc.Name); err != nil {
				return err
			}
			if err := waitOperUp(bh, port); err != nil {
				return err
			}
			if err := waitOperUp(bh, bridgeName); err != nil {
				return err
			}
			if err := h.LinkSetAlias(l, netAliasPrefix+n.ref.String()); err != nil {
				return fmt.Errorf("mark %s: %w", ifc.Name, err)
			}
			return nil
		})
	})
	if err != nil {
		return Interface{}, err
	}
	return ifc, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:2*n]
}

func defaultDst() *net.IPNet {
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func toPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func sleepCtx(ctx context.Context) error {
	t := time.NewTimer(2 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitOperUp waits (up to 3 s) until the kernel reports interface name
// operationally up: only then has the link watcher given it a queue, and
// a packet sent earlier is dropped, costing the first connection a
// retransmission (1 s for ARP, more for TCP).
func waitOperUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", name, err)
		}
		if st := l.Attrs().OperState; st == netlink.OperUp || st == netlink.OperUnknown {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: still %v after 3s", name, l.Attrs().OperState)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// MACFor is the locally administered unicast MAC of an IPv4 address:
// 02:4d (for "Moat") and the address's four bytes. Interfaces get the MAC
// of their address, so an address that moves keeps its MAC.
func MACFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x4d, b[0], b[1], b[2], b[3]}
}
