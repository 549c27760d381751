// Package controlplane runs the Moat control plane (`moat server`): it
// prepares the data directory on first start (master key, API CA, operator
// token, the operators' SSH CA and host CA; an agent token only for `moat
// up`'s host), keeps it private (files
// 0600), opens the store, serves the API over hardened HTTPS only (TLS 1.2
// AEAD or 1.3, X25519 first, session-ticket keys rotated), signs audit
// checkpoints into the store and the append-only checkpoint file, purges
// expired idempotency records, runs the reconcilers and, with
// MetricsListen, serves its Prometheus metrics over plain HTTP (loopback
// only unless MetricsPublic; internal/metrics). Wired by internal/cli and
// internal/up.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/console"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/reconcile"
	"github.com/moatdb/moat/internal/secret"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/pgstore"
	"github.com/moatdb/moat/internal/store/sqlitestore"
	"github.com/prometheus/client_golang/prometheus"
)

// Files in the data directory.
const (
	MasterKeyFile  = "master.key"
	APICAFile      = "api-ca.pem"
	AdminTokenFile = "admin.token"
	AgentTokenFile = "agent.token"
	AuditKeyFile   = "audit.pub"
	SQLiteFile     = "moat.db"
	// CheckpointFile holds every audit checkpoint outside the store too,
	// one signed line each, chained (see audit.CheckpointFile).
	CheckpointFile = "audit-checkpoints.jsonl"
	// BackupDirName is the default backup store under DataDir.
	BackupDirName = "backups"
)

// Config configures a control plane.
type Config struct {
	// DataDir holds the master key, the API CA, the operator token and,
	// with the embedded store, the SQLite database.
	DataDir string
	// Listen is the API's HOST:PORT (HTTPS).
	Listen string
	// StoreDSN selects PostgreSQL (postgres://...); empty means SQLite in
	// DataDir.
	StoreDSN string
	// Hostnames are extra names for the API certificate.
	Hostnames []string
	Logger    *slog.Logger
	Catalog   domain.Catalog
	Domain    string
	// MaxAllowEntries caps allowlists (0: 8,000).
	MaxAllowEntries int
	// MaxPeeringsPerVPC caps peerings per VPC (0: no cap).
	MaxPeeringsPerVPC int
	// Quotas are every project's default service and node quotas (zero
	// fields: domain.DefaultQuotas); operators raise them per project
	// with PUT /v1/projects/{p}/quota.
	Quotas domain.Quotas
	// Provider realises nodes; nil runs the control plane without
	// reconcilers (objects are stored but nothing is built).
	Provider provider.Provider
	// CheckpointEvery signs an audit checkpoint after this many entries
	// (and at least every CheckpointInterval when entries were added).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// BackupDir is the backup store, a directory on this machine and on
	// the agents' hosts (default DataDir/backups; "-" turns backups off).
	// The postgres user must be able to traverse to it.
	BackupDir string
	// BackupInterval starts a base backup of a running service whose
	// newest is older (0: 24h; negative: only on request).
	BackupInterval time.Duration
	// BackupKeep and BackupKeepAge are the retention: the newest
	// BackupKeep base backups (0: 7) and every one younger than
	// BackupKeepAge are kept, with the WAL they need.
	BackupKeep    int
	BackupKeepAge time.Duration
	// AgentHost, when set, makes an agent token bound to that host on
	// first start (AgentTokenFile; `moat up` runs its agent as host
	// "local"). Without it no agent token is written: an operator creates
	// one per host (POST /v1/hosts/{host}/tokens).
	AgentHost string
	// IdempotencyTTL is how long an Idempotency-Key is remembered (0:
	// 24h); older records are purged by the control plane's loop.
	IdempotencyTTL time.Duration
	// TicketKeyRotation is how often the API's TLS session-ticket key is
	// replaced (0: daily); tickets of the previous key still resume.
	TicketKeyRotation time.Duration
	// MetricsListen is the HOST:PORT the Prometheus metrics are served
	// on, plain HTTP at /metrics ("" : no metrics). It must be a loopback
	// address unless MetricsPublic is set (metrics.ErrPublicAddress).
	MetricsListen string
	MetricsPublic bool
	// OpsSources are the addresses operators reach nodes' SSH endpoints
	// from, written into their certificates' source-address (default
	// DefaultOpsSources: the agents' relays on loopback).
	OpsSources []string
	// SupportMinTTL is the shortest support grant a tenant may ask for
	// (0: domain.MinSupportTTL, a minute); tests lower it to see a grant
	// end by expiry.
	SupportMinTTL time.Duration
	// Failover holds the timings of failure detection and of the
	// primaries' lease (zero: domain.DefaultFailoverPolicy).
	Failover domain.FailoverPolicy
}

// ControlPlane is a running control plane's parts.
type ControlPlane struct {
	cfg   Config
	log   *slog.Logger
	Store store.Store
	Keys  *secret.Keyring
	API   *apiserver.Server
	// Console is the web console, served at /console/ on the API's
	// listener; every read and write goes through API.
	Console *console.Console
	signer  *audit.Signer
	cpFile  *audit.CheckpointFile
	tlsCfg  *tls.Config
	// InternalCA signs node-to-node (replication) client certificates.
	InternalCA *pki.CA
	rec        *reconcile.Reconciler
	ticketKey  *[32]byte
	// URL is the API's base URL once Run listens.
	url      atomic.Value
	pending  atomic.Int64
	kick     chan struct{}
	listener net.Listener
	// Metrics records the control plane's metrics into metricsReg (nil
	// when MetricsListen is ""); metricsLn is their listener.
	Metrics *metrics.ControlPlane
	// Tenants keeps the nodes' PostgreSQL statistics for the API's
	// GET /v1/projects/{p}/metrics (with or without MetricsListen).
	Tenants    *metrics.Tenants
	metricsReg *prometheus.Registry
	metricsLn  net.Listener
}

// New prepares the data directory and opens the store. Everything it opens
// is closed again if a later step fails.
func New(ctx context.Context, cfg Config) (cp *ControlPlane, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("controlplane: DataDir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 64
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 5 * time.Second
	}
	if cfg.Failover == (domain.FailoverPolicy{}) {
		cfg.Failover = domain.DefaultFailoverPolicy()
	}
	if cfg.BackupDir == "" {
		cfg.BackupDir = filepath.Join(cfg.DataDir, BackupDirName)
	}
	if cfg.BackupInterval == 0 {
		cfg.BackupInterval = 24 * time.Hour
	}
	if cfg.BackupKeep == 0 {
		cfg.BackupKeep = 7
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = apiserver.DefaultIdempotencyTTL
	}
	if cfg.TicketKeyRotation <= 0 {
		cfg.TicketKeyRotation = 24 * time.Hour
	}
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	cp = &ControlPlane{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1),
		cpFile: audit.NewCheckpointFile(filepath.Join(cfg.DataDir, CheckpointFile))}
	if cfg.MetricsListen != "" {
		cp.metricsReg = metrics.NewRegistry()
		cp.Metrics = metrics.NewControlPlane(cp.metricsReg)
	}
	cp.Tenants = metrics.NewTenants()
	if cp.Keys, err = secret.LoadOrCreateKey(filepath.Join(cfg.DataDir, MasterKeyFile)); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	if cfg.StoreDSN != "" {
		cp.Store, err = pgstore.Open(ctx, cfg.StoreDSN)
	} else {
		cp.Store, err = openSQLite(ctx, filepath.Join(cfg.DataDir, SQLiteFile))
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err != nil {
			cp.Store.Close()
		}
	}()
	if err = cp.Store.Update(ctx, func(tx store.Tx) (err error) {
		cp.signer, err = audit.LoadOrCreateSigner(ctx, tx, cp.Keys)
		return err
	}); err != nil {
		return nil, fmt.Errorf("audit signer: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(cfg.DataDir, AuditKeyFile), audit.MarshalPublicKey(cp.signer.PublicKey()), 0o600); err != nil {
		return nil, err
	}
	if err := cp.syncCheckpointFile(ctx); err != nil {
		return nil, err
	}
	if cp.tlsCfg, err = cp.apiTLS(ctx); err != nil {
		return nil, err
	}
	if err := cp.ensureToken(ctx, AdminTokenFile, domain.RoleOperator, "operator", ""); err != nil {
		return nil, err
	}
	if cfg.AgentHost != "" {
		if err := cp.ensureToken(ctx, AgentTokenFile, domain.RoleAgent, "agent-"+cfg.AgentHost, cfg.AgentHost); err != nil {
			return nil, err
		}
	}
	if cp.InternalCA, err = cp.loadOrCreateCA(ctx, "internal_ca", "Moat internal CA"); err != nil {
		return nil, err
	}
	cp.observeCerts()
	if cfg.Domain == "" {
		cfg.Domain = "moat.test"
	}
	opsCfg, err := cp.opsConfig(ctx)
	if err != nil {
		return nil, err
	}
	var backups objstore.Store
	backupDir := ""
	if cfg.BackupDir != "-" {
		if backupDir, err = filepath.Abs(cfg.BackupDir); err != nil {
			return nil, fmt.Errorf("backup directory: %w", err)
		}
		if err := os.MkdirAll(backupDir, 0o750); err != nil {
			return nil, fmt.Errorf("backup directory: %w", err)
		}
		if backups, err = objstore.NewDir(backupDir); err != nil {
			return nil, fmt.Errorf("backup directory: %w", err)
		}
	}
	cp.API, err = apiserver.New(apiserver.Config{
		Backups: backups, BackupDir: backupDir,
		Store: cp.Store, Logger: cfg.Logger, Catalog: cfg.Catalog, Domain: cfg.Domain,
		MaxAllowEntries: cfg.MaxAllowEntries, MaxPeeringsPerVPC: cfg.MaxPeeringsPerVPC, Quotas: cfg.Quotas,
		Keys: cp.Keys, InternalCAPEM: string(cp.InternalCA.CertPEM),
		AuditKey: cp.signer.PublicKey(), AfterAudit: cp.afterAudit,
		AuditCheckpointFile: cp.cpFile.Path(), AuditMaxUnsigned: max(2*cfg.CheckpointInterval, cfg.CheckpointInterval+10*time.Second),
		IdempotencyTTL: cfg.IdempotencyTTL, Metrics: cp.Metrics, Tenants: cp.Tenants, Ops: opsCfg, Failover: cfg.Failover,
		SignInLink: cp.signInLink,
	})
	if err != nil {
		return nil, err
	}
	if cp.Console, err = console.New(console.Config{API: cp.API, Domain: cfg.Domain, Logger: cfg.Logger.With("component", "console")}); err != nil {
		return nil, err
	}
	if cfg.Provider != nil {
		cp.rec, err = reconcile.New(reconcile.Config{Store: cp.Store, Provider: cfg.Provider, Keys: cp.Keys,
			Backups: backups, BackupInterval: cfg.BackupInterval, BackupKeep: cfg.BackupKeep, BackupKeepAge: cfg.BackupKeepAge,
			InternalCA: cp.InternalCA, Zone: cfg.Domain, Catalog: cfg.Catalog, Logger: cfg.Logger.With("component", "reconcile"), Metrics: cp.Metrics, Tenants: cp.Tenants,
			Failover: cfg.Failover})
		if err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// handler serves the console under /console/ and the API everywhere
// else, on one listener.
func (cp *ControlPlane) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, hsts(cp.Console))
	mux.Handle("/console", http.RedirectHandler(console.Prefix, http.StatusMovedPermanently))
	mux.Handle("/", cp.API)
	return mux
}

// hsts tells browsers to use HTTPS only, as the API's own answers do.
func hsts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

// MetricsURL returns the metrics endpoint (http://HOST:PORT/metrics) once
// Listen has bound it, or "" without MetricsListen.
func (cp *ControlPlane) MetricsURL() string {
	if cp.metricsLn == nil {
		return ""
	}
	return "http://" + hostPort(cp.metricsLn.Addr()) + "/metrics"
}

// URL returns the API's base URL (https://HOST:PORT) once Run listens.
func (cp *ControlPlane) URL() string {
	u, _ := cp.url.Load().(string)
	return u
}

// signInLink mints a one-time console sign-in link for token (the API's
// POST /v1/console/links): its path and query, and its expiry.
func (cp *ControlPlane) signInLink(token string) (string, time.Time) {
	expires := time.Now().Add(console.DefaultLinkTTL) // not after the console's own expiry
	return cp.Console.SignInLink(token, console.DefaultLinkTTL), expires
}

// OperatorSignInLink mints a one-time console sign-in link for the
// operator token of the data directory (admin.token), as `moat up` and
// `moat server` print it: the console's URL once Listen has bound it,
// or "" when the token file is unreadable.
func (cp *ControlPlane) OperatorSignInLink() string {
	tok, err := os.ReadFile(filepath.Join(cp.cfg.DataDir, AdminTokenFile))
	if err != nil {
		return ""
	}
	path, _ := cp.signInLink(strings.TrimSpace(string(tok)))
	return cp.URL() + path
}

// Listen binds the API listener and, with MetricsListen, the metrics
// listener (a non-loopback address without MetricsPublic fails with
// metrics.ErrPublicAddress); Run calls it if it was not called before.
func (cp *ControlPlane) Listen() error {
	if cp.listener != nil {
		return nil
	}
	var mln net.Listener
	if cp.cfg.MetricsListen != "" {
		var err error
		if mln, err = metrics.Listen(cp.cfg.MetricsListen, cp.cfg.MetricsPublic); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cp.cfg.Listen)
	if err != nil {
		if mln != nil {
			mln.Close()
		}
		return fmt.Errorf("listen on %s: %w", cp.cfg.Listen, err)
	}
	cp.listener, cp.metricsLn = ln, mln
	cp.url.Store("https://" + hostPort(ln.Addr()))
	return nil
}

// Run serves the API until ctx ends, then shuts down and closes the store.
func (cp *ControlPlane) Run(ctx context.Context) error {
	defer cp.Store.Close()
	if err := cp.Listen(); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           cp.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(cp.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	// A server that stops on its own stops the loops too.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// The TLS listener uses cp.tlsCfg itself (ServeTLS would clone it),
	// so the rotated session-ticket keys take effect.
	if err := cp.rotateTicketKeys(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(cp.listener, cp.tlsCfg)) }()
	cp.checkpoint(ctx) // sign a tail left unsigned by a crash
	cpDone := make(chan struct{})
	go func() { defer close(cpDone); cp.checkpointLoop(ctx) }()
	ticketDone := make(chan struct{})
	go func() { defer close(ticketDone); cp.ticketLoop(ctx) }()
	metricsDone := make(chan error, 1)
	go func() {
		var err error
		if cp.metricsLn != nil {
			cp.log.Info("metrics listening", "url", cp.MetricsURL())
			err = metrics.Serve(ctx, cp.metricsLn, cp.metricsReg, cp.log)
		}
		metricsDone <- err
	}()
	recDone := make(chan error, 1)
	go func() {
		var err error
		if cp.rec != nil {
			err = cp.rec.Run(ctx)
		}
		recDone <- err
	}()
	cp.log.Info("api listening", "url", cp.URL())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stop()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("serve API: %w", err)
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var errs []error
	errs = append(errs, err)
	if serr := srv.Shutdown(shutCtx); serr != nil {
		errs = append(errs, fmt.Errorf("shut down the API server: %w", serr))
		srv.Close() // what Shutdown did not drain in time
	}
	<-cpDone
	<-ticketDone
	if merr := <-metricsDone; merr != nil {
		errs = append(errs, merr)
	}
	if rerr := <-recDone; rerr != nil {
		errs = append(errs, fmt.Errorf("reconciler: %w", rerr))
	}
	// A last checkpoint so a clean stop leaves the head signed.
	cp.checkpoint(shutCtx)
	return errors.Join(errs...)
}

func (cp *ControlPlane) afterAudit(int64) {
	if cp.pending.Add(1) >= int64(cp.cfg.CheckpointEvery) {
		select {
		case cp.kick <- struct{}{}:
		default:
		}
	}
}

// checkpointLoop signs checkpoints, and does the control plane's other
// periodic chores: the aggregated refusal audit entries, and the purge of
// expired idempotency records (once a minute).
func (cp *ControlPlane) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(cp.cfg.CheckpointInterval)
	defer t.Stop()
	var purged time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cp.API.FlushRefusals(ctx)
			if time.Since(purged) >= time.Minute {
				purged = time.Now()
				if n, err := cp.API.PurgeIdempotency(ctx); err != nil && ctx.Err() == nil {
					cp.log.Error("purge expired idempotency keys", "err", err)
				} else if n > 0 {
					cp.log.Debug("purged expired idempotency keys", "count", n)
				}
			}
		case <-cp.kick:
		}
		cp.checkpoint(ctx)
	}
}

// ticketLoop replaces the session-ticket key every TicketKeyRotation.
func (cp *ControlPlane) ticketLoop(ctx context.Context) {
	t := time.NewTicker(cp.cfg.TicketKeyRotation)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := cp.rotateTicketKeys(); err != nil {
				cp.log.Error("rotate TLS session-ticket keys", "err", err)
			}
		}
	}
}

// rotateTicketKeys makes a new session-ticket key the one that encrypts,
// keeping the previous one to decrypt tickets it issued.
func (cp *ControlPlane) rotateTicketKeys() error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("session-ticket key: %w", err)
	}
	keys := [][32]byte{k}
	if cp.ticketKey != nil {
		keys = append(keys, *cp.ticketKey)
	}
	cp.ticketKey = &k
	cp.tlsCfg.SetSessionTicketKeys(keys)
	return nil
}

// syncCheckpointFile appends the store's checkpoints the checkpoint file
// lacks (a crash between a checkpoint's commit and its line, or a file
// started after the store).
func (cp *ControlPlane) syncCheckpointFile(ctx context.Context) error {
	var cps []domain.AuditCheckpoint
	if err := cp.Store.View(ctx, func(tx store.Tx) (err error) {
		cps, err = tx.ListCheckpoints(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	if err := cp.cpFile.Append(cp.signer, cps); err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	return nil
}

func (cp *ControlPlane) checkpoint(ctx context.Context) {
	cp.pending.Store(0)
	var fresh []domain.AuditCheckpoint
	err := cp.Store.Update(ctx, func(tx store.Tx) error {
		head, err := tx.LastAudit(ctx)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		cps, err := tx.ListCheckpoints(ctx)
		if err != nil {
			return err
		}
		if len(cps) > 0 && cps[len(cps)-1].Seq == head.Seq {
			fresh = cps
			return nil // the head is signed already
		}
		c, err := cp.signer.Checkpoint(ctx, tx, time.Now())
		fresh = append(cps, c)
		return err
	})
	if err == nil {
		// After the commit: a line in the file is never ahead of the
		// store because of a failed transaction.
		err = cp.cpFile.Append(cp.signer, fresh)
	}
	if err != nil && ctx.Err() == nil {
		cp.log.Error("sign audit checkpoint", "err", err)
	}
}

// apiTLS loads or creates the API CA (certificate in DataDir/api-ca.pem,
// key sealed in the store) and issues the listener's certificate.
func (cp *ControlPlane) apiTLS(ctx context.Context) (*tls.Config, error) {
	const metaKey = "api_ca_key"
	caPath := filepath.Join(cp.cfg.DataDir, APICAFile)
	now := time.Now()
	var ca *pki.CA
	err := cp.Store.Update(ctx, func(tx store.Tx) error {
		sealed, err := tx.GetMeta(ctx, metaKey)
		switch {
		case err == nil:
			certPEM, rerr := os.ReadFile(caPath)
			if rerr != nil {
				return fmt.Errorf("read %s (the store holds its key; restore the file or start with a new data directory): %w", caPath, rerr)
			}
			keyPEM, oerr := cp.Keys.Open(sealed, []byte(metaKey))
			if oerr != nil {
				return fmt.Errorf("unseal API CA key: %w", oerr)
			}
			ca, err = pki.ParseCA(certPEM, keyPEM)
			return err
		case errors.Is(err, store.ErrNotFound):
			if ca, err = pki.NewCA("Moat API CA", 10*365*24*time.Hour, now); err != nil {
				return err
			}
			keyPEM, err := ca.MarshalKeyPEM()
			if err != nil {
				return err
			}
			if err := tx.PutMeta(ctx, metaKey, cp.Keys.Seal(keyPEM, []byte(metaKey))); err != nil {
				return err
			}
			return atomicfile.WriteFile(caPath, ca.CertPEM, 0o600)
		default:
			return err
		}
	})
	if err != nil {
		return nil, fmt.Errorf("api ca: %w", err)
	}
	names := append([]string{"localhost", "127.0.0.1", "::1"}, cp.cfg.Hostnames...)
	if h, _, err := net.SplitHostPort(cp.cfg.Listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		names = append(names, h)
	}
	certPEM, keyPEM, err := ca.IssueServer(dedupe(names), 90*24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("issue api certificate: %w", err)
	}
	cfg, err := pki.ServerTLSConfig(certPEM, keyPEM, nil)
	if err != nil {
		return nil, err
	}
	hardenTLS(cfg)
	return cfg, nil
}

// hardenTLS restricts the API's TLS: 1.3, or 1.2 with ECDHE key exchange
// and AEAD ciphers only (no CBC, no RSA key exchange), X25519 preferred;
// HTTP/2 and HTTP/1.1.
func hardenTLS(cfg *tls.Config) {
	cfg.MinVersion = tls.VersionTLS12
	cfg.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}
	cfg.NextProtos = []string{"h2", "http/1.1"}
}

// ensureToken creates a token of role on first start and writes it to
// DataDir/file (mode 0600). Deleting the file and restarting issues a new
// one (the old one stays valid until revoked).
func (cp *ControlPlane) ensureToken(ctx context.Context, file string, role domain.Role, name, host string) error {
	path := filepath.Join(cp.cfg.DataDir, file)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	secretStr := apiserver.NewSecret()
	now := time.Now().UTC()
	tok := domain.NewToken("", name, role, apiserver.HashSecret(secretStr), host, now)
	detail := "role=" + string(role) + " (written to " + file + ")"
	if host != "" {
		detail += " host=" + host
	}
	err := cp.Store.Update(ctx, func(tx store.Tx) error {
		if err := store.Put(ctx, tx, tok); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, domain.AuditEntry{Time: now, Actor: "system", Action: "token.create", Target: tok.ID, Outcome: domain.OutcomeSuccess, Detail: detail})
		return err
	})
	if err != nil {
		return fmt.Errorf("create %s token: %w", role, err)
	}
	return atomicfile.WriteFile(path, []byte(apiserver.FormatToken(tok.ID, secretStr)+"\n"), 0o600)
}

// secretFiles are the data directory's files that hold a secret, the
// store or what a verifier pins; each is mode 0600.
var secretFiles = []string{MasterKeyFile, APICAFile, AdminTokenFile, AgentTokenFile, AuditKeyFile, CheckpointFile,
	SQLiteFile, SQLiteFile + "-wal", SQLiteFile + "-shm"}

// prepareDataDir creates the data directory (0700) or, when it exists,
// takes read and write away from group and others (a directory `moat up`
// made 0711 stays traversable: the postgres user reaches the agent's node
// directories and the backup store through it), and makes every file of
// secretFiles that exists 0600.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o066 != 0 {
		if err := os.Chmod(dir, m&^0o066); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	for _, f := range secretFiles {
		if err := os.Chmod(filepath.Join(dir, f), 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	return nil
}

// openSQLite opens the embedded store, creating its file with mode 0600
// first: SQLite gives its -wal and -shm files the database file's mode.
func openSQLite(ctx context.Context, path string) (store.Store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	return sqlitestore.Open(ctx, path, sqlitestore.Options{})
}

// loadOrCreateCA returns the CA kept in the store under name (certificate
// plain, key sealed), creating it on first start.
func (cp *ControlPlane) loadOrCreateCA(ctx context.Context, name, cn string) (*pki.CA, error) {
	var ca *pki.CA
	err := cp.Store.Update(ctx, func(tx store.Tx) error {
		certPEM, err := tx.GetMeta(ctx, name+"_cert")
		if err == nil {
			sealed, err := tx.GetMeta(ctx, name+"_key")
			if err != nil {
				return err
			}
			key, err := cp.Keys.Open(sealed, []byte(name+"_key"))
			if err != nil {
				return fmt.Errorf("unseal %s key: %w", name, err)
			}
			ca, err = pki.ParseCA(certPEM, key)
			return err
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if ca, err = pki.NewCA(cn, 10*365*24*time.Hour, time.Now()); err != nil {
			return err
		}
		key, err := ca.MarshalKeyPEM()
		if err != nil {
			return err
		}
		if err := tx.PutMeta(ctx, name+"_cert", ca.CertPEM); err != nil {
			return err
		}
		return tx.PutMeta(ctx, name+"_key", cp.Keys.Seal(key, []byte(name+"_key")))
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ca, nil
}

func hostPort(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
