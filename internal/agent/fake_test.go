package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/nft"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/volume"
)

// Fakes of the interfaces in platform.go: a host whose namespaces,
// firewalls and PostgreSQL servers are a few maps, and which records, in
// order, every operation a node's steps ask of them (the model is
// tailscale's util/linuxfw/fake.go).

// The operations a fakeHost records.
const (
	opFirewall   = "firewall"
	opCloseNet   = "close-network" // the firewall closed, the namespace released
	opInit       = "init"
	opHBA        = "hba"
	opStart      = "start"
	opReload     = "reload"
	opStop       = "stop"
	opWipe       = "wipe"
	opTerminate  = "terminate"
	opBootstrap  = "bootstrap"
	opPassword   = "password"
	opCheckpoint = "checkpoint"
	opInRecovery = "in-recovery" // fails when asked to; never recorded
	opPromote    = "promote"
	opTaskStart  = "task-start"
	opTaskCancel = "task-cancelled"
	opVolume     = "volume"         // a new volume made and served
	opDestroyVol = "destroy-volume" // a volume destroyed
	opKillUsers  = "kill-users"     // the processes on a lost volume killed
)

// fakeHost is the fake platform.
type fakeHost struct {
	mu  sync.Mutex
	ops []string
	// fail makes the operations named fail with their error, until
	// removed.
	fail map[string]error
	// ns is each namespace's generation: recreating one increments it.
	ns map[string]int
	// allowed is the IPv4 allowlist each namespace's firewall enforces.
	allowed map[string][]netip.Prefix
	// refused is whether each namespace's firewall resets connections
	// (nft.Policy.Refuse).
	refused map[string]bool
	// open counts the networks opened and not closed, instances the
	// instances.
	open, instances int
	// written are the settings each data directory's configuration
	// files were last written with (Init).
	written map[string]map[string]string
	// running is whether each data directory's server runs.
	running map[string]bool
	// recovering: the servers are in recovery (a restore replays).
	recovering bool
	// receiverPID, when not 0, is the servers' WAL receiver, streaming
	// says whether it streams.
	receiverPID int
	streaming   bool
	// taskStarted receives a task's ID as it starts.
	taskStarted chan string
	// volumes is whether each container's server runs (absent: no
	// container); full: every volume is full; hung: the containers whose
	// server does not answer.
	volumes map[string]bool
	full    bool
	hung    map[string]bool
	// users are the nodes' users.
	users fakeUsers
	// cut is the access each TerminateSessions kept sessions to.
	cut []postgres.Access
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		fail: map[string]error{}, ns: map[string]int{}, allowed: map[string][]netip.Prefix{}, refused: map[string]bool{},
		running: map[string]bool{}, taskStarted: make(chan string, 16), volumes: map[string]bool{},
		hung: map[string]bool{},
	}
}

func (h *fakeHost) platform() platform {
	return platform{
		openNetwork: func(name string) (network, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.open++
			return &fakeNetwork{h: h, name: name, gen: h.ns[name]}, nil
		},
		newInstance: func(cfg postgres.Config) (instance, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.instances++
			return &fakeInstance{h: h, dir: cfg.DataDir, settings: cfg.Settings}, nil
		},
		runTask: func(ctx context.Context, n *node, want apitype.NodeDesired, t apitype.NodeTask) (*apitype.Backup, error) {
			h.record(opTaskStart, nil)
			h.taskStarted <- t.ID
			<-ctx.Done() // a long base backup
			// It takes a moment to end (pg_basebackup is killed and
			// reaped): a caller that does not wait for it sees it still
			// running.
			time.Sleep(50 * time.Millisecond)
			h.record(opTaskCancel, nil)
			return nil, ctx.Err()
		},
		vol:   fakeVolumes{h},
		users: &h.users,
	}
}

// fakeUsers are the nodes' users: which exist. They are not recorded
// among the operations (no ordering test is about them).
type fakeUsers struct {
	mu    sync.Mutex
	exist map[string]bool
}

func (u *fakeUsers) Ensure(name string) (owner, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.exist == nil {
		u.exist = map[string]bool{}
	}
	u.exist[name] = true
	return unchanged, nil
}

func (u *fakeUsers) Lookup(name string) (owner, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.exist[name] {
		return owner{}, fmt.Errorf("node user %s: unknown user", name)
	}
	return unchanged, nil
}

func (u *fakeUsers) Remove(name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.exist, name)
	return nil
}

// has reports whether the user name exists.
func (u *fakeUsers) has(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.exist[name]
}

// fakeVolumes are containers that exist and are served or not.
type fakeVolumes struct{ h *fakeHost }

func (v fakeVolumes) Served(container, _ string) (bool, bool, error) {
	v.h.mu.Lock()
	defer v.h.mu.Unlock()
	served, exists := v.h.volumes[container]
	return exists, served, nil
}

func (v fakeVolumes) Create(_ context.Context, container, _ string, _ int64) error {
	return v.h.record(opVolume, func() { v.h.volumes[container] = true })
}

func (v fakeVolumes) Stat(container, _ string) (volume.Info, error) {
	v.h.mu.Lock()
	defer v.h.mu.Unlock()
	return volume.Info{Format: volume.FormatName, Cipher: "aes-xts-plain64", Size: 1 << 30, Mounted: v.h.volumes[container], Full: v.h.full}, nil
}

func (v fakeVolumes) Check(container string, _ time.Duration) error {
	v.h.mu.Lock()
	defer v.h.mu.Unlock()
	if v.h.hung[container] {
		return volume.ErrUnresponsive
	}
	return nil
}

func (v fakeVolumes) Kill(container string) error {
	v.h.mu.Lock()
	defer v.h.mu.Unlock()
	v.h.volumes[container] = false
	delete(v.h.hung, container)
	return nil
}

func (v fakeVolumes) KillUsers(string) ([]int, error) {
	return nil, v.h.record(opKillUsers, nil)
}

func (v fakeVolumes) Destroy(container, _ string) error {
	return v.h.record(opDestroyVol, func() { delete(v.h.volumes, container) })
}

// killVolumeServers stops every volume's server: their keys are lost.
func (h *fakeHost) killVolumeServers() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.volumes {
		h.volumes[c] = false
	}
}

func (h *fakeHost) setFull(full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.full = full
}

// record records op and returns its injected failure, if any; do, when
// not nil, runs under the lock unless op fails.
func (h *fakeHost) record(op string, do func()) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	if err := h.fail[op]; err != nil {
		return err
	}
	if do != nil {
		do()
	}
	return nil
}

// take returns the operations recorded since the last take.
func (h *fakeHost) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := h.ops
	h.ops = nil
	return ops
}

func (h *fakeHost) setFail(op string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.fail, op)
	} else {
		h.fail[op] = err
	}
}

// recreate deletes namespace name and creates another under its name.
func (h *fakeHost) recreate(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ns[name]++
	delete(h.allowed, name)
	delete(h.refused, name)
}

func (h *fakeHost) isRunning(dir string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running[dir]
}

// openNetworks returns how many networks are open.
func (h *fakeHost) openNetworks() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// openInstances returns how many instances are open.
func (h *fakeHost) openInstances() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.instances
}

type fakeNetwork struct {
	h      *fakeHost
	name   string
	gen    int
	closed bool // under h.mu
}

func (n *fakeNetwork) Name() string { return n.name }
func (n *fakeNetwork) ID() string   { return fmt.Sprintf("%s#%d", n.name, n.gen) }

// Close closes the firewall: like an nft.Firewall, it applies nothing
// after. Closing twice is allowed.
func (n *fakeNetwork) Close() error {
	return n.h.record(opCloseNet, func() {
		if !n.closed {
			n.closed = true
			n.h.open--
		}
	})
}

func (n *fakeNetwork) Current() bool {
	n.h.mu.Lock()
	defer n.h.mu.Unlock()
	return n.h.ns[n.name] == n.gen
}

func (n *fakeNetwork) Firewall() firewall { return fakeFirewall{n} }

type fakeFirewall struct{ n *fakeNetwork }

func (f fakeFirewall) Apply(p nft.Policy) error {
	var closed bool
	err := f.n.h.record(opFirewall, func() {
		if closed = f.n.closed; !closed {
			f.n.h.allowed[f.n.name] = slices.Clone(p.AllowV4)
			f.n.h.refused[f.n.name] = p.Refuse
		}
	})
	if closed {
		return fmt.Errorf("apply firewall: %w", nft.ErrClosed)
	}
	return err
}

// fakeInstance is a server; its state (running or not) is the host's,
// by data directory, like a postmaster outliving an Instance.
type fakeInstance struct {
	h   *fakeHost
	dir string
	// settings are the extra settings its configuration has; Init
	// writes them (fakeHost.written).
	settings map[string]string
	closed   bool // under h.mu
}

// Close is not recorded: tests count the instances open.
func (in *fakeInstance) Close() error {
	in.h.mu.Lock()
	defer in.h.mu.Unlock()
	if !in.closed {
		in.closed = true
		in.h.instances--
	}
	return nil
}

func (in *fakeInstance) Init(context.Context) error {
	return in.h.record(opInit, func() {
		if in.h.written == nil {
			in.h.written = map[string]map[string]string{}
		}
		in.h.written[in.dir] = in.settings
	})
}
func (in *fakeInstance) WriteHBA(postgres.Policy) error   { return in.h.record(opHBA, nil) }
func (in *fakeInstance) Reload(context.Context) error     { return in.h.record(opReload, nil) }
func (in *fakeInstance) Checkpoint(context.Context) error { return in.h.record(opCheckpoint, nil) }
func (in *fakeInstance) Running() bool                    { return in.h.isRunning(in.dir) }

func (in *fakeInstance) Start(context.Context) error {
	var closed bool
	err := in.h.record(opStart, func() {
		if closed = in.closed; !closed {
			in.h.running[in.dir] = true
		}
	})
	if closed {
		return fmt.Errorf("start postgres: %w", postgres.ErrClosed)
	}
	return err
}

func (in *fakeInstance) Stop(context.Context) error {
	return in.h.record(opStop, func() { in.h.running[in.dir] = false })
}

func (in *fakeInstance) BeginStop() error {
	return in.h.record(opStop, func() { in.h.running[in.dir] = false })
}

func (in *fakeInstance) Wipe() error {
	if in.Running() {
		return fmt.Errorf("wipe %s: postgres is running", in.dir)
	}
	return in.h.record(opWipe, nil)
}

func (in *fakeInstance) TerminateSessions(_ context.Context, acc postgres.Access) (int, error) {
	return 0, in.h.record(opTerminate, func() { in.h.cut = append(in.h.cut, acc) })
}

func (in *fakeInstance) Bootstrap(context.Context, string) error {
	return in.h.record(opBootstrap, nil)
}

func (in *fakeInstance) SetVerifier(context.Context, string, string) error {
	return in.h.record(opPassword, nil)
}

func (in *fakeInstance) InRecovery(context.Context) (bool, error) {
	in.h.mu.Lock()
	defer in.h.mu.Unlock()
	return in.h.recovering, in.h.fail[opInRecovery]
}

func (in *fakeInstance) Promote(context.Context) error {
	return in.h.record(opPromote, func() { in.h.recovering = false })
}

func (in *fakeInstance) Replication(context.Context) (apitype.NodeReplication, error) {
	in.h.mu.Lock()
	defer in.h.mu.Unlock()
	r := apitype.NodeReplication{Up: true, InRecovery: in.h.recovering, ReceivedLSN: "0/3000000", Streaming: in.h.streaming}
	if in.h.receiverPID != 0 {
		r.Upstream = receiverRunning + strconv.Itoa(in.h.receiverPID)
	}
	return r, nil
}

func (in *fakeInstance) ShutdownCheckpoint(context.Context) (string, bool, error) {
	if in.Running() {
		return "0/3000000", false, nil
	}
	return "0/3000100", true, nil
}
