package apiserver

import (
	"errors"
	"fmt"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/store"
)

// metricsContentType is the Prometheus text exposition format, which
// GET /v1/projects/{p}/metrics answers unless the scraper asks for
// another (promhttp negotiates).
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// projectMetrics serves the project's PostgreSQL metrics: the latest
// statistics of each node of its services (design 0013). authorize has
// scoped the token to the project, so a node of another project is never
// rendered.
func (s *Server) projectMetrics(c *call) error {
	s.cfg.Tenants.Handler(c.project).ServeHTTP(c.w, c.r)
	return nil
}

// maxStatsNodes bounds the snapshots of one stats post.
const maxStatsNodes = 1000

// hostStats keeps an agent's statistics of its nodes for the tenants,
// each under the node's own project, service and ID (whatever the
// snapshot says). A node that is not live on this host is skipped (it
// may have been deleted since the scrape). Nothing is stored, so nothing
// is audited: the agents post every few seconds.
func (s *Server) hostStats(c *call) error {
	host := c.r.PathValue("host")
	var in apitype.HostStats
	if err := c.decode(&in); err != nil {
		return err
	}
	if len(in.Nodes) > maxStatsNodes {
		return &apiError{status: 400, code: "too_many_nodes", field: "nodes", msg: fmt.Sprintf("%d snapshots, at most %d", len(in.Nodes), maxStatsNodes), hint: "send one snapshot per node of the host"}
	}
	keep := make([]nodeStats, 0, len(in.Nodes))
	err := c.view(func(tx store.Tx) error {
		for _, snap := range in.Nodes {
			n, err := store.Get[domain.Node](c.ctx, tx, snap.Node)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if n.Host != host || !n.AcceptsReports() {
				continue
			}
			keep = append(keep, nodeStats{node: n, snap: snap})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, st := range keep {
		st.snap.Service, st.snap.Node = st.node.ServiceID, st.node.ID
		s.cfg.Tenants.Update(st.node.ProjectID, st.snap)
	}
	c.w.WriteHeader(204)
	return nil
}

// nodeStats is a node's statistics from its agent.
type nodeStats struct {
	node *domain.Node
	snap pgstat.Snapshot
}

// observeEnded records, for the metrics, a failed base backup of a
// service (the reconciler records its last success from the service's
// newest backup).
func (s *Server) observeEnded(op *domain.Operation) {
	if op.Type == domain.OpServiceBackup && op.State == domain.StateFailed {
		s.cfg.Metrics.BackupResult(op.ProjectID, op.TargetID, false, op.UpdatedAt)
	}
}
