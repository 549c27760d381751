package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Agent holds one host agent's metrics: its apply passes, the firewall and
// its scrapes of PostgreSQL. The host is the scrape target, so it is not a
// label. A nil *Agent records nothing.
type Agent struct {
	passes          prometheus.Counter
	passDuration    prometheus.Histogram
	errors          *prometheus.CounterVec
	appliedRevision prometheus.Gauge

	firewallApplies  *prometheus.CounterVec
	firewallDuration *prometheus.HistogramVec
	firewallElements *prometheus.GaugeVec

	pgScrapes *prometheus.CounterVec
}

// NewAgent registers an agent's metrics with reg.
func NewAgent(reg prometheus.Registerer) *Agent {
	m := &Agent{
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_agent_apply_passes_total",
			Help: "Passes applying the desired state to this host's nodes.",
		}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_agent_apply_duration_seconds",
			Help:    "Duration of an apply pass.",
			Buckets: passBuckets,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_agent_errors_total",
			Help: "Apply errors by kind.",
		}, []string{"kind"}),
		appliedRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_agent_applied_revision",
			Help: "The desired-state revision this host last applied.",
		}),
		firewallApplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_firewall_applies_total",
			Help: "nftables transactions applied to a node, by outcome.",
		}, []string{"node", "outcome"}),
		firewallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_firewall_apply_duration_seconds",
			Help:    "Duration of a node's firewall apply, read-back included.",
			Buckets: firewallBuckets,
		}, []string{"node"}),
		firewallElements: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_firewall_set_elements",
			Help: "Elements in a node's allowlist sets after its last apply.",
		}, []string{"node"}),
		pgScrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_agent_postgres_scrapes_total",
			Help: "Scrapes of a node's PostgreSQL statistics, by outcome.",
		}, []string{"node", "outcome"}),
	}
	reg.MustRegister(m.passes, m.passDuration, m.errors, m.appliedRevision,
		m.firewallApplies, m.firewallDuration, m.firewallElements, m.pgScrapes)
	return m
}

// ApplyPass records one pass over the host's desired state, the revision
// it applied, and one error kind per error ("firewall", "postgres",
// "tls", ...: constants).
func (m *Agent) ApplyPass(d time.Duration, revision int64, errKinds ...string) {
	if m == nil {
		return
	}
	m.passes.Inc()
	m.passDuration.Observe(d.Seconds())
	if len(errKinds) == 0 {
		m.appliedRevision.Set(float64(revision))
	}
	for _, k := range errKinds {
		m.errors.WithLabelValues(k).Inc()
	}
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
	m.firewallApplies.DeletePartialMatch(l)
	m.firewallDuration.DeletePartialMatch(l)
	m.firewallElements.DeletePartialMatch(l)
	m.pgScrapes.DeletePartialMatch(l)
}
