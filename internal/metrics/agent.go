package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Agent holds one host agent's metrics: its apply passes, the firewall,
// its nodes' states, backups, WAL archiving and certificates, and its
// scrapes of PostgreSQL. The host is the scrape target, so it is not a
// label; nodes are (IDs, forgotten with ForgetNode). A nil *Agent records
// nothing.
type Agent struct {
	passes          prometheus.Counter
	passDuration    prometheus.Histogram
	errors          *prometheus.CounterVec
	appliedRevision prometheus.Gauge

	firewallApplies  *prometheus.CounterVec
	firewallDuration *prometheus.HistogramVec
	firewallElements *prometheus.GaugeVec

	nodeState         *prometheus.GaugeVec
	backupLastSuccess *prometheus.GaugeVec
	backupFailures    *prometheus.CounterVec
	walLastSuccess    *prometheus.GaugeVec
	walLastFailure    *prometheus.GaugeVec
	walFailing        *prometheus.GaugeVec
	certExpiry        *prometheus.GaugeVec

	pgScrapes *prometheus.CounterVec

	mu sync.Mutex // a node state's delete and set do not interleave
}

// NewAgent registers an agent's metrics with reg.
func NewAgent(reg prometheus.Registerer) *Agent {
	node := []string{"node"}
	m := &Agent{
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_agent_apply_passes_total",
			Help: "Applies of a node's desired state on this host.",
		}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_agent_apply_duration_seconds",
			Help:    "Duration of a node's apply.",
			Buckets: passBuckets,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_agent_errors_total",
			Help: "Apply errors by kind.",
		}, []string{"kind"}),
		appliedRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_agent_applied_revision",
			Help: "The desired-state revision every node of this host enforces (the oldest of its nodes').",
		}),
		firewallApplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_firewall_applies_total",
			Help: "nftables transactions applied to a node, by outcome.",
		}, []string{"node", "outcome"}),
		firewallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_firewall_apply_duration_seconds",
			Help:    "Duration of a node's firewall apply, read-back included.",
			Buckets: firewallBuckets,
		}, node),
		firewallElements: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_firewall_set_elements",
			Help: "Elements in a node's allowlist sets after its last apply.",
		}, node),
		nodeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_node_state",
			Help: "1 for the state the agent last reported for each node (running, failed, wiped).",
		}, []string{"node", "state"}),
		backupLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_backup_last_success_timestamp_seconds",
			Help: "When the last base backup taken on each node succeeded.",
		}, node),
		backupFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_agent_backup_failures_total",
			Help: "Failed base backups on each node.",
		}, node),
		walLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_wal_archive_last_success_timestamp_seconds",
			Help: "When each primary last archived a WAL segment.",
		}, node),
		walLastFailure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_wal_archive_last_failure_timestamp_seconds",
			Help: "When each primary last failed to archive a WAL segment.",
		}, node),
		walFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_wal_archive_failing",
			Help: "1 when a primary's last WAL archive attempt failed.",
		}, node),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_agent_certificate_expiry_timestamp_seconds",
			Help: "When each node's certificates expire, by kind (node, replication).",
		}, []string{"kind", "node"}),
		pgScrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_agent_postgres_scrapes_total",
			Help: "Scrapes of a node's PostgreSQL statistics, by outcome.",
		}, []string{"node", "outcome"}),
	}
	reg.MustRegister(m.passes, m.passDuration, m.errors, m.appliedRevision,
		m.firewallApplies, m.firewallDuration, m.firewallElements,
		m.nodeState, m.backupLastSuccess, m.backupFailures, m.walLastSuccess,
		m.walLastFailure, m.walFailing, m.certExpiry, m.pgScrapes)
	return m
}

// ApplyPass records one apply of a node's desired state and the kind of
// its error, if any ("firewall", "volume", "postgres": constants of the
// caller).
func (m *Agent) ApplyPass(d time.Duration, errKind string) {
	if m == nil {
		return
	}
	m.passes.Inc()
	m.passDuration.Observe(d.Seconds())
	if errKind != "" {
		m.errors.WithLabelValues(errKind).Inc()
	}
}

// SetAppliedRevision records the revision every node of the host
// enforces.
func (m *Agent) SetAppliedRevision(rev int64) {
	if m == nil {
		return
	}
	m.appliedRevision.Set(float64(rev))
}

// ObserveFirewallApply records one firewall apply on a node: its duration,
// the elements in the node's sets afterwards, and its error if any.
func (m *Agent) ObserveFirewallApply(node string, d time.Duration, elements int, err error) {
	if m == nil {
		return
	}
	m.firewallApplies.WithLabelValues(node, outcome(err)).Inc()
	m.firewallDuration.WithLabelValues(node).Observe(d.Seconds())
	if err == nil {
		m.firewallElements.WithLabelValues(node).Set(float64(elements))
	}
}

// NodeState records the state the agent reports for a node: its series
// for that state is 1, those for its other states are removed.
func (m *Agent) NodeState(node, state string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodeState.DeletePartialMatch(prometheus.Labels{"node": node})
	m.nodeState.WithLabelValues(node, state).Set(1)
}

// BackupResult records a base backup on a node that finished at t.
func (m *Agent) BackupResult(node string, ok bool, t time.Time) {
	if m == nil {
		return
	}
	if ok {
		m.backupLastSuccess.WithLabelValues(node).Set(unix(t))
		m.backupFailures.WithLabelValues(node) // present at 0
		return
	}
	m.backupFailures.WithLabelValues(node).Inc()
}

// WALArchive records a primary's WAL archiving as last read
// (pg_stat_archiver); zero times are left out.
func (m *Agent) WALArchive(node string, lastSuccess, lastFailure time.Time, failing bool) {
	if m == nil {
		return
	}
	setWAL(m.walLastSuccess, m.walLastFailure, m.walFailing, []string{node}, lastSuccess, lastFailure, failing)
}

// setWAL sets the three WAL archiving gauges of one primary (labels).
func setWAL(success, failure, failingVec *prometheus.GaugeVec, labels []string, lastSuccess, lastFailure time.Time, failing bool) {
	if !lastSuccess.IsZero() {
		success.WithLabelValues(labels...).Set(unix(lastSuccess))
	}
	if !lastFailure.IsZero() {
		failure.WithLabelValues(labels...).Set(unix(lastFailure))
	}
	failingVec.WithLabelValues(labels...).Set(boolFloat(failing))
}

// CertExpiry records when a node's certificate of kind (CertNode,
// CertReplication) expires.
func (m *Agent) CertExpiry(kind, node string, notAfter time.Time) {
	if m == nil {
		return
	}
	m.certExpiry.WithLabelValues(kind, node).Set(unix(notAfter))
}

// PostgresScrape records one scrape of a node's statistics (pgstat).
func (m *Agent) PostgresScrape(node string, err error) {
	if m == nil {
		return
	}
	m.pgScrapes.WithLabelValues(node, outcome(err)).Inc()
}

// ForgetNode removes the series of a node the host no longer runs.
func (m *Agent) ForgetNode(node string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"node": node}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.firewallApplies, m.firewallDuration, m.firewallElements, m.nodeState,
		m.backupLastSuccess, m.backupFailures, m.walLastSuccess, m.walLastFailure,
		m.walFailing, m.certExpiry, m.pgScrapes,
	} {
		v.DeletePartialMatch(l)
	}
}
