package reconcile

import (
	"context"
	"sync"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/store"
)

// fleetSeen is what the last pass recorded in the metrics, so that the
// next forgets the series of what is gone: labels stay bounded by the
// live fleet.
type fleetSeen struct {
	mu       sync.Mutex
	nodes    map[string]bool
	services map[string]string // service ID → project ID
}

// observe records, for the metrics, the fleet as a pass read it: each
// live node's state, certificate expiry and WAL archiving, each live
// service's last base backup and backup interval, each project CA's
// expiry; and forgets the nodes and services gone since the last pass
// (their platform series and their tenants' statistics).
func (r *Reconciler) observe(ctx context.Context, nodes []*domain.Node, svcs []*domain.Service) {
	m := r.cfg.Metrics
	if m == nil && r.cfg.Tenants == nil {
		return
	}
	nowNodes, nowSvcs := map[string]bool{}, map[string]string{}
	for _, n := range nodes {
		if domain.Gone(n.State) {
			continue
		}
		nowNodes[n.ID] = true
		m.NodeState(n.ProjectID, n.ServiceID, n.ID, n.State)
		if !n.CertNotAfterAt.IsZero() {
			m.CertExpiry(metrics.CertNode, n.ProjectID, n.ID, n.CertNotAfterAt)
		}
		if a := n.Archive; a != nil {
			m.WALArchive(n.ProjectID, n.ServiceID, n.ID, a.LastArchivedAt, a.LastFailedAt, a.Failing)
		}
	}
	for _, s := range svcs {
		if domain.Gone(s.State) {
			continue
		}
		nowSvcs[s.ID] = s.ProjectID
		if !s.LastBackupAt.IsZero() {
			m.BackupResult(s.ProjectID, s.ID, true, s.LastBackupAt)
		}
		if r.cfg.BackupInterval > 0 && r.cfg.Backups != nil {
			m.BackupInterval(s.ProjectID, s.ID, r.cfg.BackupInterval)
		}
	}
	if m != nil {
		var projects []*domain.Project
		err := r.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
			projects, err = store.List[domain.Project](ctx, tx, store.Query{})
			return err
		})
		if err != nil {
			r.log.Warn("list projects for the metrics", "err", err)
		}
		for _, p := range projects {
			if c, err := pki.ParseCert([]byte(p.CACertPEM)); err == nil {
				m.CertExpiry(metrics.CertProjectCA, p.ID, "", c.NotAfter)
			}
		}
	}

	r.seen.mu.Lock()
	defer r.seen.mu.Unlock()
	for id := range r.seen.nodes {
		if !nowNodes[id] {
			m.ForgetNode(id)
			r.cfg.Tenants.Forget(id)
		}
	}
	for id, p := range r.seen.services {
		if _, ok := nowSvcs[id]; !ok {
			m.ForgetService(p, id)
		}
	}
	r.seen.nodes, r.seen.services = nowNodes, nowSvcs
}
