package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Access is who may call a route.
type Access int

const (
	// Public routes need no token.
	Public Access = iota
	// Authenticated routes need any valid token.
	Authenticated
	// Operator routes need the operator token.
	Operator
	// ProjectRead routes need a token of the path's project (or operator).
	ProjectRead
	// ProjectWrite routes also need role member or admin.
	ProjectWrite
	// ProjectAdmin routes need role admin.
	ProjectAdmin
	// Agent routes need the agent token bound to the path's host (or an
	// operator's); agent tokens may use no other route.
	Agent
)

// Route is one entry of the route table.
type Route struct {
	Method  string
	Pattern string // Go 1.22 ServeMux pattern, under /v1
	// Action names the route in the audit log (e.g. "vpc.create"); every
	// route that is not a GET is audited, but for the agents' statistics
	// (POST /v1/hosts/{host}/stats), which change nothing stored.
	Action  string
	Access  Access
	Summary string
	// Request and Response are zero values of the wire types, for OpenAPI.
	Request  any
	Response any
	// Status is the success status (200 when zero).
	Status int
	// Accepted is the route's other success answer, 202 with this type,
	// when a request may start an operation (PATCH a service: a resize).
	Accepted any
	// ContentType is the success response's media type when it is not
	// JSON (the Prometheus text format of the tenants' metrics).
	ContentType string
	// Credential marks a route whose answer hands out a credential (a
	// token's secret, a password): on project routes it needs role admin
	// whatever its Access (issue 10).
	Credential bool
	Handler    func(*call) error
}

// principal is an authenticated caller.
type principal struct {
	TokenID   string
	Role      domain.Role
	ProjectID string
	// Host binds an agent token to one host ("" any).
	Host string
	// Name is the token's name, shown in audit entries.
	Name string
}

// actor names the caller in audit entries: role:token-id, then the
// token's name in parentheses when it has one.
func (p principal) actor() string {
	if p.TokenID == "" {
		return "anonymous"
	}
	a := string(p.Role) + ":" + p.TokenID
	if p.Name != "" {
		a += " (" + p.Name + ")"
	}
	return a
}

// call is one request in flight.
type call struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	rt      *Route
	who     principal
	project string // the {p} path value, once authorised
	reqID   string
	source  string
	target  string
	detail  string
	audited bool // a success entry was written with the mutation
	body    []byte
}

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{s: s, w: w, r: r, ctx: r.Context(), rt: &rt, reqID: requestID(r), source: sourceAddr(r)}
		w.Header().Set("X-Request-Id", c.reqID)
		var err error
		if rt.Access != Public {
			err = c.checkRateLimit()
		}
		if err == nil {
			err = c.authorize()
		}
		if err == nil {
			err = checkContentType(r)
		}
		if err == nil {
			err = rt.Handler(c)
		}
		if err == nil {
			return
		}
		ae := toAPIError(err)
		if ae.status >= 500 && r.Context().Err() == nil {
			s.log.Error("request failed", "request_id", c.reqID, "method", r.Method, "path", r.URL.Path, "err", err)
		}
		if !c.audited {
			c.auditRefusal(ae)
		}
		s.writeProblem(w, r, ae)
	})
}

func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 && isPrintableASCII(id) {
		return id
	}
	return "req-" + strings.ToLower(rand.Text()[:16])
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authorize authenticates the token and checks the route's access rule and
// project scope. A project the caller may not see answers 404, exactly as a
// missing one.
func (c *call) authorize() error {
	if c.rt.Access == Public {
		return nil
	}
	who, err := c.s.authenticate(c.ctx, c.r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	c.who = who
	if who.Role == domain.RoleAgent && c.rt.Access != Agent {
		// A host agent reads and reports for its host, and nothing else:
		// not the project list, not the regions.
		return errForbidden("agent tokens may use only the /v1/hosts/{host}/desired and /report routes", "use a project or operator token")
	}
	switch c.rt.Access {
	case Authenticated:
		return nil
	case Agent:
		if who.Role != domain.RoleAgent && who.Role != domain.RoleOperator {
			return errForbidden("this route is for host agents", "use the host's agent token (an operator creates it: POST /v1/hosts/{host}/tokens)")
		}
		// A host's desired state holds its nodes' keys (and a restore's
		// backup key): an agent token reads and reports for its own host.
		if who.Role == domain.RoleAgent && who.Host == "" {
			return errForbidden("this agent token is bound to no host; agent tokens are now per host", "have an operator create one: POST /v1/hosts/{host}/tokens, and revoke this one")
		}
		if h := c.r.PathValue("host"); who.Role == domain.RoleAgent && who.Host != h {
			return errForbidden("this agent token is for host "+who.Host+", not "+h, "run the agent with --host "+who.Host+", or give it the token of host "+h)
		}
		return nil
	case Operator:
		if who.Role != domain.RoleOperator {
			return errForbidden("this route is for platform operators", "use the operator token (admin.token in the server's data directory)")
		}
		if p := c.r.PathValue("p"); p != "" {
			c.project = p
			return c.projectExists()
		}
		return nil
	}
	p := c.r.PathValue("p")
	if who.Role != domain.RoleOperator && who.ProjectID != p {
		return errNotFound("project", p)
	}
	c.project = p
	if who.Role == domain.RoleOperator {
		if err := c.projectExists(); err != nil {
			return err
		}
	}
	switch {
	case c.rt.Access == ProjectAdmin || c.rt.Credential:
		return c.requireAdmin()
	case c.rt.Access == ProjectWrite:
		if !who.Role.CanWrite() {
			return errForbidden("role "+string(who.Role)+" may not change objects", "use a token with role member or admin")
		}
	}
	return nil
}

// requireAdmin refuses a caller whose role is not admin (or operator):
// managing tokens and anything that hands out a credential.
func (c *call) requireAdmin() error {
	if !c.who.Role.CanAdmin() {
		return errForbidden("role "+string(c.who.Role)+" may not do this: it manages credentials", "use a token with role admin")
	}
	return nil
}

// checkContentType refuses a request with a body that is not JSON.
func checkContentType(r *http.Request) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return nil
	}
	return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", field: "Content-Type",
		msg: fmt.Sprintf("the request body must be application/json, not %q", truncate(ct, 64)), hint: "send Content-Type: application/json"}
}

func (c *call) projectExists() error {
	return c.s.cfg.Store.View(c.ctx, func(tx store.Tx) error {
		p, err := store.Get[domain.Project](c.ctx, tx, c.project)
		if errors.Is(err, store.ErrNotFound) || (err == nil && domain.Gone(p.State)) {
			return errNotFound("project", c.project)
		}
		return err
	})
}

// TokenPrefix starts every API token: moat_<token-id>_<secret>.
const TokenPrefix = "moat_"

// FormatToken returns the bearer string of a token.
func FormatToken(id, secret string) string { return TokenPrefix + id + "_" + secret }

// HashSecret returns the stored hash of a token secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a fresh random token secret.
func NewSecret() string { return rand.Text() + rand.Text() }

func (s *Server) authenticate(ctx context.Context, header string) (principal, error) {
	unauth := func(msg string) error {
		return &apiError{status: http.StatusUnauthorized, code: "unauthenticated", msg: msg,
			hint: "send Authorization: Bearer moat_<id>_<secret> (MOAT_TOKEN for the CLI)"}
	}
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return principal{}, unauth("no API token was given")
	}
	rest, ok := strings.CutPrefix(raw, TokenPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || !domain.ValidID(domain.PrefixToken, id) {
		return principal{}, unauth("the API token is malformed")
	}
	var tok *domain.Token
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		var err error
		tok, err = store.Get[domain.Token](ctx, tx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return principal{}, unauth("the API token is not valid")
	}
	if err != nil {
		return principal{}, fmt.Errorf("look up token: %w", err)
	}
	if domain.Gone(tok.State) || subtle.ConstantTimeCompare([]byte(tok.Hash), []byte(HashSecret(secret))) != 1 {
		return principal{}, unauth("the API token is not valid")
	}
	return principal{TokenID: tok.ID, Role: tok.Role, ProjectID: tok.ProjectID, Host: tok.Host, Name: tok.Name}, nil
}

// appendAudit appends the call's audit entry in tx.
func (c *call) appendAudit(tx store.Tx, outcome string) error {
	return c.appendAuditOf(tx, c.rt.Action, c.target, c.detail, outcome)
}

// appendAuditOf appends an entry of the call for action on target with
// detail: the
// route's own entry, or one for a change the route makes besides its own
// (the quota an approved support request raises).
func (c *call) appendAuditOf(tx store.Tx, action, target, detail, outcome string) error {
	e, err := audit.Append(c.ctx, tx, domain.AuditEntry{
		Time:      c.s.now(),
		Actor:     c.who.actor(),
		ProjectID: c.auditProject(),
		Action:    action,
		Target:    target,
		RequestID: c.reqID,
		Source:    c.source,
		Outcome:   outcome,
		Detail:    detail,
	})
	if err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	if c.s.cfg.AfterAudit != nil {
		seq := e.Seq
		defer c.s.cfg.AfterAudit(seq)
	}
	return nil
}

func (c *call) auditProject() string {
	if c.project != "" {
		return c.project
	}
	return c.who.ProjectID
}

// mutate runs fn in a read-write transaction that also appends the call's
// success audit entry, so a mutation and its record commit together.
func (c *call) mutate(fn func(tx store.Tx) error) error {
	return c.mutateIf(func(tx store.Tx) (bool, error) { return true, fn(tx) })
}

// mutateIf is mutate for a call that may change nothing worth an audit
// entry (an agent repeating its report): the success entry is appended
// only when fn reports a change.
func (c *call) mutateIf(fn func(tx store.Tx) (changed bool, err error)) error {
	audited := false
	err := c.s.cfg.Store.Update(c.ctx, func(tx store.Tx) error {
		changed, err := fn(tx)
		if err != nil || !changed {
			audited = false
			return err
		}
		audited = true
		return c.appendAudit(tx, domain.OutcomeSuccess)
	})
	if err == nil && audited {
		c.audited = true
	}
	return err
}

// view runs fn in a read-only transaction.
func (c *call) view(fn func(tx store.Tx) error) error { return c.s.cfg.Store.View(c.ctx, fn) }

// maxBody bounds request bodies: 8,000 allowlist entries fit with room.
const maxBody = 8 << 20

// decode reads a JSON body strictly into v.
func (c *call) decode(v any) error {
	body, err := io.ReadAll(io.LimitReader(c.r.Body, maxBody+1))
	if err != nil {
		return &apiError{status: 400, code: "invalid_body", msg: "the request body could not be read"}
	}
	if len(body) > maxBody {
		return &apiError{status: 413, code: "body_too_large", msg: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
	}
	c.body = body
	return decodeJSON(body, v)
}

func decodeJSON(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return &apiError{status: 400, code: "invalid_json", msg: "the request body is empty", hint: "send a JSON object"}
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &ute) && ute.Field == "":
			return &apiError{status: 400, code: "invalid_json",
				msg: fmt.Sprintf("the request body must be a JSON object, not %s", ute.Value), hint: "send a JSON object; see /v1/openapi.json"}
		case errors.As(err, &ute):
			return &apiError{status: 400, code: "invalid_json", field: ute.Field,
				msg: fmt.Sprintf("%s must be %s, not %s", ute.Field, jsonKind(ute.Type), ute.Value), hint: "see /v1/openapi.json"}
		case errors.As(err, &se):
			return &apiError{status: 400, code: "invalid_json", msg: fmt.Sprintf("the body is not valid JSON (offset %d)", se.Offset), hint: "send a JSON object"}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &apiError{status: 400, code: "unknown_field", field: f, msg: fmt.Sprintf("unknown field %q", f), hint: "remove it; see /v1/openapi.json for the fields"}
		}
		return &apiError{status: 400, code: "invalid_json", msg: "the body is not valid JSON", hint: "send a JSON object"}
	}
	if dec.More() {
		return &apiError{status: 400, code: "invalid_json", msg: "the body holds more than one JSON value", hint: "send a single JSON object"}
	}
	return nil
}

// jsonKind names a Go type the way the API documents it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a JSON " + t.Kind().String()
}

// truncate bounds a string taken from a request before it is audited or
// echoed: at most n bytes, cut on a rune boundary, marked with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ifMatch returns the revision in If-Match, or 0 when absent.
func (c *call) ifMatch() (int64, error) {
	h := c.r.Header.Get("If-Match")
	if h == "" || h == "*" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || n <= 0 {
		return 0, &apiError{status: 400, code: "invalid_if_match", field: "If-Match", msg: fmt.Sprintf("%q is not an ETag of this API", h), hint: `send the ETag from the last GET, e.g. If-Match: "12"`}
	}
	return n, nil
}

func etag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// reply writes v as JSON with status (the route's default when 0).
func (c *call) reply(status int, v any) error {
	if status == 0 {
		status = c.rt.Status
	}
	if status == 0 {
		status = http.StatusOK
	}
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	writeJSON(c.w, status, body)
	return nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
	w.Write([]byte("\n"))
}
