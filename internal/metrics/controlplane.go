package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Histogram buckets, in seconds.
var (
	latencyBuckets   = prometheus.DefBuckets // 5 ms .. 10 s
	enforceBuckets   = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120}
	passBuckets      = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	firewallBuckets  = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	operationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200}
	heartbeatBuckets = []float64{0.5, 1, 1.1, 1.25, 1.5, 2, 2.5, 3, 4, 6, 10, 15, 30}
)

// Outcomes of a firewall apply or a scrape.
const (
	OutcomeOK    = "ok"
	OutcomeError = "error"
)

func outcome(err error) string {
	if err != nil {
		return OutcomeError
	}
	return OutcomeOK
}

// ControlPlane holds the control plane's metrics. Every label value must
// come from a bounded set: an object's ID, a route pattern, a constant
// kind. A nil *ControlPlane records nothing.
type ControlPlane struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec

	reconcilePasses   prometheus.Counter
	reconcileDuration prometheus.Histogram
	reconcileErrors   *prometheus.CounterVec

	desiredRevision prometheus.Gauge
	hostApplied     *prometheus.GaugeVec
	hostLag         *prometheus.GaugeVec
	hostHeartbeat   *prometheus.GaugeVec
	heartbeatGap    prometheus.Histogram

	allowlistEnforce *prometheus.HistogramVec
	allowlistPending *prometheus.GaugeVec

	operations        *prometheus.CounterVec
	operationDuration *prometheus.HistogramVec

	backupLastSuccess *prometheus.GaugeVec
	backupFailures    *prometheus.CounterVec
	backupInterval    *prometheus.GaugeVec
	walLastSuccess    *prometheus.GaugeVec
	walLastFailure    *prometheus.GaugeVec
	walFailing        *prometheus.GaugeVec

	certExpiry *prometheus.GaugeVec
	nodeState  *prometheus.GaugeVec

	mu      sync.Mutex // guards desired and applied, to keep lags consistent
	desired int64
	applied map[string]int64 // by host
	// states is each node's state series, so that recording the same
	// state again (every reconciler pass) costs a map lookup.
	states map[string][3]string // node → project, service, state
	// hostDesired is each host's own desired revision (a change wakes
	// only the hosts it affects); a host without one is behind desired.
	hostDesired map[string]int64
}

// NewControlPlane registers the control plane's metrics with reg.
func NewControlPlane(reg prometheus.Registerer) *ControlPlane {
	m := &ControlPlane{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_api_requests_total",
			Help: "API requests by route pattern and HTTP status.",
		}, []string{"route", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_api_request_duration_seconds",
			Help:    "API request latency by route pattern and HTTP status.",
			Buckets: latencyBuckets,
		}, []string{"route", "status"}),

		reconcilePasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_reconcile_passes_total",
			Help: "Reconciler passes over the store.",
		}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_reconcile_pass_duration_seconds",
			Help:    "Duration of a reconciler pass.",
			Buckets: passBuckets,
		}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_reconcile_errors_total",
			Help: "Reconciler errors by kind.",
		}, []string{"kind"}),

		desiredRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_desired_state_revision",
			Help: "The desired state's current revision.",
		}),
		hostApplied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_host_applied_revision",
			Help: "The desired-state revision each host last reported applied.",
		}, []string{"host"}),
		hostLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_host_revision_lag",
			Help: "Revisions each host is behind the desired state.",
		}, []string{"host"}),
		hostHeartbeat: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_host_last_heartbeat_timestamp_seconds",
			Help: "When each host's agent last reported or polled.",
		}, []string{"host"}),

		heartbeatGap: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_host_heartbeat_gap_seconds",
			Help:    "Time between two consecutive reports of one host as the control plane records them: how late heartbeats arrive (a host is down past the host timeout).",
			Buckets: heartbeatBuckets,
		}),

		allowlistEnforce: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_allowlist_enforce_duration_seconds",
			Help:    "Time from an allowlist change's commit to every node of the service enforcing it.",
			Buckets: enforceBuckets,
		}, []string{"project", "service"}),
		allowlistPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_allowlist_pending_since_timestamp_seconds",
			Help: "Commit time of the oldest allowlist change not yet enforced on every node; absent when none is pending.",
		}, []string{"project", "service"}),

		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_operations_total",
			Help: "Finished operations by kind and outcome.",
		}, []string{"kind", "outcome"}),
		operationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_operation_duration_seconds",
			Help:    "Duration of finished operations by kind and outcome.",
			Buckets: operationBuckets,
		}, []string{"kind", "outcome"}),

		backupLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_backup_last_success_timestamp_seconds",
			Help: "When each service's last base backup succeeded.",
		}, []string{"project", "service"}),
		backupFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_backup_failures_total",
			Help: "Failed base backups by service.",
		}, []string{"project", "service"}),
		backupInterval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_backup_interval_seconds",
			Help: "Each service's base backup interval.",
		}, []string{"project", "service"}),
		walLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_wal_archive_last_success_timestamp_seconds",
			Help: "When each primary last archived a WAL segment.",
		}, []string{"project", "service", "node"}),
		walLastFailure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_wal_archive_last_failure_timestamp_seconds",
			Help: "When each primary last failed to archive a WAL segment.",
		}, []string{"project", "service", "node"}),
		walFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_wal_archive_failing",
			Help: "1 when a primary's last WAL archive attempt failed.",
		}, []string{"project", "service", "node"}),

		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_pki_certificate_expiry_timestamp_seconds",
			Help: "When each certificate expires, by kind (api, project_ca, internal_ca, node, replication, agent).",
		}, []string{"kind", "project", "node"}),
		nodeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_node_state",
			Help: "1 for each node's current state.",
		}, []string{"project", "service", "node", "state"}),

		applied:     map[string]int64{},
		states:      map[string][3]string{},
		hostDesired: map[string]int64{},
	}
	reg.MustRegister(m.requests, m.requestDuration, m.reconcilePasses, m.reconcileDuration,
		m.reconcileErrors, m.desiredRevision, m.hostApplied, m.hostLag, m.hostHeartbeat, m.heartbeatGap,
		m.allowlistEnforce, m.allowlistPending, m.operations, m.operationDuration,
		m.backupLastSuccess, m.backupFailures, m.backupInterval, m.walLastSuccess,
		m.walLastFailure, m.walFailing, m.certExpiry, m.nodeState)
	return m
}

// ObserveRequest records one API request: route is the pattern that
// matched ("GET /v1/projects/{p}/services/{s}"), or "unmatched"; never the
// request's path.
func (m *ControlPlane) ObserveRequest(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	code := strconv.Itoa(status)
	m.requests.WithLabelValues(route, code).Inc()
	m.requestDuration.WithLabelValues(route, code).Observe(d.Seconds())
}

// ReconcilePass records one reconciler pass and the kinds of the errors it
// met, one entry per error ("place_node", "certificate", ...: constants).
func (m *ControlPlane) ReconcilePass(d time.Duration, errKinds ...string) {
	if m == nil {
		return
	}
	m.reconcilePasses.Inc()
	m.reconcileDuration.Observe(d.Seconds())
	for _, k := range errKinds {
		m.reconcileErrors.WithLabelValues(k).Inc()
	}
}

// SetDesiredRevision records the desired state's revision (after each
// commit that bumps it, or when the control plane reads it).
func (m *ControlPlane) SetDesiredRevision(rev int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.desired = rev
	m.desiredRevision.Set(float64(rev))
	for host, a := range m.applied {
		m.hostLag.WithLabelValues(host).Set(float64(max(0, m.hostTarget(host)-a)))
	}
}

// SetHostDesired records the desired revision served to host (its own:
// the last change that affected it), which its lag is measured against;
// the desired state's revision is at least that.
func (m *ControlPlane) SetHostDesired(host string, rev int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hostDesired[host] = rev
	if rev > m.desired {
		m.desired = rev
		m.desiredRevision.Set(float64(rev))
	}
	if a, ok := m.applied[host]; ok {
		m.hostLag.WithLabelValues(host).Set(float64(max(0, rev-a)))
	}
}

// hostTarget is the revision host should have applied. m.mu must be held.
func (m *ControlPlane) hostTarget(host string) int64 {
	if r, ok := m.hostDesired[host]; ok {
		return r
	}
	return m.desired
}

// SetHostApplied records the revision a host reported applied.
func (m *ControlPlane) SetHostApplied(host string, rev int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied[host] = rev
	m.hostApplied.WithLabelValues(host).Set(float64(rev))
	m.hostLag.WithLabelValues(host).Set(float64(max(0, m.hostTarget(host)-rev)))
}

// HostHeartbeat records that host's agent was heard from at t (a report or
// a poll).
func (m *ControlPlane) HostHeartbeat(host string, t time.Time) {
	if m == nil {
		return
	}
	m.hostHeartbeat.WithLabelValues(host).Set(unix(t))
}

// ObserveHeartbeatGap records the time between two consecutive reports
// of one host.
func (m *ControlPlane) ObserveHeartbeatGap(d time.Duration) {
	if m == nil {
		return
	}
	m.heartbeatGap.Observe(d.Seconds())
}

// ObserveAllowlistEnforced records that every node of a service enforces
// an allowlist change d after it was committed, and clears its pending
// time.
func (m *ControlPlane) ObserveAllowlistEnforced(project, service string, d time.Duration) {
	if m == nil {
		return
	}
	m.allowlistEnforce.WithLabelValues(project, service).Observe(d.Seconds())
	m.allowlistPending.DeleteLabelValues(project, service)
}

// AllowlistPending records that a service has an allowlist change,
// committed at since, that not every node enforces yet. Call it with the
// oldest such change; ObserveAllowlistEnforced clears it.
func (m *ControlPlane) AllowlistPending(project, service string, since time.Time) {
	if m == nil {
		return
	}
	m.allowlistPending.WithLabelValues(project, service).Set(unix(since))
}

// OperationDone records a finished operation: kind as stored
// ("service.backup"), outcome its final state ("succeeded", "failed").
func (m *ControlPlane) OperationDone(kind, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.operations.WithLabelValues(kind, outcome).Inc()
	m.operationDuration.WithLabelValues(kind, outcome).Observe(d.Seconds())
}

// BackupResult records a base backup of a service that finished at t.
func (m *ControlPlane) BackupResult(project, service string, ok bool, t time.Time) {
	if m == nil {
		return
	}
	if ok {
		m.backupLastSuccess.WithLabelValues(project, service).Set(unix(t))
		m.backupFailures.WithLabelValues(project, service) // present at 0
		return
	}
	m.backupFailures.WithLabelValues(project, service).Inc()
}

// BackupInterval records a service's backup schedule, which the alert on
// stale backups compares the last success with.
func (m *ControlPlane) BackupInterval(project, service string, every time.Duration) {
	if m == nil {
		return
	}
	m.backupInterval.WithLabelValues(project, service).Set(every.Seconds())
}

// WALArchive records a primary's WAL archiving as its agent reported it
// (apitype.ArchiveStatus); zero times are left out.
func (m *ControlPlane) WALArchive(project, service, node string, lastSuccess, lastFailure time.Time, failing bool) {
	if m == nil {
		return
	}
	setWAL(m.walLastSuccess, m.walLastFailure, m.walFailing, []string{project, service, node}, lastSuccess, lastFailure, failing)
}

// Certificate kinds for CertExpiry.
const (
	CertAPI         = "api"
	CertProjectCA   = "project_ca"
	CertInternalCA  = "internal_ca"
	CertNode        = "node"
	CertReplication = "replication"
	CertAgent       = "agent"
)

// CertExpiry records when a certificate expires. project and node are the
// IDs it belongs to, or "" (the API's certificate has neither).
func (m *ControlPlane) CertExpiry(kind, project, node string, notAfter time.Time) {
	if m == nil {
		return
	}
	m.certExpiry.WithLabelValues(kind, project, node).Set(unix(notAfter))
}

// NodeState records a node's current state (domain.State*): its series
// for that state is 1, and those for its other states are removed.
func (m *ControlPlane) NodeState(project, service, node, state string) {
	if m == nil {
		return
	}
	m.mu.Lock() // a delete and a set must not interleave with another's
	defer m.mu.Unlock()
	cur := [3]string{project, service, state}
	if old, ok := m.states[node]; ok {
		if old == cur {
			return
		}
		m.nodeState.DeleteLabelValues(old[0], old[1], node, old[2])
	}
	m.states[node] = cur
	m.nodeState.WithLabelValues(project, service, node, state).Set(1)
}

// ForgetNode removes every series of a node that is gone.
func (m *ControlPlane) ForgetNode(node string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"node": node}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.states, node)
	for _, v := range []*prometheus.GaugeVec{m.walLastSuccess, m.walLastFailure, m.walFailing, m.certExpiry, m.nodeState} {
		v.DeletePartialMatch(l)
	}
}

// ForgetService removes every series of a service that is gone (its nodes
// go with ForgetNode).
func (m *ControlPlane) ForgetService(project, service string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"project": project, "service": service}
	m.mu.Lock()
	defer m.mu.Unlock()
	for node, s := range m.states {
		if s[0] == project && s[1] == service {
			delete(m.states, node)
		}
	}
	m.allowlistEnforce.DeletePartialMatch(l)
	m.backupFailures.DeletePartialMatch(l)
	for _, v := range []*prometheus.GaugeVec{m.allowlistPending, m.backupLastSuccess, m.backupInterval, m.walLastSuccess, m.walLastFailure, m.walFailing, m.nodeState} {
		v.DeletePartialMatch(l)
	}
}

// ForgetHost removes every series of a host that is gone.
func (m *ControlPlane) ForgetHost(host string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.applied, host)
	delete(m.hostDesired, host)
	for _, v := range []*prometheus.GaugeVec{m.hostApplied, m.hostLag, m.hostHeartbeat} {
		v.DeleteLabelValues(host)
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Middleware records every request next serves with ObserveRequest. next
// is (or ends in) an http.ServeMux: the mux sets the request's Pattern,
// which is the route label ("unmatched" when no route matched). Wrap the
// mux once: `handler = cp.Middleware(mux)`.
func (m *ControlPlane) Middleware(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		m.ObserveRequest(route, status, time.Since(start))
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer's Flush and
// deadlines (the agents' long poll).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
