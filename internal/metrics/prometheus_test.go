package metrics_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/metrics/promtest"
	"github.com/moatdb/moat/internal/pgtest"
)

// TestPrometheusScrapes runs a real Prometheus server against the platform
// listener and a tenant endpoint served over TLS with a bearer token (as
// the API serves GET /v1/projects/{p}/metrics), then queries it for a
// service's pg_up, from a real PostgreSQL snapshot, and for buckets of
// the allowlist latency histogram.
func TestPrometheusScrapes(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A tenant endpoint: the latest snapshot of a real server.
	snap, err := pgstat.ScrapeDSN(ctx, srv.DSN("postgres"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	snap.Service, snap.Node = "svc-1", "node-1"
	tenants := metrics.NewTenants()
	tenants.Update("prj-1", snap)
	const token = "moat_tok1_secret"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/projects/{p}/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("p") != "prj-1" || r.Header.Get("Authorization") != "Bearer "+token {
			http.NotFound(w, r) // as the API answers another project's token
			return
		}
		tenants.Handler(r.PathValue("p")).ServeHTTP(w, r)
	})
	api := httptest.NewTLSServer(mux)
	defer api.Close()

	// The platform listener, with one allowlist change enforced in 1.2 s.
	reg := prometheus.NewRegistry()
	metrics.NewControlPlane(reg).ObserveAllowlistEnforced("prj-1", "svc-1", 1200*time.Millisecond)
	l, err := metrics.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		if err := metrics.Serve(ctx, l, reg, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	defer served.Wait()
	defer cancel()

	prom := promtest.Start(t,
		promtest.Job{Name: "tenant", Target: strings.TrimPrefix(api.URL, "https://"),
			Path: "/v1/projects/prj-1/metrics", CA: api.Certificate().Raw, Token: token},
		promtest.Job{Name: "moat", Target: l.Addr().String()},
	)
	for _, q := range []struct{ query, want string }{
		{`up{job="tenant"}`, "1"},
		{`up{job="moat"}`, "1"},
		{`pg_up{service="svc-1",node="node-1",role="primary"}`, "1"},
		{`pg_database_size_bytes{service="svc-1",datname="postgres"} > bool 0`, "1"},
		{`count(pg_stat_database_xact_commit{service="svc-1",datname="postgres"})`, "1"},
		{`moat_allowlist_enforce_duration_seconds_bucket{service="svc-1",le="2"}`, "1"},
		{`moat_allowlist_enforce_duration_seconds_bucket{service="svc-1",le="1"}`, "0"},
	} {
		prom.WaitFor(t, q.query, q.want, 20*time.Second)
	}
}
