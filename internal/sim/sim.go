// Package sim is the simulated customer cloud: a test and demo harness that
// stands in for a tenant's AWS account on one machine, so the whole flow
// can be exercised with real packets: hosts on the public internet;
// customer accounts with VPCs (a router namespace with a NAT uplink to the
// internet), hosts inside them, the peering inbox (accept, reject), route
// tables and security-group egress rules, and a clock tests can move. It
// stands on internal/localcloud, as the local provider does. It also
// describes its sources to the explain model (Source) and checks that model
// against real packets (Verify, behind moat verify).
//
// No product package imports it: only moat up (internal/up), the CLI's
// Linux-only wiring of moat sim, explain, verify and service psql, and
// tests. It imports none of Moat's packages but localcloud, atomicfile and
// domain (validation, and the explain model).
//
// What exists is split in two: the kernel holds the network (namespaces,
// interfaces, addresses, routes, nftables, read back through localcloud),
// the localcloud registry holds what both sides of a peering see (requests,
// their states, the clock), and a small JSON state file in the caller's
// directory holds the simulator's own metadata (accounts, VPCs, hosts and
// their networks, route tables, egress rules). The file is written
// atomically and guarded by a lock file, so a `moat sim` command and
// `moat up` can share it. See docs/design/0006-sim-customer-cloud.md.
//
// A sim host named N lives in the localcloud host "sim-N" (namespace
// "<prefix>h-sim-N"); the local provider must not use host names starting
// with "sim-". A customer VPC's localcloud VPC ID is its AWS-style ID
// ("vpc-" and 17 hex digits), which the provider's IDs never look like.
package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/localcloud"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such sim object.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that name exists with another shape.
	ErrExists = errors.New("already exists")
)

// NetworkInternet is Host.Network for a host on the public internet.
const NetworkInternet = "internet"

const (
	stateFile    = "state.json"
	lockFile     = "state.lock"
	stateVersion = 1
	hostPrefix   = "sim-"
)

// Config configures a Sim.
type Config struct {
	// Cloud is the substrate; it may be shared with the local provider.
	Cloud *localcloud.Cloud
	// Dir holds the simulator's state file; it is created if missing.
	Dir string
	// Now stamps the simulator's objects (Created); the cloud's clock
	// (localcloud.Cloud.Now, moved by Advance) when nil. Peering expiry
	// is always measured with the cloud's clock, which the provider sees
	// too.
	Now func() time.Time
}

// Sim is the simulated customer cloud. Its methods are safe for concurrent
// use, also from several processes sharing Dir.
type Sim struct {
	cloud *localcloud.Cloud
	dir   string
	now   func() time.Time
}

// Host is a simulated host.
type Host struct {
	Name string
	// Network is NetworkInternet or a customer VPC's ID.
	Network string
	// Addr is the host's address, read from the kernel; invalid when its
	// namespace is gone (after a reboot, say: create it again).
	Addr netip.Addr
	// NS is the host's network namespace.
	NS string
	// Created is when the simulator created it.
	Created time.Time
}

// state is the state file's content. Unknown fields are rejected.
type state struct {
	Version  int                     `json:"version"`
	Hosts    map[string]hostState    `json:"hosts"`
	Accounts map[string]accountState `json:"accounts,omitempty"`
	VPCs     map[string]vpcState     `json:"vpcs,omitempty"`
}

type hostState struct {
	Network string       `json:"network"`
	Created time.Time    `json:"created"`
	Egress  []EgressRule `json:"egress,omitempty"`
}

type accountState struct {
	Created time.Time `json:"created"`
}

type vpcState struct {
	Account string       `json:"account"`
	Region  string       `json:"region"`
	CIDR    netip.Prefix `json:"cidr"`
	Created time.Time    `json:"created"`
	Routes  []routeState `json:"routes,omitempty"`
}

type routeState struct {
	Destination netip.Prefix `json:"destination"`
	Target      string       `json:"target"`
}

// Open returns the Sim over cfg.Cloud with its state in cfg.Dir. It reads
// the state file to check it, and creates nothing in the kernel.
func Open(cfg Config) (*Sim, error) {
	if cfg.Cloud == nil || cfg.Dir == "" {
		return nil, errors.New("sim: a cloud and a state directory are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sim: state directory: %w", err)
	}
	s := &Sim{cloud: cfg.Cloud, dir: cfg.Dir, now: cfg.Now}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

func checkHostName(name string) error {
	if !hostNameRE.MatchString(name) {
		return fmt.Errorf("host name %q: want 1 to 40 of a-z 0-9 - starting with a letter or digit", name)
	}
	return nil
}

// CreateInternetHost creates a host on the public internet with an address
// from localcloud.SimPool (and the internet itself if needed). Creating an
// internet host that exists returns it unchanged (so `moat up` can ensure
// "laptop" on every start); a host of that name on another network is an
// ErrExists error.
func (s *Sim) CreateInternetHost(ctx context.Context, name string) (Host, error) {
	if err := checkHostName(name); err != nil {
		return Host{}, err
	}
	var out Host
	err := s.update(ctx, func(st *state) error {
		hs, ok := st.Hosts[name]
		if ok && hs.Network != NetworkInternet {
			return fmt.Errorf("host %s is in %s: %w", name, hs.Network, ErrExists)
		}
		if !ok {
			hs = hostState{Network: NetworkInternet, Created: s.stamp(ctx)}
		}
		if err := s.cloud.EnsureInternet(ctx); err != nil {
			return err
		}
		lh, err := s.cloud.AddHost(ctx, hostPrefix+name, localcloud.Internet(localcloud.SimPool))
		if errors.Is(err, localcloud.ErrExists) {
			return fmt.Errorf("host %s: %w", name, ErrExists)
		}
		if err != nil {
			return err
		}
		if err := s.cloud.SetResolver(lh.NS, PlatformDNS); err != nil {
			return err
		}
		st.Hosts[name] = hs
		out = s.host(name, hs, lh)
		return nil
	})
	if err != nil {
		return Host{}, fmt.Errorf("create host %s: %w", name, err)
	}
	return out, nil
}

// ListHosts lists the simulated hosts, sorted by name.
func (s *Sim) ListHosts(ctx context.Context) ([]Host, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	var out []Host
	for name, hs := range st.Hosts {
		h, err := s.lookup(ctx, name, hs)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Host returns the simulated host name.
func (s *Sim) Host(ctx context.Context, name string) (Host, error) {
	st, err := s.load()
	if err != nil {
		return Host{}, err
	}
	hs, ok := st.Hosts[name]
	if !ok {
		return Host{}, fmt.Errorf("host %s: %w", name, ErrNotFound)
	}
	return s.lookup(ctx, name, hs)
}

func (s *Sim) lookup(ctx context.Context, name string, hs hostState) (Host, error) {
	lh, err := s.cloud.Host(ctx, hostPrefix+name)
	if err != nil && !errors.Is(err, localcloud.ErrNotFound) {
		return Host{}, fmt.Errorf("host %s: %w", name, err)
	}
	return s.host(name, hs, lh), nil
}

func (s *Sim) host(name string, hs hostState, lh localcloud.Host) Host {
	h := Host{Name: name, Network: hs.Network, NS: s.cloud.HostNS(hostPrefix + name), Created: hs.Created}
	r := localcloud.NetRef{}
	if hs.Network != NetworkInternet {
		r = localcloud.InVPC(hs.Network)
	}
	h.Addr, _ = lh.Addr(r)
	return h
}

// DeleteHost deletes the simulated host name and its namespace.
func (s *Sim) DeleteHost(ctx context.Context, name string) error {
	err := s.update(ctx, func(st *state) error {
		if _, ok := st.Hosts[name]; !ok {
			return fmt.Errorf("host %s: %w", name, ErrNotFound)
		}
		if err := s.cloud.RemoveHost(ctx, hostPrefix+name); err != nil {
			return err
		}
		delete(st.Hosts, name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete host %s: %w", name, err)
	}
	return nil
}

// Exec runs argv inside host name's namespace, passing stdin, stdout,
// stderr and the exit code through (see localcloud.Cloud.Exec).
func (s *Sim) Exec(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	h, err := s.Host(ctx, name)
	if err != nil {
		return -1, fmt.Errorf("exec on %s: %w", name, err)
	}
	if !h.Addr.IsValid() {
		return -1, fmt.Errorf("exec on %s: its namespace is gone (create the host again)", name)
	}
	return s.cloud.Exec(ctx, h.NS, argv, stdin, stdout, stderr)
}

// stamp returns the time to stamp a new object with.
func (s *Sim) stamp(ctx context.Context) time.Time {
	if s.now != nil {
		return s.now().UTC()
	}
	if t, err := s.cloud.Now(ctx); err == nil {
		return t
	}
	return time.Now().UTC()
}

// load reads the state file; a missing file is an empty state.
func (s *Sim) load() (*state, error) {
	st := &state{Version: stateVersion, Hosts: map[string]hostState{}, Accounts: map[string]accountState{}, VPCs: map[string]vpcState{}}
	f, err := os.Open(filepath.Join(s.dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sim: read state: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("sim: read state %s: %w", f.Name(), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("sim: state %s: version %d, want %d", f.Name(), st.Version, stateVersion)
	}
	if st.Hosts == nil {
		st.Hosts = map[string]hostState{}
	}
	if st.Accounts == nil {
		st.Accounts = map[string]accountState{}
	}
	if st.VPCs == nil {
		st.VPCs = map[string]vpcState{}
	}
	return st, nil
}

// update runs f on the state under the lock and saves the state if f
// succeeds.
func (s *Sim) update(ctx context.Context, f func(*state) error) error {
	lf, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock state: %w", err)
	}
	defer lf.Close()
	for {
		err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock state: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock state: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	st, err := s.load()
	if err != nil {
		return err
	}
	if err := f(st); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, stateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
