// Package reconcile holds the control plane's level-triggered controllers:
// they drive nodes and services from their desired to their actual state
// through a provider. Each pass reads the store, does the provider work
// outside any transaction, and records the result with a compare-and-swap,
// so killing the server at any moment and starting it again finishes every
// step. Wired by internal/controlplane.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/store"
)

// Config wires a Reconciler.
type Config struct {
	Store      store.Store
	Provider   provider.Provider
	Keys       Sealer
	InternalCA *pki.CA
	Zone       string
	// Catalog is the regions and AZs hosts are placed in (default
	// domain.DefaultCatalog).
	Catalog domain.Catalog
	Logger  *slog.Logger
	// Resync is the period of a full pass without a store change (0: 2s).
	Resync time.Duration
	Now    func() time.Time
	// Backups is the backup store (retention); nil: no retention and no
	// scheduled backups. BackupInterval is the age of a service's newest
	// base backup that starts a new one (0: never on schedule);
	// BackupKeep and BackupKeepAge are the retention (see archive.Prune).
	Backups        objstore.Store
	BackupInterval time.Duration
	BackupKeep     int
	BackupKeepAge  time.Duration
	// Metrics records every pass (with the kinds of its errors), every
	// operation the reconciler ends, and the fleet each pass reads (node
	// states, certificates, WAL archiving, backups; metrics.go); nil
	// records nothing.
	Metrics *metrics.ControlPlane
	// Tenants, when set, forgets the statistics of nodes that are gone.
	Tenants *metrics.Tenants
	// Failover holds the timings of failure detection and fencing (zero:
	// domain.DefaultFailoverPolicy).
	Failover domain.FailoverPolicy
}

// Sealer seals and opens secrets at rest (a *secret.Keyring), with the
// associated data domain names for each kind of key.
type Sealer interface {
	Seal(plaintext, associatedData []byte) []byte
	Open(sealed, associatedData []byte) ([]byte, error)
}

// Reconciler drives nodes and services.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	// seen is what the last pass recorded in the metrics (metrics.go).
	seen fleetSeen
	// started is when the reconciler was made: hosts' heartbeats (and
	// agents' reports) are expected from then on, so older ones say
	// nothing of their hosts until they had time to report.
	started time.Time
	// listening is from when host silences count (markLateHosts): started,
	// or the end of the last pass that heard no host (domain.Listening);
	// deaf says that pass was deaf.
	listening time.Time
	deaf      bool

	// wakeMu guards wake: the earliest moment a pass asked to be run
	// again without a store change (a host's heartbeat turning late, a
	// failover's grace or fence wait ending); wait honours it.
	wakeMu sync.Mutex
	wake   time.Time
}

// wakeBy asks for a pass at t at the latest (zero: no request).
func (r *Reconciler) wakeBy(t time.Time) {
	if t.IsZero() {
		return
	}
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	if r.wake.IsZero() || t.Before(r.wake) {
		r.wake = t
	}
}

// takeWake returns and clears the pass requested by wakeBy.
func (r *Reconciler) takeWake() time.Time {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	t := r.wake
	r.wake = time.Time{}
	return t
}

// CertValidity is a node certificate's lifetime; RenewBefore is how long
// before expiry it is replaced.
const (
	CertValidity = 90 * 24 * time.Hour
	RenewBefore  = 30 * 24 * time.Hour
)

// New returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Store == nil || cfg.Provider == nil || cfg.Keys == nil || cfg.InternalCA == nil {
		return nil, errors.New("reconcile: Store, Provider, Keys and InternalCA are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Catalog.Regions) == 0 {
		cfg.Catalog = domain.DefaultCatalog()
	}
	if cfg.Failover == (domain.FailoverPolicy{}) {
		cfg.Failover = domain.DefaultFailoverPolicy()
	}
	if err := cfg.Failover.Check(); err != nil {
		return nil, fmt.Errorf("reconcile: failover policy: %w", err)
	}
	now := cfg.Now().UTC()
	return &Reconciler{cfg: cfg, log: cfg.Logger, started: now, listening: now}, nil
}

// Run reconciles on every store change and every Resync until ctx ends;
// between passes it polls freshly requested peerings (see wait).
func (r *Reconciler) Run(ctx context.Context) error {
	var rev int64
	for {
		start := time.Now()
		kinds, err := r.once(ctx)
		if ctx.Err() == nil {
			r.cfg.Metrics.ReconcilePass(time.Since(start), kinds...)
		}
		if err != nil && ctx.Err() == nil {
			for _, e := range flatten(err) {
				r.log.Error("reconcile pass", "err", e)
			}
		}
		n, err := r.wait(ctx, rev)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			rev = n
		case !errors.Is(err, context.DeadlineExceeded): // the resync period
			r.log.Error("wait for a store change", "err", err)
		}
	}
}

// Once makes one pass over every VPC, peering, node and service that needs
// work (VPCs and peerings first, so a VPC is active before its nodes are
// placed). Work on one object failing does not stop the others; every
// error is returned, joined (errors.Join).
func (r *Reconciler) Once(ctx context.Context) error {
	_, err := r.once(ctx)
	return err
}

// Error kinds of a pass, the metrics' kind label: the step that failed.
const (
	errKindStore         = "store"
	errKindNetwork       = "network"
	errKindPlaceNode     = "place_node"
	errKindRemoveNode    = "remove_node"
	errKindCertificate   = "certificate"
	errKindOperation     = "operation"
	errKindBackupSched   = "backup_schedule"
	errKindHoldMoved     = "hold_moved"
	errKindServiceDelete = "service_delete"
	errKindBackupKey     = "backup_key"
	errKindPrune         = "prune"
	errKindHosts         = "hosts"
	errKindFailover      = "failover"
)

// once is Once, also returning the kind of every error (one entry each).
func (r *Reconciler) once(ctx context.Context) (kinds []string, _ error) {
	var nodes []*domain.Node
	var svcs []*domain.Service
	err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		if nodes, err = store.List[domain.Node](ctx, tx, store.Query{}); err != nil {
			return err
		}
		svcs, err = store.List[domain.Service](ctx, tx, store.Query{})
		return err
	})
	if err != nil {
		return []string{errKindStore}, err
	}
	r.observe(ctx, nodes, svcs)
	var errs []error
	keep := func(kind string, err error) {
		if err == nil {
			return
		}
		errs = append(errs, err)
		for range flatten(err) {
			kinds = append(kinds, kind)
		}
	}
	keep(errKindHosts, r.markLateHosts(ctx))
	keep(errKindNetwork, r.networks(ctx))
	for _, n := range nodes {
		switch {
		case n.State == domain.StateCreating && n.Address == "":
			keep(errKindPlaceNode, r.place(ctx, n))
		case n.State == domain.StateDeleting:
			keep(errKindRemoveNode, r.remove(ctx, n))
		case n.Address != "" && !domain.Gone(n.State) && (pki.NeedsRenewal([]byte(n.CertPEM), r.cfg.Now(), RenewBefore) || !replCertNamesNode(n)):
			keep(errKindCertificate, r.renew(ctx, n))
		}
	}
	keep(errKindOperation, r.operations(ctx))
	keep(errKindFailover, r.failovers(ctx, svcs, nodes))
	keep(errKindBackupSched, r.scheduleBackups(ctx, svcs))
	keep(errKindHoldMoved, r.holdMoved(ctx, nodes))
	for _, s := range svcs {
		switch {
		case s.State == domain.StateDeleting:
			keep(errKindServiceDelete, r.finishDelete(ctx, s))
		case !domain.Gone(s.State) && s.BackupPublicKeyPEM == "":
			keep(errKindBackupKey, r.backupKey(ctx, s.ID))
		case !domain.Gone(s.State) && s.LastBackupAt.After(s.PrunedAt):
			keep(errKindPrune, r.prune(ctx, s))
		}
	}
	return kinds, errors.Join(errs...)
}

// flatten lists the errors joined in err (recursively), each once.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// place puts a new node on a machine and issues its certificates.
func (r *Reconciler) place(ctx context.Context, n *domain.Node) error {
	var svc *domain.Service
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		svc, err = store.Get[domain.Service](ctx, tx, n.ServiceID)
		return err
	}); err != nil {
		return err
	}
	host := n.Host
	if host == "" {
		var err error
		if host, err = r.chooseHost(ctx, n, svc); err != nil {
			return r.fail(ctx, n, "placement_failed", err)
		}
	}
	pl, err := r.cfg.Provider.PlaceNode(ctx, provider.NodeRequest{NodeID: n.ID, ServiceID: n.ServiceID, Host: host, AZ: n.AZ, VPCID: svc.VPCID})
	if err != nil {
		return r.fail(ctx, n, "placement_failed", err)
	}
	return r.update(ctx, n.ID, func(tx store.Tx, cur *domain.Node) error {
		if cur.State != domain.StateCreating || cur.Address != "" || (cur.Host != "" && cur.Host != host) {
			return errSkip
		}
		cur.Host, cur.Namespace, cur.Address = host, pl.Namespace, pl.Address.String()
		return r.issue(ctx, tx, cur)
	})
}

// issue gives n a server certificate from its project's CA with the
// node's names and address, and a replication client certificate from the
// internal CA.
func (r *Reconciler) issue(ctx context.Context, tx store.Tx, n *domain.Node) error {
	svc, err := store.Get[domain.Service](ctx, tx, n.ServiceID)
	if err != nil {
		return err
	}
	proj, err := store.Get[domain.Project](ctx, tx, n.ProjectID)
	if err != nil {
		return err
	}
	caKey, err := r.cfg.Keys.Open(proj.CAKeySealed, domain.ProjectCAKeyAD(proj.ID))
	if err != nil {
		return fmt.Errorf("unseal the CA key of project %s: %w", proj.ID, err)
	}
	ca, err := pki.ParseCA([]byte(proj.CACertPEM), caKey)
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	cert, key, err := ca.IssueServer(domain.CertNames(n, svc, r.cfg.Zone), CertValidity, now)
	if err != nil {
		return fmt.Errorf("issue node certificate: %w", err)
	}
	rcert, rkey, err := r.cfg.InternalCA.IssueClient(domain.ReplCertName(n), CertValidity, now)
	if err != nil {
		return fmt.Errorf("issue replication certificate: %w", err)
	}
	n.CertPEM, n.KeySealed = string(cert), r.cfg.Keys.Seal(key, domain.NodeKeyAD(n.ID))
	n.ReplCertPEM, n.ReplKeySealed = string(rcert), r.cfg.Keys.Seal(rkey, domain.ReplKeyAD(n.ID))
	n.CertNotAfterAt = now.Add(CertValidity)
	return nil
}

// replCertNamesNode reports whether n's replication certificate names n
// (one issued before certificates named their node names the role: it is
// reissued).
func replCertNamesNode(n *domain.Node) bool {
	c, err := pki.ParseCert([]byte(n.ReplCertPEM))
	return err == nil && c.Subject.CommonName == domain.ReplCertName(n)
}

func (r *Reconciler) renew(ctx context.Context, n *domain.Node) error {
	return r.update(ctx, n.ID, func(tx store.Tx, cur *domain.Node) error { return r.issue(ctx, tx, cur) })
}

// remove destroys a deleting node's machine once its agent wiped it (or at
// once if it was never placed). A departed replica stays deleting until
// its departure no longer bounds a failover (domain.DepartureSettled),
// unless its service is being deleted.
func (r *Reconciler) remove(ctx context.Context, n *domain.Node) error {
	if n.Address != "" && !n.Wiped() {
		return nil // the agent has not wiped it yet
	}
	if n.Departure != nil {
		settled := true
		if err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
			svc, err := store.Get[domain.Service](ctx, tx, n.ServiceID)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil || domain.Going(svc.State) {
				return err
			}
			nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: n.ServiceID})
			settled = domain.DepartureSettled(n, nodes)
			return err
		}); err != nil || !settled {
			return err
		}
	}
	if n.Address != "" {
		if err := r.cfg.Provider.RemoveNode(ctx, n.ID); err != nil {
			return fmt.Errorf("remove node %s: %w", n.ID, err)
		}
	}
	return r.update(ctx, n.ID, func(_ store.Tx, cur *domain.Node) error {
		if cur.State != domain.StateDeleting {
			return errSkip
		}
		return cur.MarkDeleted(r.cfg.Now().UTC())
	})
}

// finishDelete marks a deleting service deleted once all its nodes are,
// after deleting its backups from the store; its backup key is destroyed
// with it, so a copy of the store made before holds nothing readable.
func (r *Reconciler) finishDelete(ctx context.Context, s *domain.Service) error {
	var live int
	if err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: s.ID})
		live = len(nodes)
		return err
	}); err != nil || live > 0 {
		return err
	}
	if done, err := r.restoresDone(ctx, s); err != nil || !done {
		return err
	}
	if err := r.deleteBackups(ctx, s); err != nil {
		return err
	}
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := store.Get[domain.Service](ctx, tx, s.ID)
		if err != nil || cur.State != domain.StateDeleting {
			return err
		}
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: s.ID})
		if err != nil {
			return err
		}
		if len(nodes) > 0 {
			return nil
		}
		if err := cur.MarkDeleted(r.cfg.Now().UTC()); err != nil {
			return err
		}
		if err := store.Put(ctx, tx, cur); err != nil {
			return err
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{cur.ID}})
		return err
	})
}

// fail records why a node could not be placed (it is retried) and
// returns the cause, with the error of recording it if any.
func (r *Reconciler) fail(ctx context.Context, n *domain.Node, code string, cause error) error {
	err := r.update(ctx, n.ID, func(_ store.Tx, cur *domain.Node) error {
		cur.StateInfo = &domain.Info{Code: code, Message: "the provider could not create the node; it is retried", Cause: cause.Error()}
		return nil
	})
	cause = fmt.Errorf("place node %s: %w", n.ID, cause)
	if err != nil {
		return errors.Join(cause, fmt.Errorf("record the failure of node %s: %w", n.ID, err))
	}
	return cause
}

var errSkip = errors.New("skip")

// update applies fn to the current node in a transaction and bumps the
// desired-state revision of its service's hosts and its own, before and
// after fn (placed, or deleted); fn returning errSkip writes nothing.
func (r *Reconciler) update(ctx context.Context, id string, fn func(store.Tx, *domain.Node) error) error {
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := store.Get[domain.Node](ctx, tx, id)
		if err != nil {
			return err
		}
		was := cur.Host
		if err := fn(tx, cur); err != nil {
			return err
		}
		cur.UpdatedAt = r.cfg.Now().UTC()
		if err := store.Put(ctx, tx, cur); err != nil {
			return err
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{cur.ServiceID}, Hosts: []string{was, cur.Host}})
		return err
	})
	if errors.Is(err, errSkip) {
		return nil
	}
	return err
}

// backupKey creates a service's RSA-3072 backup key pair: the public key in
// the clear (its nodes encrypt with it), the private key sealed.
func (r *Reconciler) backupKey(ctx context.Context, id string) error {
	key, err := backup.GenerateKey()
	if err != nil {
		return fmt.Errorf("backup key: %w", err)
	}
	pub, err := backup.MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		return err
	}
	priv, err := backup.MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		s, err := store.Get[domain.Service](ctx, tx, id)
		if err != nil || s.BackupPublicKeyPEM != "" || domain.Gone(s.State) {
			return err
		}
		s.BackupPublicKeyPEM, s.BackupKeySealed = string(pub), r.cfg.Keys.Seal(priv, domain.BackupKeyAD(id))
		s.UpdatedAt = r.cfg.Now().UTC()
		if err := store.Put(ctx, tx, s); err != nil {
			return err
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{id}})
		return err
	})
}
