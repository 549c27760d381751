package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/testenv"
)

// TestPrometheusScrapes runs a real Prometheus server against the platform
// listener and a tenant endpoint served over TLS with a bearer token (as
// the API serves GET /v1/projects/{p}/metrics), then queries it for a
// service's pg_up, from a real PostgreSQL snapshot, and for a bucket of
// the allowlist latency histogram.
func TestPrometheusScrapes(t *testing.T) {
	t.Parallel()
	testenv.MustNotBeShort(t, "runs a Prometheus server")
	promBin := testenv.MustHaveCommand(t, "prometheus")
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
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

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

	promAddr := freeAddr(t)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tenant
    scheme: https
    metrics_path: /v1/projects/prj-1/metrics
    authorization:
      credentials: %q
    tls_config:
      ca_file: %q
    static_configs:
      - targets: [%q]
  - job_name: moat
    static_configs:
      - targets: [%q]
`, token, caFile, strings.TrimPrefix(api.URL, "https://"), l.Addr().String())
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(promBin,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	}()

	for query, want := range map[string]string{
		`up{job="tenant"}`: "1",
		`up{job="moat"}`:   "1",
		`pg_up{service="svc-1",node="node-1",role="primary"}`:                          "1",
		`moat_allowlist_enforce_duration_seconds_bucket{service="svc-1",le="2"}`:       "1",
		`moat_allowlist_enforce_duration_seconds_bucket{service="svc-1",le="1"}`:       "0",
		`pg_database_size_bytes{service="svc-1",datname="postgres"} > bool 0`:          "1",
		`count(pg_stat_database_xact_commit{service="svc-1",datname="postgres"} >= 0)`: "1",
	} {
		if got := waitQuery(ctx, t, promAddr, query, want); got != want {
			t.Errorf("Prometheus: %s = %q, want %q", query, got, want)
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitQuery polls Prometheus's instant-query API until query yields one
// sample with value want or ctx ends, and returns the last value seen.
func waitQuery(ctx context.Context, t *testing.T, addr, query, want string) string {
	t.Helper()
	last := "(no sample)"
	for {
		if v, ok := queryOnce(ctx, addr, query); ok {
			last = v
			if v == want {
				return v
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func queryOnce(ctx context.Context, addr, query string) (string, bool) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return "", false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false // not up yet
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" || len(body.Data.Result) != 1 {
		return "", false
	}
	v, ok := body.Data.Result[0].Value[1].(string)
	return v, ok
}
