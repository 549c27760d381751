// Package apiserver is Moat's HTTP API (/v1): one route table, handlers that
// return errors rendered as RFC 9457 problem details, token authentication
// and project scoping, ETags, pagination, idempotent creates (whose records
// keep no secret and expire), and an audit entry for every mutation and
// every refused one (refusals anyone can make in bulk — unauthenticated
// requests, refused reads — aggregated per source and interval). It serves
// an http.Handler; the listener, TLS and bootstrap belong to package
// controlplane.
package apiserver

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/moatdb/moat/internal/objstore"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/store"
)

// Config wires a Server.
type Config struct {
	Store   store.Store
	Logger  *slog.Logger
	Catalog domain.Catalog
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxAllowEntries caps a service's allowlist (0: domain default, 8,000).
	MaxAllowEntries int
	// Quotas are the default service and node quotas of a project (zero
	// fields: domain.DefaultQuotas); an operator raises them per project.
	Quotas domain.Quotas
	// MaxPeeringsPerVPC caps live peerings per VPC (0: no cap).
	MaxPeeringsPerVPC int
	// Domain is the DNS domain services are published under.
	Domain string
	// AfterAudit, if set, is called after every committed audit entry
	// (the control plane uses it to sign checkpoints).
	AfterAudit func(seq int64)
	// Keys seals secrets at rest (project CA keys); required.
	Keys Sealer
	// InternalCAPEM is the CA nodes verify each other's client
	// certificates with.
	InternalCAPEM string
	// AuditKey verifies the audit log's checkpoint signatures.
	AuditKey ed25519.PublicKey
	// AuditCheckpointFile is the checkpoint file outside the store that
	// verification compares the store with ("" none).
	AuditCheckpointFile string
	// AuditMaxUnsigned is how old an entry past the newest checkpoint may
	// be before verification fails (0: not checked).
	AuditMaxUnsigned time.Duration
	// Backups is the backup store (read: listing, restores); BackupDir
	// its directory on the agents' hosts, sent to them. Nil and "": no
	// backups.
	Backups   objstore.Store
	BackupDir string
	// Failover holds the timings of detection and fencing: the agents'
	// heartbeat interval and the primaries' lease go to the agents in
	// the desired state, the host timeout judges placement (zero:
	// domain.DefaultFailoverPolicy).
	Failover domain.FailoverPolicy
	// RefusalInterval is how long refusals from one source (unauthenticated
	// requests, refused reads) are counted into one audit entry (0: a
	// minute).
	RefusalInterval time.Duration
	// RefusalLimit is how many unauthenticated refusals one source may
	// cause per RefusalInterval before its requests are answered 429 until
	// the interval ends (0: DefaultRefusalLimit).
	RefusalLimit int
	// IdempotencyTTL is how long an Idempotency-Key is remembered (0: 24h).
	IdempotencyTTL time.Duration
	// Metrics records every request (route = the matched pattern) and
	// the hosts' reports; nil records nothing.
	Metrics *metrics.ControlPlane
	// Tenants keeps the nodes' PostgreSQL statistics the agents report,
	// served per project at GET /v1/projects/{p}/metrics (default: a store
	// of the Server's own).
	Tenants *metrics.Tenants
	// Ops configures operator access (its CAs and the operator path's
	// addresses); nil answers its routes 503 ops_unavailable.
	Ops *OpsConfig
	// SignInLink mints a one-time console sign-in link for token and
	// returns its path and query and when it expires (the control
	// plane's, over its console); nil: this server serves no console and
	// POST /v1/console/links answers 501.
	SignInLink func(token string) (path string, expires time.Time)
}

// Sealer seals and opens secrets at rest (a *secret.Keyring).
type Sealer interface {
	Seal(plaintext, associatedData []byte) []byte
	Open(sealed, associatedData []byte) ([]byte, error)
}

// Server is the API's http.Handler.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// handler is mux, wrapped by the metrics middleware.
	handler http.Handler
	routes  []Route

	refused refusals

	// allowPending holds, by service ID, when the oldest allowlist change
	// not every node enforces yet was committed (for the metrics; only
	// with Config.Metrics).
	// allowApplied the newest allowlist revision seen enforced (a report
	// may commit before the change's handler records it pending).
	allowMu      sync.Mutex
	allowPending map[string]time.Time
	allowApplied map[string]int64

	docOnce sync.Once
	doc     map[string]any
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Failover == (domain.FailoverPolicy{}) {
		cfg.Failover = domain.DefaultFailoverPolicy()
	}
	if err := cfg.Failover.Check(); err != nil {
		return nil, fmt.Errorf("apiserver: failover policy: %w", err)
	}
	if cfg.Store == nil {
		return nil, errors.New("apiserver: Config.Store is required")
	}
	if cfg.Keys == nil {
		return nil, errors.New("apiserver: Config.Keys is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Catalog.Regions) == 0 {
		cfg.Catalog = domain.DefaultCatalog()
	}
	if cfg.Domain == "" {
		cfg.Domain = "moat.test"
	}
	if cfg.Quotas.Services <= 0 {
		cfg.Quotas.Services = domain.DefaultQuotas.Services
	}
	if cfg.Quotas.Nodes <= 0 {
		cfg.Quotas.Nodes = domain.DefaultQuotas.Nodes
	}
	if cfg.RefusalInterval <= 0 {
		cfg.RefusalInterval = DefaultRefusalInterval
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if cfg.Tenants == nil {
		cfg.Tenants = metrics.NewTenants()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), allowPending: map[string]time.Time{}, allowApplied: map[string]int64{}}
	if cfg.RefusalLimit <= 0 {
		cfg.RefusalLimit = DefaultRefusalLimit
	}
	s.refused.interval, s.refused.limit = cfg.RefusalInterval, cfg.RefusalLimit
	s.routes = s.routeTable()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, &apiError{status: http.StatusNotFound, code: "route_not_found",
			msg: "no such route: " + r.Method + " " + r.URL.Path, hint: "see /v1/openapi.json for the routes"})
	})
	s.handler = cfg.Metrics.Middleware(s.mux)
	return s, nil
}

// ServeHTTP implements http.Handler. Every answer carries HSTS: the API
// is served over HTTPS only.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Strict-Transport-Security", "max-age=31536000")
	s.handler.ServeHTTP(w, r)
}

// Routes returns the route table (for the OpenAPI test).
func (s *Server) Routes() []Route { return s.routes }

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// allowlistChanged records, for the metrics, that svc's allowlist change
// committed now waits for its nodes (the oldest waiting change counts).
func (s *Server) allowlistChanged(svc *domain.Service) {
	if s.cfg.Metrics == nil {
		return
	}
	s.allowMu.Lock()
	defer s.allowMu.Unlock()
	if s.allowApplied[svc.ID] >= svc.AllowlistRevision {
		return // enforced already
	}
	since, ok := s.allowPending[svc.ID]
	if !ok {
		since = time.Now()
		s.allowPending[svc.ID] = since
	}
	s.cfg.Metrics.AllowlistPending(svc.ProjectID, svc.ID, since)
}

// allowlistEnforced records, for the metrics, that every node of svc
// enforces its allowlist: how long the pending change took.
func (s *Server) allowlistEnforced(svc *domain.Service) {
	if s.cfg.Metrics == nil {
		return
	}
	s.allowMu.Lock()
	defer s.allowMu.Unlock()
	s.allowApplied[svc.ID] = max(s.allowApplied[svc.ID], svc.AppliedAllowlistRevision)
	since, ok := s.allowPending[svc.ID]
	if !ok {
		return
	}
	delete(s.allowPending, svc.ID)
	s.cfg.Metrics.ObserveAllowlistEnforced(svc.ProjectID, svc.ID, time.Since(since))
}
