package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/reconcile"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

func scrape(g prometheus.Gatherer) string {
	rec := httptest.NewRecorder()
	metrics.Handler(g).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return string(body)
}

// TestMetricsPassErrorKinds: Run counts its passes, and every error of a
// pass under the step that failed (two nodes that cannot be placed: two
// place_node errors a pass).
func TestMetricsPassErrorKinds(t *testing.T) {
	testenv.CheckGoroutines(t)
	reg := prometheus.NewRegistry()
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Resync, c.Metrics = 20*time.Millisecond, metrics.NewControlPlane(reg) })
	for i := range 2 {
		svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateCreating}, Region: "us-east-1", NodeCount: 2}).(*domain.Service)
		f.put(onHost(domain.NewNode(svc, i, "a", time.Now())))
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.rec.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if metricValue(scrape(reg), "moat_reconcile_passes_total") >= 2 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	body := scrape(reg)
	passes, errs := metricValue(body, "moat_reconcile_passes_total"), metricValue(body, `moat_reconcile_errors_total{kind="place_node"}`)
	if passes < 2 {
		t.Fatalf("passes = %v, want at least 2:\n%s", passes, body)
	}
	if errs != 2*passes {
		t.Errorf("place_node errors = %v after %v passes, want 2 a pass", errs, passes)
	}
}

// TestMetricsOperationDone: an operation the reconciler ends is counted
// with its type and final state.
func TestMetricsOperationDone(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixtureWith(t, func(c *reconcile.Config) {
		c.Provider, c.Zone = brokenNetwork{c.Provider.(*fakeCloud)}, "moat.test"
		c.Metrics = metrics.NewControlPlane(reg)
	})
	f.projectCA()
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning}, Region: "us-east-1", NodeCount: 1}).(*domain.Service)
	n := onHost(domain.NewNode(svc, 0, "a", time.Now()))
	n.State, n.Address = domain.StateRunning, "198.18.0.5"
	f.put(n)
	op := domain.NewOperation("proj-test", domain.OpServiceAttach, svc.ID, time.Now())
	op.VPCID = f.vpc.ID
	f.edit(svc, func() { svc.State, svc.OperationID = domain.StateMigrating, op.ID })
	f.put(op)
	f.mustOnce() // pending → running
	if v := metricValue(scrape(reg), `moat_operations_total{kind="service.attach",outcome="failed"}`); v != 0 {
		t.Fatalf("a running attach counted as ended (%v)", v)
	}
	f.mustOnce() // add-network fails: the attach ends failed
	f.mustOnce() // nothing more ends
	body := scrape(reg)
	if v := metricValue(body, `moat_operations_total{kind="service.attach",outcome="failed"}`); v != 1 {
		t.Errorf("failed attaches counted = %v, want 1:\n%s", v, body)
	}
	if v := metricValue(body, `moat_operation_duration_seconds_count{kind="service.attach",outcome="failed"}`); v != 1 {
		t.Errorf("attach durations observed = %v, want 1", v)
	}
}

// metricValue returns the value of the series (name with labels, as
// exposed) in a scrape, 0 when absent.
func metricValue(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}
