package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pki"
)

// value returns the value of name's series whose labels include want, and
// whether there is one.
func value(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// The agent's metrics follow a node's applies: firewall applies by
// outcome and the sets' size, the node's state, its certificates' expiry,
// apply errors by kind; a forgotten node leaves no series.
func TestAgentMetricsFollowApplies(t *testing.T) {
	t.Parallel()
	n, h := fakeNode(t)
	a := n.a
	ca, err := pki.NewCA("test", 48*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := fakeDesired()
	want.TLS.CertPEM = string(ca.CertPEM)
	want.AllowV4 = []string{"192.0.2.1/32", "192.0.2.2/32"}
	n.set(want, 1, false)
	n.applyAndReport(context.Background(), want, 1)
	node := map[string]string{"node": n.id}
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		all := map[string]string{"node": n.id}
		for k, v := range labels {
			all[k] = v
		}
		if got, ok := value(t, a.Gatherer(), name, all); !ok || got != want {
			t.Errorf("%s%v = %v (present %v), want %v", name, all, got, ok, want)
		}
	}
	check("moat_firewall_applies_total", map[string]string{"outcome": "ok"}, 1)
	check("moat_firewall_set_elements", nil, 2)
	check("moat_firewall_apply_duration_seconds", nil, 1)
	check("moat_agent_node_state", map[string]string{"state": apitype.NodeReportRunning}, 1)
	check("moat_agent_certificate_expiry_timestamp_seconds", map[string]string{"kind": "node"},
		float64(ca.Cert.NotAfter.UnixNano())/1e9)

	h.setFail(opFirewall, errFake)
	want.State, want.AllowV4 = stateRunning, []string{"192.0.2.3/32"}
	n.set(want, 2, false)
	n.applyAndReport(context.Background(), want, 2)
	check("moat_firewall_applies_total", map[string]string{"outcome": "error"}, 1)
	check("moat_agent_node_state", map[string]string{"state": apitype.NodeReportFailed}, 1)
	if _, ok := value(t, a.Gatherer(), "moat_agent_node_state", map[string]string{"node": n.id, "state": apitype.NodeReportRunning}); ok {
		t.Error("the node's running series stays beside its failed one")
	}
	if got, _ := value(t, a.Gatherer(), "moat_agent_errors_total", map[string]string{"kind": errKindApply}); got != 1 {
		t.Errorf("moat_agent_errors_total{kind=apply} = %v, want 1", got)
	}

	a.obs.rec.ForgetNode(n.id)
	for _, name := range []string{"moat_firewall_applies_total", "moat_firewall_set_elements", "moat_agent_node_state", "moat_agent_certificate_expiry_timestamp_seconds"} {
		if _, ok := value(t, a.Gatherer(), name, node); ok {
			t.Errorf("%s has a series of the forgotten node", name)
		}
	}
}

// A reported node's statistics are read as the monitoring role over its
// socket, named by service and node; a server that cannot be read gives a
// snapshot that is down; a node being wiped has none.
func TestScrapeStats(t *testing.T) {
	t.Parallel()
	n, _ := fakeNode(t)
	var dsns []string
	fail := error(nil)
	n.a.plat.scrape = func(_ context.Context, dsn string) (pgstat.Snapshot, error) {
		dsns = append(dsns, dsn)
		if fail != nil {
			return pgstat.Snapshot{At: time.Now()}, fail
		}
		return pgstat.Snapshot{At: time.Now(), Up: true, Role: pgstat.RolePrimary}, nil
	}
	want := fakeDesired()
	n.set(want, 1, false)
	if n.scrapeStats(context.Background()) {
		t.Fatal("scraped a node that has not reported yet")
	}
	n.applyAndReport(context.Background(), want, 1)
	if !n.scrapeStats(context.Background()) {
		t.Fatal("did not scrape a running node")
	}
	if s := n.currentStats(); !s.Up || s.Service != want.ServiceID || s.Node != n.id {
		t.Fatalf("stats = %+v, want the node's snapshot, up", s)
	}
	if len(dsns) != 1 || !strings.Contains(dsns[0], "user='moat_monitor'") || !strings.Contains(dsns[0], "host='"+n.socketDir()+"'") {
		t.Errorf("scraped %q, want the monitoring role over the node's socket", dsns)
	}
	if got, _ := value(t, n.a.Gatherer(), "moat_agent_postgres_scrapes_total", map[string]string{"node": n.id, "outcome": "ok"}); got != 1 {
		t.Errorf("scrapes ok = %v, want 1", got)
	}

	fail = errors.New("connection refused")
	n.scrapeStats(context.Background())
	if s := n.currentStats(); s.Up {
		t.Errorf("after a failed scrape the stats are %+v, want a snapshot that is down", s)
	}

	want.State = stateDeleting
	n.set(want, 2, false)
	if n.scrapeStats(context.Background()) {
		t.Error("scraped a node being wiped")
	}
}

// statsSource is a fakeSource that takes statistics.
type statsSource struct {
	*fakeSource
	got chan apitype.HostStats
}

func (s statsSource) Stats(ctx context.Context, host string, st apitype.HostStats) error {
	select {
	case s.got <- st:
	case <-ctx.Done():
	}
	return nil
}

// The agent sends its nodes' statistics every StatsInterval, to a source
// that takes them.
func TestStatsSent(t *testing.T) {
	t.Parallel()
	n, _ := fakeNode(t)
	a := n.a
	src := statsSource{newFakeSource("h"), make(chan apitype.HostStats)}
	a.cfg.Source, a.cfg.StatsInterval = src, 10*time.Millisecond
	a.plat.scrape = func(context.Context, string) (pgstat.Snapshot, error) {
		return pgstat.Snapshot{At: time.Now(), Up: true, Role: pgstat.RolePrimary}, nil
	}
	want := fakeDesired()
	n.set(want, 1, false)
	n.applyAndReport(context.Background(), want, 1)
	a.nodes[n.id] = n
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.scrapeLoop(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case st := <-src.got:
		if len(st.Nodes) != 1 || st.Nodes[0].Node != n.id || !st.Nodes[0].Up {
			t.Errorf("sent %+v, want the node's snapshot", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no statistics sent")
	}
}

// The agent's metrics listener stays on loopback unless asked otherwise,
// and serves the agent's metrics while it runs.
func TestMetricsListener(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("/tmp", "moat-agent-metrics-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Host: "h", Source: newFakeSource("h"), DataDir: dir, MetricsListen: "0.0.0.0:0"}
	if _, err := New(cfg); !errors.Is(err, metrics.ErrPublicAddress) {
		t.Fatalf("New with metrics on 0.0.0.0 = %v, want ErrPublicAddress", err)
	}
	cfg.MetricsListen = "127.0.0.1:0"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	url := a.MetricsURL()
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("MetricsURL = %q, want http://127.0.0.1:PORT/metrics", url)
	}
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	if !strings.Contains(string(body), "moat_agent_apply_passes_total 0") {
		t.Errorf("the agent's metrics lack moat_agent_apply_passes_total:\n%s", body)
	}
}
