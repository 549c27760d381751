// Package console is Moat's web console, served at /console/ on the API's
// HTTPS listener: server-rendered html/template pages with htmx (vendored,
// embedded with the templates) for live states and field hints, under a
// strict Content-Security-Policy with no inline script.
//
// The console is an adapter over the API, not a second implementation of
// it: every read and write is a call of the typed client (internal/client)
// with the signed-in user's API token, served in-process by the API's own
// http.Handler (no network hop). Authorization, validation messages and
// hints are therefore the API's own; the console only decides what to show
// (a viewer sees no mutating controls) and adds what a browser needs
// (sessions, CSRF tokens, confirmations). Field hints before submit call
// the domain's own validation functions.
//
// internal/cli wires it: mux.Handle("/console/", console).
package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/client"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a Console.
type Config struct {
	// API is the API's handler (an *apiserver.Server); every read and
	// write goes through it with the signed-in user's token. Required.
	API http.Handler
	// Logger receives errors the console handles; nil discards.
	Logger *slog.Logger
	// SessionTTL is how long a sign-in lasts (0: 8h).
	SessionTTL time.Duration
	// Poll is the interval of live updates (states, operations, the
	// allowlist's applied state; 0: 2s).
	Poll time.Duration
	// Domain is the DNS domain services are published under, for the
	// warning that the host name changes on attach (default moat.test,
	// as the API's).
	Domain string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Console is the console's http.Handler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	sessions *sessions
	pages    *pages
}

// Prefix is where the console is mounted.
const Prefix = "/console/"

// New returns a Console for cfg.
func New(cfg Config) (*Console, error) {
	if cfg.API == nil {
		return nil, errors.New("console: Config.API is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Domain == "" {
		cfg.Domain = "moat.test"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), sessions: newSessions(cfg.SessionTTL, cfg.Now), pages: pg}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /console/{$}", c.home)
	c.mux.HandleFunc("GET /console/signin", c.signinForm)
	c.mux.HandleFunc("POST /console/signin", c.signin)
	c.mux.HandleFunc("GET "+linkPath, c.signinLinkForm)
	c.mux.HandleFunc("POST "+linkPath, c.signinWithLink)
	c.mux.Handle("POST /console/signout", c.write(c.signout))
	c.mux.Handle("POST /console/project", c.write(c.switchProject))

	c.mux.Handle("GET /console/hint/vpc-cidr", c.read(c.hintVPCCIDR))
	c.mux.Handle("GET /console/hint/allow-cidr", c.read(c.hintAllowCIDR))

	c.mux.Handle("GET /console/vpcs", c.read(c.vpcs))
	c.mux.Handle("POST /console/vpcs", c.write(c.createVPC))
	c.mux.Handle("GET /console/vpcs/{id}/live", c.read(c.vpcLive))
	c.mux.Handle("POST /console/vpcs/{id}/delete", c.write(c.deleteVPC))
	c.mux.Handle("POST /console/vpcs/{id}/peerings", c.write(c.createPeering))
	c.mux.Handle("POST /console/peerings/{id}/delete", c.write(c.deletePeering))
	c.mux.Handle("POST /console/quota", c.write(c.setQuota))

	c.mux.Handle("GET /console/services", c.read(c.services))
	c.mux.Handle("POST /console/services", c.write(c.createService))
	c.mux.Handle("GET /console/services/{id}", c.read(c.service))
	c.mux.Handle("GET /console/services/{id}/ca.pem", c.read(c.serviceCA))
	c.mux.Handle("GET /console/services/{id}/live", c.read(c.serviceLive))
	c.mux.Handle("POST /console/services/{id}/delete", c.write(c.deleteService))
	c.mux.Handle("POST /console/services/{id}/backups", c.write(c.createBackup))
	c.mux.Handle("POST /console/services/{id}/restore", c.write(c.restoreService))
	c.mux.Handle("GET /console/services/{id}/network", c.read(c.network))
	c.mux.Handle("POST /console/services/{id}/attach", c.write(c.attach))
	c.mux.Handle("POST /console/services/{id}/detach", c.write(c.detach))
	c.mux.Handle("GET /console/operations/{id}", c.read(c.operation))
	c.mux.Handle("GET /console/services/{id}/allowlist", c.read(c.allowlist))
	c.mux.Handle("GET /console/services/{id}/allowlist/edit", c.read(c.allowlistEdit))
	c.mux.Handle("GET /console/services/{id}/allowlist/status", c.read(c.allowlistStatus))
	c.mux.Handle("POST /console/services/{id}/allowlist", c.write(c.saveAllowlist))
	c.mux.Handle("GET /console/allowlist/row", c.read(c.allowlistRow))
	c.mux.Handle("GET /console/services/{id}/explain", c.read(c.explain))

	c.mux.Handle("GET /console/support", c.read(c.support))
	c.mux.Handle("POST /console/support", c.write(c.fileSupport))
	c.mux.Handle("POST /console/support/{id}/approve", c.write(c.approveSupport))
	c.mux.Handle("POST /console/support/{id}/decline", c.write(c.declineSupport))

	c.mux.Handle("GET /console/audit", c.read(c.audit))
	c.mux.Handle("GET /console/audit/verify", c.read(c.auditVerify))

	c.mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.renderError(w, r, nil, http.StatusNotFound, "No such page.")
	})
}

// contentSecurityPolicy allows scripts, styles and fetches from the
// console's own origin only: no inline script or style, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP implements http.Handler. Every response carries the CSP and
// the other security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/console/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// req is one signed-in request: the user's session and an API client
// bound to its token.
type req struct {
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	sess *session
	api  *client.Client
}

// project is the project the user works in.
func (q *req) project() string { return q.sess.project }

// read wraps a handler that needs a session; write also checks the CSRF
// token (every non-GET). Without a session a page redirects to sign-in
// and an htmx request gets 401.
func (c *Console) read(h func(*req) error) http.Handler { return c.handle(h, false) }

func (c *Console) write(h func(*req) error) http.Handler { return c.handle(h, true) }

func (c *Console) handle(h func(*req) error, mutating bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := c.sessions.fromRequest(r)
		if s == nil {
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", "/console/signin")
				http.Error(w, "sign in again", http.StatusUnauthorized)
				return
			}
			if mutating {
				c.renderError(w, r, nil, http.StatusForbidden, "Your session has ended; sign in again. Nothing was changed.")
				return
			}
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		if mutating && !s.checkCSRF(r) {
			c.renderError(w, r, s, http.StatusForbidden, "This form is not from your session (missing or wrong CSRF token). Nothing was changed; reload the page and try again.")
			return
		}
		q := &req{w: w, r: r, ctx: withRemote(r.Context(), r.RemoteAddr), sess: s, api: c.clientFor(s.token)}
		if err := h(q); err != nil {
			c.fail(q, err)
		}
	})
}

// clientFor returns an API client that calls the API handler in-process
// with token.
func (c *Console) clientFor(token string) *client.Client {
	cl, err := client.New(client.Config{URL: "https://moat-api.internal", Token: token, UserAgent: "moat-console",
		HTTPClient: &http.Client{Transport: inproc{h: c.cfg.API}, Timeout: 30 * time.Second}})
	if err != nil {
		panic("console: in-process client: " + err.Error()) // the URL is constant
	}
	return cl
}

// fail renders an error a handler returned: the API's own problem (status,
// message, hint) or, for anything else, a generic message (the cause is
// logged, never shown).
func (c *Console) fail(q *req, err error) {
	var ae *client.Error
	if errors.As(err, &ae) {
		if ae.Status == http.StatusUnauthorized {
			c.sessions.drop(q.sess)
			http.Redirect(q.w, q.r, "/console/signin?expired=1", http.StatusSeeOther)
			return
		}
		c.renderProblem(q.w, q.r, q.sess, ae)
		return
	}
	if q.ctx.Err() == nil {
		c.log.Error("console request", "method", q.r.Method, "path", q.r.URL.Path, "err", err)
	}
	c.renderError(q.w, q.r, q.sess, http.StatusInternalServerError, "Something went wrong on the server; try again.")
}
