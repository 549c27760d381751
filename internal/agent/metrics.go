package agent

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/postgres"
)

// The agent's observability: its own Prometheus metrics (metrics.Agent,
// served on Config.MetricsListen), and the scrapes of each node's
// PostgreSQL statistics that go to the control plane (StatsSink) for the
// project's tenants (design 0013).

// StatsSink is a Source that also takes the nodes' PostgreSQL statistics
// (APISource does: POST /v1/hosts/{host}/stats). With a Source that is
// not one, the agent reads no statistics.
type StatsSink interface {
	Stats(ctx context.Context, host string, s apitype.HostStats) error
}

// DefaultStatsInterval is how often the agent reads each node's
// statistics when Config.StatsInterval is zero.
const DefaultStatsInterval = 15 * time.Second

// statsTimeout bounds one node's scrape.
const statsTimeout = 5 * time.Second

// Error kinds of metrics.Agent.ApplyPass.
const (
	errKindApply      = "apply"
	errKindVolumeLost = "volume_lost"
)

// observer holds the agent's metrics and their listener.
type observer struct {
	reg *prometheus.Registry
	rec *metrics.Agent
	ln  net.Listener // nil without Config.MetricsListen
}

func newObserver() observer {
	reg := metrics.NewRegistry()
	return observer{reg: reg, rec: metrics.NewAgent(reg)}
}

// listenMetrics opens Config.MetricsListen, if set (loopback only unless
// Config.MetricsPublic: metrics.Listen).
func (a *Agent) listenMetrics() error {
	if a.cfg.MetricsListen == "" {
		return nil
	}
	ln, err := metrics.Listen(a.cfg.MetricsListen, a.cfg.MetricsPublic)
	if err != nil {
		return err
	}
	a.obs.ln = ln
	return nil
}

// MetricsURL returns the agent's metrics endpoint (http://HOST:PORT/metrics),
// or "" without Config.MetricsListen.
func (a *Agent) MetricsURL() string {
	if a.obs.ln == nil {
		return ""
	}
	return "http://" + a.obs.ln.Addr().String() + "/metrics"
}

// Gatherer returns the agent's metrics, served or not.
func (a *Agent) Gatherer() prometheus.Gatherer { return a.obs.reg }

// serveMetrics serves the metrics until ctx ends, if there is a listener.
func (a *Agent) serveMetrics(ctx context.Context) {
	if a.obs.ln == nil {
		return
	}
	a.log.Info("metrics listening", "url", a.MetricsURL())
	if err := metrics.Serve(ctx, a.obs.ln, a.obs.reg, a.log); err != nil {
		a.log.Error("metrics", "err", err)
	}
}

// scrapeLoop reads every node's statistics every Config.StatsInterval
// and sends them, until ctx ends. It runs beside the nodes' workers, so a
// slow server never delays an apply.
func (a *Agent) scrapeLoop(ctx context.Context) {
	sink, ok := a.cfg.Source.(StatsSink)
	if a.plat.scrape == nil || !ok {
		return
	}
	every := a.cfg.StatsInterval
	if every <= 0 {
		every = DefaultStatsInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastErr := "" // the last send's error, logged when it changes
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		nodes := make([]*node, 0, len(a.nodes))
		for _, n := range a.nodes {
			nodes = append(nodes, n)
		}
		a.mu.Unlock()
		var st apitype.HostStats
		for _, n := range nodes {
			if n.scrapeStats(ctx) {
				st.Nodes = append(st.Nodes, n.currentStats())
			}
		}
		if len(st.Nodes) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := sink.Stats(sctx, a.cfg.Host, st)
		cancel()
		if msg := errText(err); msg != lastErr && ctx.Err() == nil {
			if err != nil {
				a.log.Warn("send postgresql statistics", "err", err) // the next round sends newer ones
			}
			lastErr = msg
		}
	}
}

// currentStats returns the node's latest statistics (scrapeStats set
// them).
func (n *node) currentStats() pgstat.Snapshot {
	n.mu.Lock()
	defer n.mu.Unlock()
	return *n.stats
}

// scrapeStats reads the node's statistics as the monitoring role, if the
// node is reported (applied, or failed) and not being wiped, and keeps
// them to send. A server that cannot be read gives a snapshot with
// Up false (pg_up 0 for the tenant). It reports whether it scraped.
func (n *node) scrapeStats(ctx context.Context) bool {
	n.mu.Lock()
	want, reported := n.want, n.hasRep && !n.gone && n.want.State != stateDeleting
	if !reported {
		n.stats = nil
	}
	n.mu.Unlock()
	if !reported {
		return false
	}
	snap, err := n.a.plat.scrape(ctx, postgres.MonitorDSN(n.socketDir(), taskPort(want)))
	if ctx.Err() != nil {
		return false
	}
	n.a.obs.rec.PostgresScrape(n.id, err)
	if msg := errText(err); msg != n.statsErr {
		if err != nil {
			n.a.log.Warn("read postgresql statistics", "node", n.id, "err", err)
		}
		n.statsErr = msg
	}
	snap.Service, snap.Node = want.ServiceID, n.id
	n.mu.Lock()
	n.stats = &snap
	n.mu.Unlock()
	return true
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// scrapeDSN is the real platform's scrape.
func scrapeDSN(ctx context.Context, dsn string) (pgstat.Snapshot, error) {
	return pgstat.ScrapeDSN(ctx, dsn, statsTimeout)
}

// observeApply records one apply of the node and its outcome.
func (n *node) observeApply(d time.Duration, err error) {
	kind := ""
	switch {
	case err == nil, errors.Is(err, errWaiting):
	case errors.Is(err, errVolumeLost):
		kind = errKindVolumeLost
	default:
		kind = errKindApply
	}
	n.a.obs.rec.ApplyPass(d, kind)
}

// observeCerts records when the node's certificates expire.
func (n *node) observeCerts(want apitype.NodeDesired) {
	for _, c := range []struct{ kind, pem string }{
		{metrics.CertNode, want.TLS.CertPEM},
		{metrics.CertReplication, want.TLS.ReplCertPEM},
	} {
		if cert, err := pki.ParseCert([]byte(c.pem)); err == nil {
			n.a.obs.rec.CertExpiry(c.kind, n.id, cert.NotAfter)
		}
	}
}

// observeArchive records a primary's WAL archiving.
func (n *node) observeArchive(st *apitype.ArchiveStatus) {
	if st != nil {
		n.a.obs.rec.WALArchive(n.id, st.LastArchivedAt, st.LastFailedAt, st.Failing)
	}
}

// observeTask records a finished base backup.
func (n *node) observeTask(t apitype.NodeTask, rep apitype.TaskReport) {
	if t.Type == apitype.TaskBaseBackup {
		n.a.obs.rec.BackupResult(n.id, rep.State == apitype.TaskDone, time.Now())
	}
}

// observeReport records what a report the control plane took says: the
// revision every node enforces (the oldest of the running nodes').
func (a *Agent) observeReport(r apitype.HostReport) {
	applied := int64(-1)
	for _, n := range r.Nodes {
		if n.State == apitype.NodeReportRunning && (applied < 0 || n.Revision < applied) {
			applied = n.Revision
		}
	}
	if applied >= 0 {
		a.obs.rec.SetAppliedRevision(applied)
	}
}
