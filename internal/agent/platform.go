package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netns"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/nft"
	"github.com/moatdb/moat/internal/postgres"
)

// What a node's steps act on. The real implementations are a network
// namespace with its nftables firewall (netnsNetwork) and the postgres
// package's Instance (pgInstance); the unit tests' fakes (fake_test.go)
// record the order of the calls, so that the apply's ordering invariants
// are tested without root or PostgreSQL.

// firewall is a node's nftables firewall. *nft.Firewall is one.
type firewall interface {
	// Apply makes the firewall enforce p, atomically.
	Apply(p nft.Policy) error
}

// network is a node's network namespace, opened by name.
type network interface {
	// Name is the name it was opened by.
	Name() string
	// ID identifies the namespace itself: one recreated under the same
	// name has another.
	ID() string
	// Current reports whether Name still names this namespace (false
	// once it was deleted or recreated).
	Current() bool
	// Firewall is the namespace's firewall.
	Firewall() firewall
	// Close closes the firewall (waiting for its sockets) and releases
	// the namespace; both stay, the firewall's table in force.
	Close() error
}

// instance is a node's PostgreSQL: its files, its postmaster and the
// agent's statements over the management socket.
type instance interface {
	// Init writes the configuration, TLS files and, when there is no
	// cluster yet, creates it (initdb, a base backup or a restore).
	Init(ctx context.Context) error
	WriteHBA(p postgres.Policy) error
	Running() bool
	Start(ctx context.Context) error
	Reload(ctx context.Context) error
	Stop(ctx context.Context) error
	// BeginStop asks for a fast shutdown and returns at once.
	BeginStop() error
	// Wipe removes the cluster and the files; the server must be stopped.
	Wipe() error
	// TerminateSessions ends the client sessions acc no longer admits.
	TerminateSessions(ctx context.Context, acc postgres.Access) (int, error)
	// Bootstrap creates the admin user, the database and the replication
	// role repl on a primary. Idempotent.
	Bootstrap(ctx context.Context, repl string) error
	// SetVerifier sets user's password from its SCRAM verifier.
	SetVerifier(ctx context.Context, user, verifier string) error
	// InRecovery reports whether the server is in recovery.
	InRecovery(ctx context.Context) (bool, error)
	// Checkpoint runs CHECKPOINT.
	Checkpoint(ctx context.Context) error
	// Promote promotes a server in recovery, waiting until it is.
	Promote(ctx context.Context) error
	// ShutdownCheckpoint reads a stopped server's last checkpoint
	// location, and whether it was shut down cleanly.
	ShutdownCheckpoint(ctx context.Context) (lsn string, clean bool, err error)
	// Replication reads the server's replication (Up is true).
	Replication(ctx context.Context) (apitype.NodeReplication, error)
	// Close ends what watches the server this instance started; the
	// server runs on. Start fails after it.
	Close() error
}

// platform makes a node's network and instances, and runs its tasks.
// An Agent's is the real one; tests replace it with fakes.
type platform struct {
	openNetwork func(name string) (network, error)
	newInstance func(cfg postgres.Config) (instance, error)
	// runTask runs a node's task until done or ctx ends.
	runTask func(ctx context.Context, n *node, want apitype.NodeDesired, t apitype.NodeTask) (*apitype.Backup, error)
	// vol makes and destroys the nodes' volumes (volume.go).
	vol volumes
	// scrape reads a node's statistics as the monitoring role (dsn:
	// postgres.MonitorDSN); nil reads none (metrics.go).
	scrape func(ctx context.Context, dsn string) (pgstat.Snapshot, error)
	// users makes and removes the nodes' users (osuser.go).
	users users
}

// hostPlatform is the platform of a real host.
func hostPlatform() platform {
	return platform{
		openNetwork: openNetns,
		newInstance: func(cfg postgres.Config) (instance, error) {
			in, err := postgres.New(cfg)
			if err != nil {
				return nil, err
			}
			return pgInstance{in}, nil
		},
		runTask: func(ctx context.Context, n *node, want apitype.NodeDesired, t apitype.NodeTask) (*apitype.Backup, error) {
			return n.task(ctx, want, t)
		},
		scrape: scrapeDSN,
		users:  hostUsersFor(),
	}
}

// netnsNetwork is a named network namespace and its firewall.
type netnsNetwork struct {
	name string
	h    netns.NsHandle
	fw   *nft.Firewall
}

func openNetns(name string) (network, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	return &netnsNetwork{name: name, h: h, fw: nft.New(h)}, nil
}

func (n *netnsNetwork) Name() string       { return n.name }
func (n *netnsNetwork) ID() string         { return n.h.UniqueId() }
func (n *netnsNetwork) Firewall() firewall { return n.fw }

// Current opens the name again and compares: a name that no longer opens
// is not this namespace any more.
func (n *netnsNetwork) Current() bool {
	h, err := netns.GetFromName(n.name)
	if err != nil {
		return false
	}
	defer h.Close() // opened only to compare: a close error changes nothing
	return n.h.Equal(h)
}

func (n *netnsNetwork) Close() error {
	// The firewall first: its sockets were opened in the namespace.
	var errs []error
	if err := n.fw.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close the firewall of %s: %w", n.name, err))
	}
	if err := n.h.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close network namespace %s: %w", n.name, err))
	}
	return errors.Join(errs...)
}
