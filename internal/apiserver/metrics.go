package apiserver

import (
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics/pgstat"
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

// nodeStats is a node's statistics from its agent's report.
type nodeStats struct {
	node *domain.Node
	snap pgstat.Snapshot
}

// keepStats stores reported statistics for the tenants, under the
// node's own project, service and ID (whatever the report said).
func (s *Server) keepStats(stats []nodeStats) {
	for _, st := range stats {
		st.snap.Service, st.snap.Node = st.node.ServiceID, st.node.ID
		s.cfg.Tenants.Update(st.node.ProjectID, st.snap)
	}
}

// observeEnded records, for the metrics, a failed base backup of a
// service (the reconciler records its last success from the service's
// newest backup).
func (s *Server) observeEnded(op *domain.Operation) {
	if op.Type == domain.OpServiceBackup && op.State == domain.StateFailed {
		s.cfg.Metrics.BackupResult(op.ProjectID, op.TargetID, false, op.UpdatedAt)
	}
}
