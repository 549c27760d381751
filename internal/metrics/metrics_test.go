package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/promtest"
	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/testenv"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// allowedLabels are the only label names platform metrics may carry: IDs
// from bounded sets, never a CIDR, a user or an address.
var allowedLabels = map[string]bool{
	"project": true, "service": true, "node": true, "host": true,
	"route": true, "method": true, "status": true, "code": true,
	"kind": true, "outcome": true, "component": true, "state": true,
	"region": true, "az": true,
	"le": true, // histogram buckets
}

// metricName is moat_<component>_<thing>[_<unit>].
var metricName = regexp.MustCompile(`^moat_[a-z]+(_[a-z0-9]+)+$`)

// exercise records one value through every method of cp and ag, so every
// vector has a series.
func exercise(cp *metrics.ControlPlane, ag *metrics.Agent) {
	now := time.Unix(1_800_000_000, 0)
	cp.ObserveRequest("GET /v1/projects/{p}/services/{s}", 200, 12*time.Millisecond)
	cp.ObserveRequest("POST /v1/projects/{p}/services", 422, 3*time.Millisecond)
	cp.ReconcilePass(40*time.Millisecond, "place_node", "certificate")
	cp.SetDesiredRevision(12)
	cp.SetHostApplied("local", 10)
	cp.HostHeartbeat("local", now)
	cp.AllowlistPending("prj-1", "svc-1", now)
	cp.ObserveAllowlistEnforced("prj-1", "svc-2", 800*time.Millisecond)
	cp.OperationDone("service.backup", "succeeded", 30*time.Second)
	cp.BackupResult("prj-1", "svc-1", true, now)
	cp.BackupResult("prj-1", "svc-1", false, now)
	cp.BackupInterval("prj-1", "svc-1", 24*time.Hour)
	cp.WALArchive("prj-1", "svc-1", "node-1", now, now.Add(-time.Hour), false)
	cp.CertExpiry(metrics.CertNode, "prj-1", "node-1", now.Add(90*24*time.Hour))
	cp.CertExpiry(metrics.CertAPI, "", "", now.Add(365*24*time.Hour))
	cp.NodeState("prj-1", "svc-1", "node-1", "running")
	ag.ApplyPass(20*time.Millisecond, "firewall")
	ag.ApplyPass(20*time.Millisecond, "")
	ag.SetAppliedRevision(12)
	ag.NodeState("node-1", "running")
	ag.BackupResult("node-1", true, now)
	ag.BackupResult("node-1", false, now)
	ag.WALArchive("node-1", now, now.Add(-time.Hour), false)
	ag.CertExpiry(metrics.CertNode, "node-1", now.Add(90*24*time.Hour))
	ag.ObserveFirewallApply("node-1", 3*time.Millisecond, 42, nil)
	ag.ObserveFirewallApply("node-1", 3*time.Millisecond, 0, errors.New("netlink"))
	ag.PostgresScrape("node-1", nil)
}

func exercised(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := metrics.NewRegistry()
	cp, ag := metrics.NewControlPlane(reg), metrics.NewAgent(reg)
	exercise(cp, ag)
	return reg
}

func TestPlatformNamesAndLabels(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry() // without the Go and process collectors
	cp, ag := metrics.NewControlPlane(reg), metrics.NewAgent(reg)
	exercise(cp, ag)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) < 25 {
		t.Errorf("gathered %d families, want every metric (exercise misses some?)", len(families))
	}
	for _, f := range families {
		name := f.GetName()
		if !metricName.MatchString(name) {
			t.Errorf("%s: not moat_<component>_<thing>_<unit>", name)
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("%s: a counter whose name does not end in _total", name)
		}
		if f.GetType() != dto.MetricType_COUNTER && strings.HasSuffix(name, "_total") {
			t.Errorf("%s: ends in _total but is a %v", name, f.GetType())
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowedLabels[l.GetName()] {
					t.Errorf("%s: label %q is not in the bounded set", name, l.GetName())
				}
				if isAddress(l.GetValue()) {
					t.Errorf("%s: label %s=%q is an address or a CIDR", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// isAddress reports whether a label value is an IP address, a CIDR or a
// host:port: values no platform label may carry (unbounded, and a
// tenant's).
func isAddress(v string) bool {
	if _, err := netip.ParseAddr(v); err == nil {
		return true
	}
	if _, err := netip.ParsePrefix(v); err == nil {
		return true
	}
	_, err := netip.ParseAddrPort(v)
	return err == nil
}

func TestPlatformExpositionPassesPromtool(t *testing.T) {
	t.Parallel()
	reg := exercised(t)
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	promtest.CheckMetrics(t, get(t, srv.Client(), srv.URL, ""))
}

func get(t *testing.T, c *http.Client, url, token string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return body
}

func TestRevisionLag(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cp := metrics.NewControlPlane(reg)
	cp.SetHostApplied("a", 5)
	cp.SetDesiredRevision(9)
	cp.SetHostApplied("b", 9)
	cp.SetDesiredRevision(11)
	want := `
# HELP moat_host_revision_lag Revisions each host is behind the desired state.
# TYPE moat_host_revision_lag gauge
moat_host_revision_lag{host="a"} 6
moat_host_revision_lag{host="b"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "moat_host_revision_lag"); err != nil {
		t.Error(err)
	}
	cp.ForgetHost("a")
	if n := testutil.CollectAndCount(reg, "moat_host_revision_lag", "moat_host_applied_revision"); n != 2 {
		t.Errorf("after ForgetHost: %d series, want 2 (host b's)", n)
	}
}

func TestNodeStateKeepsOneState(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cp := metrics.NewControlPlane(reg)
	cp.NodeState("p", "s", "n1", "creating")
	cp.NodeState("p", "s", "n1", "running")
	cp.NodeState("p", "s", "n2", "creating")
	want := `
# HELP moat_node_state 1 for each node's current state.
# TYPE moat_node_state gauge
moat_node_state{node="n1",project="p",service="s",state="running"} 1
moat_node_state{node="n2",project="p",service="s",state="creating"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "moat_node_state"); err != nil {
		t.Error(err)
	}
	cp.ForgetService("p", "s")
	cp.ForgetNode("n1")
	if n := testutil.CollectAndCount(reg, "moat_node_state"); n != 0 {
		t.Errorf("after forgetting the service: %d series left, want 0", n)
	}
	// A node recorded again after being forgotten has its series back.
	cp.NodeState("p", "s", "n2", "creating")
	if n := testutil.CollectAndCount(reg, "moat_node_state"); n != 1 {
		t.Errorf("recorded again after ForgetService: %d series, want 1", n)
	}
}

func TestAllowlistPendingClearedWhenEnforced(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cp := metrics.NewControlPlane(reg)
	cp.AllowlistPending("p", "s", time.Unix(100, 0))
	want := `
# HELP moat_allowlist_pending_since_timestamp_seconds Commit time of the oldest allowlist change not yet enforced on every node; absent when none is pending.
# TYPE moat_allowlist_pending_since_timestamp_seconds gauge
moat_allowlist_pending_since_timestamp_seconds{project="p",service="s"} 100
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "moat_allowlist_pending_since_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	cp.ObserveAllowlistEnforced("p", "s", 1500*time.Millisecond)
	if n := testutil.CollectAndCount(reg, "moat_allowlist_pending_since_timestamp_seconds"); n != 0 {
		t.Errorf("after enforcement: %d pending series, want 0", n)
	}
	if n := testutil.CollectAndCount(reg, "moat_allowlist_enforce_duration_seconds"); n != 1 {
		t.Errorf("%d enforce histograms, want 1", n)
	}
}

func TestNilRecordsNothing(t *testing.T) {
	t.Parallel()
	var cp *metrics.ControlPlane
	var ag *metrics.Agent
	exercise(cp, ag) // must not panic
	cp.ForgetNode("n")
	cp.ForgetService("p", "s")
	cp.ForgetHost("h")
	ag.ForgetNode("n")
}

func TestListenRefusesPublicAddresses(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		l, err := metrics.Listen(addr, false)
		if !errors.Is(err, metrics.ErrPublicAddress) {
			if l != nil {
				l.Close()
			}
			t.Errorf("Listen(%q, false) = %v, want ErrPublicAddress", addr, err)
		}
	}
	// Allowed explicitly, the address is tried (192.0.2.1 is not ours, so
	// the bind itself fails; nothing listens on a public interface here).
	if _, err := metrics.Listen("192.0.2.1:0", true); err == nil || errors.Is(err, metrics.ErrPublicAddress) {
		t.Errorf("Listen(192.0.2.1:0, true) = %v, want a bind error", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "127.0.0.2:0"} {
		l, err := metrics.Listen(addr, false)
		if err != nil {
			t.Errorf("Listen(%q, false): %v", addr, err)
			continue
		}
		l.Close()
	}
}

func TestServe(t *testing.T) {
	testenv.CheckGoroutines(t)
	reg := exercised(t)
	l, err := metrics.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, l, reg, slog.New(slog.DiscardHandler)) }()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	body := get(t, c, "http://"+l.Addr().String()+"/metrics", "")
	if !bytes.Contains(body, []byte(`moat_api_requests_total{route="GET /v1/projects/{p}/services/{s}",status="200"} 1`)) {
		t.Errorf("/metrics lacks the recorded request:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestMiddlewareLabelsByPattern(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cp := metrics.NewControlPlane(reg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/projects/{p}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("p") == "missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("{}"))
	})
	srv := httptest.NewServer(cp.Middleware(mux))
	defer srv.Close()
	for _, path := range []string{"/v1/projects/prj-1", "/v1/projects/prj-2", "/v1/projects/missing", "/nope/10.0.0.1"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := `
# HELP moat_api_requests_total API requests by route pattern and HTTP status.
# TYPE moat_api_requests_total counter
moat_api_requests_total{route="GET /v1/projects/{p}",status="200"} 2
moat_api_requests_total{route="GET /v1/projects/{p}",status="404"} 1
moat_api_requests_total{route="unmatched",status="404"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "moat_api_requests_total"); err != nil {
		t.Error(err)
	}
}
