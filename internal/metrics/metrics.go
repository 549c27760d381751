// Package metrics holds Moat's Prometheus metrics: the platform's own
// (ControlPlane, Agent), served on a separate listener that stays on
// loopback unless the operator asks otherwise (Listen, Serve), and the
// tenants' PostgreSQL metrics (Tenants), rendered per project from the
// snapshots the agents send (package pgstat) and served by the API behind
// its own authentication.
//
// Platform metrics are named moat_<component>_<thing>_<unit>, counters end
// in _total, and labels are bounded: IDs of projects, services, nodes and
// hosts, route patterns, status codes, kinds and outcomes; never a CIDR, a
// user or an address (design 0013). Tenant metrics keep postgres_exporter's
// names so existing dashboards work.
//
// internal/cli wires it: the API middleware, the reconciler, the agent and
// the firewall call the typed methods; a nil *ControlPlane or *Agent
// records nothing, so components and their tests run without metrics.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, for NewControlPlane and NewAgent to register into.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves g's metrics in the exposition format the scraper asks for.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ErrPublicAddress is returned by Listen for an address that is not on
// loopback when public listening was not asked for.
var ErrPublicAddress = errors.New("metrics address is not a loopback address")

// Listen opens the metrics listener on addr (host:port). Metrics stay off
// public interfaces by default: unless public is true, the host must be a
// loopback IP or "localhost" ("" and 0.0.0.0 mean every interface and are
// refused).
func Listen(addr string, public bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if !public && !loopback(host) {
		return nil, fmt.Errorf("%w: %q (listen on 127.0.0.1, or allow public metrics explicitly)", ErrPublicAddress, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics: %w", err)
	}
	return l, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Serve serves g's metrics at /metrics on l until ctx ends, then shuts the
// server down (waiting up to 5 s for scrapes in flight) and closes l.
func Serve(ctx context.Context, l net.Listener, g prometheus.Gatherer, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(g))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-done
	if err != nil {
		return fmt.Errorf("shut down metrics: %w", err)
	}
	return nil
}
