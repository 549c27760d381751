// Package localcloud is the local cloud substrate: network namespaces,
// bridges, veth links, addresses and routes on this machine, standing in for
// a cloud's networks. The local provider (internal/provider/local) and the
// simulated customer cloud (internal/sim) both stand on it, as the aws
// provider and a real tenant both stand on AWS. It imports no product or
// simulator package.
//
// A Cloud owns every namespace whose name is its prefix followed by one of
// its kinds: "<prefix>inet" (the internet: a bridge), "<prefix>r-<vpc>"
// (a VPC router: a bridge holding the VPC's gateway address) and
// "<prefix>h-<host>" (a host). It never touches another name, so clouds with
// different prefixes (a test's, `moat up`'s) coexist and Cleanup removes
// exactly its own.
//
// The kernel is the only state: namespaces are listed from /run/netns,
// interfaces carry their network in their alias ("moat:net=inet",
// "moat:net=vpc:<id>", "moat:link=<name>"), addresses are read back. A Cloud
// opened again after a restart finds what the previous one made, and every
// Ensure/Add call is idempotent. Mutations are serialised across processes
// with a lock file under /run/moat.
//
// Nothing is ever added to the caller's own namespace. Work inside a
// namespace is done through netlink handles bound to it, or on a dedicated
// OS thread that is locked and discarded afterwards (Do); commands run with
// `ip netns exec` (Exec).
package localcloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moatdb/moat/internal/atomicfile"
)

// Errors callers branch on.
var (
	// ErrNotFound: the host, VPC, network, interface or link does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the object exists with a different shape (another
	// network, another CIDR).
	ErrExists = errors.New("already exists differently")
	// ErrInUse: the VPC still has interfaces attached to it.
	ErrInUse = errors.New("in use")
	// ErrExhausted: no free address is left in the pool.
	ErrExhausted = errors.New("address pool exhausted")
)

const (
	netnsDir    = "/run/netns"
	etcNetnsDir = "/etc/netns"
	// DefaultLockDir holds the lock files that serialise mutations.
	DefaultLockDir = "/run/moat"
)

// Config configures a Cloud.
type Config struct {
	// Prefix starts the name of every namespace the Cloud owns: "moat-"
	// for `moat up`, or "moat-<tag>-" with a tag of 1 to 12 lowercase
	// letters and digits (not "h", "r", "t" or "inet") for a private
	// instance, such as a test's.
	Prefix string
	// LockDir is where the cross-process lock file lives; DefaultLockDir
	// when empty.
	LockDir string
	// StateDir holds the cloud's registry ("localcloud-<prefix>state.json":
	// peering requests, VPC owners, the clock's offset); LockDir when
	// empty. Like the namespaces, it may live on tmpfs: a reboot loses
	// both together.
	StateDir string
	// Now is the base of the cloud's clock; time.Now when nil. The clock
	// is Now plus the offset AdvanceClock moves (see Cloud.Now).
	Now func() time.Time
}

// Cloud is the local cloud rooted at one name prefix. Its methods are safe
// for concurrent use, also by several Clouds with the same prefix in one or
// several processes.
type Cloud struct {
	prefix    string
	lockPath  string
	statePath string
	now       func() time.Time
}

var prefixRE = regexp.MustCompile(`^moat-(?:([a-z0-9]{1,12})-)?$`)

// New returns the Cloud rooted at cfg.Prefix. It creates nothing.
func New(cfg Config) (*Cloud, error) {
	m := prefixRE.FindStringSubmatch(cfg.Prefix)
	if m == nil {
		return nil, fmt.Errorf("localcloud: prefix %q: want \"moat-\" or \"moat-<tag>-\"", cfg.Prefix)
	}
	switch m[1] {
	case "h", "r", "t", "inet":
		return nil, fmt.Errorf("localcloud: prefix %q: tag %q is reserved", cfg.Prefix, m[1])
	}
	dir := cfg.LockDir
	if dir == "" {
		dir = DefaultLockDir
	}
	sdir := cfg.StateDir
	if sdir == "" {
		sdir = dir
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Cloud{
		prefix:    cfg.Prefix,
		lockPath:  filepath.Join(dir, "localcloud-"+cfg.Prefix+"lock"),
		statePath: filepath.Join(sdir, "localcloud-"+cfg.Prefix+"state.json"),
		now:       now,
	}, nil
}

// Prefix returns the Cloud's namespace name prefix.
func (c *Cloud) Prefix() string { return c.prefix }

// InternetNS is the name of the internet's namespace.
func (c *Cloud) InternetNS() string { return c.prefix + "inet" }

// RouterNS is the name of VPC id's router namespace.
func (c *Cloud) RouterNS(id string) string { return c.prefix + "r-" + id }

// HostNS is the name of host name's namespace.
func (c *Cloud) HostNS(name string) string { return c.prefix + "h-" + name }

// owns reports whether ns is one of c's namespaces by name.
func (c *Cloud) owns(ns string) bool {
	rest, ok := strings.CutPrefix(ns, c.prefix)
	if !ok {
		return false
	}
	return rest == "inet" || strings.HasPrefix(rest, "h-") || strings.HasPrefix(rest, "r-")
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,47}$`)

func checkName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1 to 48 of a-z 0-9 . _ - starting with a letter or digit", kind, name)
	}
	return nil
}

// lock takes the cross-process lock; the returned function releases it.
func (c *Cloud) lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(c.lockPath), 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	f, err := os.OpenFile(c.lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	// flock blocks without a context; holders keep it for milliseconds,
	// so poll the non-blocking form to honour ctx.
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", c.lockPath, err)
		}
		if err := sleepCtx(ctx); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", c.lockPath, err)
		}
	}
}

// namespaces lists c's namespaces.
// Namespaces returns the names of the namespaces c owns that exist now.
func (c *Cloud) Namespaces() ([]string, error) { return c.namespaces() }

func (c *Cloud) namespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if c.owns(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns))
	return err == nil
}

// ensureNS creates ns (with loopback up) unless it exists; forward turns
// IPv4 forwarding on inside it.
func (c *Cloud) ensureNS(ctx context.Context, ns string, forward bool) error {
	if !c.owns(ns) {
		return fmt.Errorf("namespace %s is not this cloud's", ns)
	}
	if !nsExists(ns) {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
		}
	}
	err := c.withNetlink(ns, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		return h.LinkSetUp(lo)
	})
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if forward {
		err := c.Do(ns, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
		})
		if err != nil {
			return fmt.Errorf("namespace %s: enable forwarding: %w", ns, err)
		}
	}
	return nil
}

// deleteNS deletes ns and its /etc/netns directory; a missing ns is fine.
func (c *Cloud) deleteNS(ctx context.Context, ns string) error {
	if !c.owns(ns) {
		return fmt.Errorf("namespace %s is not this cloud's", ns)
	}
	if nsExists(ns) {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil && nsExists(ns) {
			return fmt.Errorf("ip netns del %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.RemoveAll(filepath.Join(etcNetnsDir, ns)); err != nil {
		return fmt.Errorf("remove %s resolver: %w", ns, err)
	}
	return nil
}

// withNetlink calls f with a netlink handle bound to ns.
func (c *Cloud) withNetlink(ns string, f func(h *netlink.Handle) error) error {
	return c.withNS(ns, func(fd netns.NsHandle, h *netlink.Handle) error { return f(h) })
}

// withNS calls f with ns's handle and a netlink handle bound to it.
func (c *Cloud) withNS(ns string, f func(fd netns.NsHandle, h *netlink.Handle) error) error {
	if !c.owns(ns) {
		return fmt.Errorf("namespace %s is not this cloud's", ns)
	}
	fd, err := netns.GetFromName(ns)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("namespace %s: %w", ns, ErrNotFound)
		}
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer h.Close()
	return f(fd, h)
}

// Do runs f on a fresh OS thread inside ns (one of c's namespaces) and
// returns its error. The thread never returns to the Go scheduler: it ends
// with f. Sockets f opens stay in ns and may be used from any goroutine
// afterwards (listen inside a host, dial from one).
func (c *Cloud) Do(ns string, f func() error) error {
	if !c.owns(ns) {
		return fmt.Errorf("namespace %s is not this cloud's", ns)
	}
	fd, err := netns.GetFromName(ns)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("namespace %s: %w", ns, ErrNotFound)
		}
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer fd.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine, so no
		// other goroutine ever runs inside ns by accident.
		if err := netns.Set(fd); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Exec runs argv inside ns (one of c's namespaces: Host.NS, RouterNS,
// InternetNS) with `ip netns exec`, which also applies the namespace's
// resolver (SetResolver). Stdin, stdout and stderr are passed through (nil
// means none). The command's exit code is returned with a nil error; the
// error is non-nil only when the command could not be run or ctx ended
// (code -1).
func (c *Cloud) Exec(ctx context.Context, ns string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(argv) == 0 {
		return -1, errors.New("exec: empty command")
	}
	if !c.owns(ns) {
		return -1, fmt.Errorf("exec in %s: namespace is not this cloud's", ns)
	}
	if !nsExists(ns) {
		return -1, fmt.Errorf("exec in %s: %w", ns, ErrNotFound)
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", ns, err)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("exec %s in %s: %w", argv[0], ns, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("exec %s in %s: %w", argv[0], ns, err)
	}
	return 0, nil
}

// SetResolver makes addr the DNS resolver of commands run in ns with Exec
// (or `ip netns exec`): it writes /etc/netns/<ns>/resolv.conf. The file is
// removed with the namespace.
func (c *Cloud) SetResolver(ns string, addr netip.Addr) error {
	if !addr.IsValid() {
		return fmt.Errorf("set resolver of %s: invalid address", ns)
	}
	if !c.owns(ns) {
		return fmt.Errorf("set resolver of %s: namespace is not this cloud's", ns)
	}
	if !nsExists(ns) {
		return fmt.Errorf("set resolver of %s: %w", ns, ErrNotFound)
	}
	dir := filepath.Join(etcNetnsDir, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("set resolver of %s: %w", ns, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+addr.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("set resolver of %s: %w", ns, err)
	}
	return nil
}

// Cleanup deletes every namespace c owns (and their resolver files) and
// its registry, and nothing else.
func (c *Cloud) Cleanup(ctx context.Context) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	nss, err := c.namespaces()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		if err := c.deleteNS(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(c.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup %s*: %w", c.prefix, err)
	}
	return nil
}
