package localcloud_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
)

func TestNewPrefix(t *testing.T) {
	for _, p := range []string{"moat-", "moat-ab12-", "moat-x-"} {
		if _, err := localcloud.New(localcloud.Config{Prefix: p}); err != nil {
			t.Errorf("New(%q) = %v, want ok", p, err)
		}
	}
	for _, p := range []string{"", "moat", "foo-", "moat-t-", "moat-h-", "moat-r-", "moat-inet-", "moat-a-b-", "moat-UP-", "moat-abcdefghijklm-"} {
		if _, err := localcloud.New(localcloud.Config{Prefix: p}); err == nil {
			t.Errorf("New(%q) = ok, want an error", p)
		}
	}
}

// newCloud returns a Cloud with a private prefix whose namespaces are all
// deleted when t ends.
func newCloud(t *testing.T) *localcloud.Cloud {
	t.Helper()
	c, _ := newCloudDir(t)
	return c
}

// newCloudDir is newCloud, also returning its lock (and registry)
// directory.
func newCloudDir(t *testing.T) (*localcloud.Cloud, string) {
	t.Helper()
	netnstest.New(t) // skips, with the reason, where namespaces cannot be made
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir := t.TempDir()
	c, err := localcloud.New(localcloud.Config{Prefix: "moat-lc" + hex.EncodeToString(b[:]) + "-", LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left := namespacesWithPrefix(t, c.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after cleanup: %v", left)
		}
	})
	return c, dir
}

func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func addHost(t *testing.T, c *localcloud.Cloud, name string, r localcloud.NetRef) (localcloud.Host, netip.Addr) {
	t.Helper()
	h, err := c.AddHost(context.Background(), name, r)
	if err != nil {
		t.Fatalf("AddHost(%s, %v): %v", name, r, err)
	}
	a, ok := h.Addr(r)
	if !ok {
		t.Fatalf("AddHost(%s, %v) = %+v: no address on the network", name, r, h)
	}
	return h, a
}

// listen runs a TCP echo server on port 7 of every address inside ns.
func listen(t *testing.T, c *localcloud.Cloud, ns string) {
	t.Helper()
	var ln net.Listener
	err := c.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", ":7")
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); _, _ = io.Copy(conn, conn) }()
		}
	}()
}

// dial reports whether a TCP connection from ns to dst:7 succeeds and
// echoes.
func dial(t *testing.T, c *localcloud.Cloud, ns string, dst netip.Addr) error {
	t.Helper()
	var conn net.Conn
	err := c.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, 7).String(), 500*time.Millisecond)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		t.Fatalf("echo from %v = %q, want %q", dst, buf, "ping")
	}
	return nil
}

func TestInternet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatalf("EnsureInternet again: %v", err)
	}
	sim := localcloud.Internet(localcloud.SimPool)
	pub := localcloud.Internet(localcloud.PublicPool)
	laptop, laptopAddr := addHost(t, c, "laptop", sim)
	other, otherAddr := addHost(t, c, "other", sim)
	node, nodeAddr := addHost(t, c, "node1", pub)
	for _, tc := range []struct {
		addr netip.Addr
		pool netip.Prefix
	}{{laptopAddr, localcloud.SimPool}, {otherAddr, localcloud.SimPool}, {nodeAddr, localcloud.PublicPool}} {
		if !tc.pool.Contains(tc.addr) || localcloud.InfraPool.Contains(tc.addr) {
			t.Errorf("address %v: want one in %v outside %v", tc.addr, tc.pool, localcloud.InfraPool)
		}
	}
	if laptopAddr == otherAddr {
		t.Errorf("two hosts share %v", laptopAddr)
	}
	if i := node.Interfaces[0]; !i.Default || i.Addr.Bits() != 15 {
		t.Errorf("node interface = %+v, want the default route and a /15", i)
	}

	listen(t, c, node.NS)
	listen(t, c, laptop.NS)
	if err := dial(t, c, laptop.NS, nodeAddr); err != nil {
		t.Errorf("laptop -> node: %v", err)
	}
	if err := dial(t, c, node.NS, laptopAddr); err != nil {
		t.Errorf("node -> laptop: %v", err)
	}

	// Exec: stdin, stdout and the exit code pass through, over a real
	// connection made by socat inside the host.
	if _, err := exec.LookPath("socat"); err == nil {
		var out bytes.Buffer
		code, err := c.Exec(ctx, other.NS, []string{"socat", "-t1", "-", "TCP:" + nodeAddr.String() + ":7"}, strings.NewReader("hello\n"), &out, io.Discard)
		if err != nil || code != 0 || out.String() != "hello\n" {
			t.Errorf("Exec(socat to node) = %d, %v, output %q; want 0, nil, %q", code, err, out.String(), "hello\n")
		}
	}

	// Restart: a new Cloud with the same prefix finds everything, and
	// adding again keeps the addresses.
	c2, err := localcloud.New(localcloud.Config{Prefix: c.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := c2.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	if want := []string{"laptop", "node1", "other"}; !slices.Equal(names, want) {
		t.Errorf("Hosts() after restart = %v, want %v", names, want)
	}
	if _, a := addHost(t, c2, "laptop", sim); a != laptopAddr {
		t.Errorf("AddHost(laptop) again = %v, want %v", a, laptopAddr)
	}
	if _, err := c2.AddHost(ctx, "laptop", localcloud.InVPC("nope")); !errors.Is(err, localcloud.ErrNotFound) {
		t.Errorf("AddHost on a missing VPC = %v, want ErrNotFound", err)
	}
	if _, a := addHost(t, c2, "third", sim); a == laptopAddr || a == otherAddr {
		t.Errorf("third host got %v, already in use", a)
	}

	if err := c.RemoveHost(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveHost(ctx, "other"); err != nil {
		t.Errorf("RemoveHost twice: %v", err)
	}
	if _, err := c.Host(ctx, "other"); !errors.Is(err, localcloud.ErrNotFound) {
		t.Errorf("Host(removed) = %v, want ErrNotFound", err)
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	h, _ := addHost(t, c, "box", localcloud.Internet(localcloud.SimPool))
	var out, errOut bytes.Buffer
	code, err := c.Exec(ctx, h.NS, []string{"sh", "-c", "cat; echo oops >&2; exit 3"}, strings.NewReader("in put"), &out, &errOut)
	if err != nil || code != 3 || out.String() != "in put" || errOut.String() != "oops\n" {
		t.Errorf("Exec = %d, %v, stdout %q, stderr %q; want 3, nil, %q, %q", code, err, out.String(), errOut.String(), "in put", "oops\n")
	}
	out.Reset()
	if code, err := c.Exec(ctx, h.NS, []string{"ip", "-o", "-4", "addr", "show", "eth0"}, nil, &out, nil); err != nil || code != 0 || !strings.Contains(out.String(), "198.19.") {
		t.Errorf("Exec(ip addr) = %d, %v, %q; want an address in 198.19/16", code, err, out.String())
	}
	if _, err := c.Exec(ctx, h.NS, []string{"no-such-command-here"}, nil, nil, nil); err == nil {
		t.Error("Exec(missing command): want an error")
	}
	if _, err := c.Exec(ctx, c.HostNS("ghost"), []string{"true"}, nil, nil, nil); !errors.Is(err, localcloud.ErrNotFound) {
		t.Errorf("Exec in a missing host = %v, want ErrNotFound", err)
	}
	if _, err := c.Exec(ctx, "moat-t-notours", []string{"true"}, nil, nil, nil); err == nil {
		t.Error("Exec in a foreign namespace: want an error")
	}

	if err := c.SetResolver(h.NS, netip.MustParseAddr("198.18.0.53")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := c.Exec(ctx, h.NS, []string{"cat", "/etc/resolv.conf"}, nil, &out, nil); err != nil || out.String() != "nameserver 198.18.0.53\n" {
		t.Errorf("resolv.conf inside = %q, %v; want the resolver", out.String(), err)
	}
	if err := c.RemoveHost(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/netns/" + h.NS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resolver directory after RemoveHost: %v, want gone", err)
	}
}

func TestCleanupOnlyOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	neighbour := newCloud(t)
	foreign := netnstest.New(t) // moat-t-…, another owner
	for _, cl := range []*localcloud.Cloud{c, neighbour} {
		if err := cl.EnsureInternet(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.EnsureVPC(ctx, "vpc-1", netip.MustParsePrefix("10.1.0.0/24")); err != nil {
			t.Fatal(err)
		}
		addHost(t, cl, "a", localcloud.Internet(localcloud.SimPool))
		addHost(t, cl, "b", localcloud.InVPC("vpc-1"))
	}
	if got := namespacesWithPrefix(t, c.Prefix()); len(got) != 4 {
		t.Errorf("namespaces = %v, want 4", got)
	}
	if err := c.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := namespacesWithPrefix(t, c.Prefix()); len(got) != 0 {
		t.Errorf("after Cleanup: %v left", got)
	}
	if got := namespacesWithPrefix(t, neighbour.Prefix()); len(got) != 4 {
		t.Errorf("neighbour's namespaces after Cleanup = %v, want 4", got)
	}
	if got := namespacesWithPrefix(t, foreign.Name); len(got) != 1 {
		t.Errorf("foreign namespace %s gone after Cleanup", foreign.Name)
	}
}

func TestVPC(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix("10.0.0.0/17")
	v, err := c.EnsureVPC(ctx, "vpc-a", cidr)
	if err != nil {
		t.Fatal(err)
	}
	if v.Gateway != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("gateway = %v, want 10.0.0.1", v.Gateway)
	}
	if _, err := c.EnsureVPC(ctx, "vpc-a", cidr); err != nil {
		t.Errorf("EnsureVPC again: %v", err)
	}
	if _, err := c.EnsureVPC(ctx, "vpc-a", netip.MustParsePrefix("10.9.0.0/16")); !errors.Is(err, localcloud.ErrExists) {
		t.Errorf("EnsureVPC with another CIDR = %v, want ErrExists", err)
	}
	if _, err := c.EnsureVPC(ctx, "vpc-b", netip.MustParsePrefix("10.0.0.7/17")); err == nil {
		t.Error("EnsureVPC(10.0.0.7/17): want an error for a non-canonical CIDR")
	}
	inVPC := localcloud.InVPC("vpc-a")
	inside, insideAddr := addHost(t, c, "inside", inVPC)
	if !cidr.Contains(insideAddr) || insideAddr == v.Gateway {
		t.Errorf("VPC host address %v: want one in %v other than the gateway", insideAddr, cidr)
	}
	if len(inside.Interfaces) != 1 {
		t.Errorf("VPC host interfaces = %+v, want one (none on the internet)", inside.Interfaces)
	}
	pub := localcloud.Internet(localcloud.PublicPool)
	node, nodePub := addHost(t, c, "node", pub)
	laptop, _ := addHost(t, c, "laptop", localcloud.Internet(localcloud.SimPool))
	listen(t, c, node.NS)
	listen(t, c, inside.NS)
	listen(t, c, laptop.NS)

	// The VPC has no path to the internet bridge, and the other way round.
	if err := dial(t, c, inside.NS, nodePub); err == nil {
		t.Error("VPC host -> internet node: connected, want no path")
	}
	if err := dial(t, c, laptop.NS, insideAddr); err == nil {
		t.Error("internet host -> VPC host: connected, want no path")
	}

	// Attach the node to the VPC too; then drop its internet interface.
	ifc, err := c.AttachInterface(ctx, node.NS, inVPC)
	if err != nil {
		t.Fatal(err)
	}
	if !cidr.Contains(ifc.Addr.Addr()) || ifc.Addr.Addr() == insideAddr || ifc.Default {
		t.Errorf("attached interface = %+v, want a new address in %v, not the default route", ifc, cidr)
	}
	if again, err := c.AttachInterface(ctx, node.NS, inVPC); err != nil || again.Addr != ifc.Addr {
		t.Errorf("AttachInterface again = %+v, %v; want %+v", again, err, ifc)
	}
	if err := dial(t, c, inside.NS, ifc.Addr.Addr()); err != nil {
		t.Errorf("VPC host -> node's VPC address: %v", err)
	}
	if err := dial(t, c, laptop.NS, nodePub); err != nil {
		t.Errorf("laptop -> node's public address while attached to both: %v", err)
	}
	if err := c.RemoveVPC(ctx, "vpc-a"); !errors.Is(err, localcloud.ErrInUse) {
		t.Errorf("RemoveVPC with hosts attached = %v, want ErrInUse", err)
	}
	if err := c.DetachInterface(ctx, node.NS, pub); err != nil {
		t.Fatal(err)
	}
	h, err := c.Host(ctx, "node")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Interfaces) != 1 || !h.Interfaces[0].Net.Same(inVPC) || !h.Interfaces[0].Default {
		t.Errorf("node after detach = %+v, want only its VPC interface, with the default route", h.Interfaces)
	}
	if err := dial(t, c, laptop.NS, nodePub); err == nil {
		t.Error("laptop -> node's old public address after detach: connected")
	}
	if err := dial(t, c, inside.NS, ifc.Addr.Addr()); err != nil {
		t.Errorf("VPC host -> node after detach: %v", err)
	}

	vpcs, err := c.VPCs(ctx)
	if err != nil || len(vpcs) != 1 || vpcs[0] != v {
		t.Errorf("VPCs() = %+v, %v; want [%+v]", vpcs, err, v)
	}
	for _, name := range []string{"node", "inside"} {
		if err := c.RemoveHost(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RemoveVPC(ctx, "vpc-a"); err != nil {
		t.Errorf("RemoveVPC: %v", err)
	}
}

func TestLinkAndRoutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	prov, err := c.EnsureVPC(ctx, "prov", netip.MustParsePrefix("10.0.0.0/17"))
	if err != nil {
		t.Fatal(err)
	}
	cust, err := c.EnsureVPC(ctx, "cust", netip.MustParsePrefix("172.31.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	node, nodeAddr := addHost(t, c, "node", localcloud.InVPC("prov"))
	client, _ := addHost(t, c, "client", localcloud.InVPC("cust"))
	listen(t, c, node.NS)

	l, err := c.Link(ctx, "pcx-1", prov.NS, cust.NS)
	if err != nil {
		t.Fatal(err)
	}
	if l.Up || !localcloud.LinkPool.Contains(l.AAddr) || l.BAddr != l.AAddr.Next() {
		t.Errorf("new link = %+v, want not forwarding, a /31 in %v", l, localcloud.LinkPool)
	}
	// Routes can go in before the link forwards.
	if err := c.AddRoute(ctx, prov.NS, cust.CIDR, l.BAddr); err != nil {
		t.Fatal(err)
	}
	if err := c.AddRoute(ctx, cust.NS, prov.CIDR, l.AAddr); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, c, client.NS, nodeAddr); err == nil {
		t.Error("customer -> node over a link not forwarding: connected")
	}
	if err := l.SetUp(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, c, client.NS, nodeAddr); err != nil {
		t.Errorf("customer -> node over a forwarding link: %v", err)
	}
	// After a restart the same handle comes back.
	again, err := c.Link(ctx, "pcx-1", prov.NS, cust.NS)
	if err != nil || !again.Up || again.AAddr != l.AAddr || again.BAddr != l.BAddr {
		t.Errorf("Link again = %+v, %v; want %+v", again, err, l)
	}
	routes, err := c.Routes(ctx, cust.NS)
	if want := []localcloud.Route{{Dst: prov.CIDR, Via: l.AAddr}}; err != nil || !slices.Equal(routes, want) {
		t.Errorf("Routes(customer router) = %v, %v; want %v", routes, err, want)
	}
	if err := c.DeleteRoute(ctx, cust.NS, prov.CIDR); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, c, client.NS, nodeAddr); err == nil {
		t.Error("customer -> node without the customer's route: connected")
	}
	if err := c.AddRoute(ctx, cust.NS, prov.CIDR, l.AAddr); err != nil {
		t.Fatal(err)
	}
	if err := l.SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, c, client.NS, nodeAddr); err == nil {
		t.Error("customer -> node after the link stopped forwarding: connected")
	}
	// A second link from the same router gets another /31.
	third, err := c.EnsureVPC(ctx, "third", netip.MustParsePrefix("192.168.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := c.Link(ctx, "pcx-2", prov.NS, third.NS)
	if err != nil {
		t.Fatal(err)
	}
	if l2.AAddr == l.AAddr || l2.IfName == l.IfName {
		t.Errorf("second link %+v collides with %+v", l2, l)
	}
	if err := l.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(ctx); err != nil {
		t.Errorf("Remove twice: %v", err)
	}
	if routes, _ := c.Routes(ctx, prov.NS); len(routes) != 0 {
		t.Errorf("routes through a removed link: %v, want none", routes)
	}
}

func TestConcurrentAddsAndLeftovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	// Two Clouds over one prefix (two processes, say) adding at once never
	// hand out one address twice.
	c2, err := localcloud.New(localcloud.Config{Prefix: c.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	c, c2 = mustSameLock(t, c, c2)
	const n = 8
	errc := make(chan error, n)
	for i := range n {
		cl := c
		if i%2 == 1 {
			cl = c2
		}
		go func() {
			_, err := cl.AddHost(ctx, "h"+string(rune('a'+i)), localcloud.Internet(localcloud.SimPool))
			errc <- err
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := c.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, h := range hosts {
		a, _ := h.Addr(localcloud.NetRef{})
		if prev, ok := seen[a]; ok {
			t.Errorf("%s and %s share %v", prev, h.Name, a)
		}
		seen[a] = h.Name
	}
	if len(seen) != n {
		t.Errorf("%d hosts with addresses, want %d", len(seen), n)
	}

	// A veth left half-made by a crash (no alias) is swept on the next
	// attach.
	h := hosts[0]
	if _, err := c.Exec(ctx, h.NS, []string{"ip", "link", "add", "eth1", "type", "veth", "peer", "name", "junk"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureVPC(ctx, "v", netip.MustParsePrefix("10.2.0.0/24")); err != nil {
		t.Fatal(err)
	}
	ifc, err := c.AttachInterface(ctx, h.NS, localcloud.InVPC("v"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Host(ctx, h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Interfaces) != 2 || ifc.Name != "eth1" {
		t.Errorf("after attach over a leftover: %+v (new %+v), want eth0 and a fresh eth1", got.Interfaces, ifc)
	}
	var out bytes.Buffer
	if _, err := c.Exec(ctx, h.NS, []string{"ip", "-o", "link"}, nil, &out, nil); err != nil || strings.Contains(out.String(), "junk") {
		t.Errorf("links inside: %s, %v; want the leftover gone", out.String(), err)
	}
}

// mustSameLock returns a and b sharing one lock directory (b was made with
// the default one).
func mustSameLock(t *testing.T, a, b *localcloud.Cloud) (*localcloud.Cloud, *localcloud.Cloud) {
	t.Helper()
	dir := t.TempDir()
	a2, err := localcloud.New(localcloud.Config{Prefix: a.Prefix(), LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := localcloud.New(localcloud.Config{Prefix: b.Prefix(), LockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return a2, b2
}
