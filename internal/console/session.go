package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
)

// Cookie names. The __Host- prefix makes the browser insist on Secure,
// Path=/ and no Domain.
const (
	sessionCookie = "__Host-moat-console"
	// preCookie holds the nonce the sign-in form's CSRF token is bound to.
	preCookie = "__Host-moat-console-pre"
	// csrfField and csrfHeader carry the CSRF token of a form or an htmx
	// request.
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// Roles as the API names them.
const (
	roleOperator = "operator"
	roleAdmin    = "admin"
	roleMember   = "member"
	roleViewer   = "viewer"
)

// session is one signed-in browser. The token never leaves the server
// after sign-in: the cookie holds only the random session ID.
type session struct {
	id      string
	csrf    string
	token   string
	tokenID string
	role    string
	// roleNote says how the role was learned when the API could not say.
	roleNote string
	expires  time.Time

	mu      sync.Mutex
	project string // the project the user works in
}

func (s *session) canWrite() bool {
	return s.role == roleOperator || s.role == roleAdmin || s.role == roleMember
}

func (s *session) operator() bool { return s.role == roleOperator }

func (s *session) currentProject() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.project
}

func (s *session) setProject(p string) {
	s.mu.Lock()
	s.project = p
	s.mu.Unlock()
}

// checkCSRF reports whether r carries the session's CSRF token, in the
// form or in the htmx header.
func (s *session) checkCSRF(r *http.Request) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sessions is the server-side session table.
type sessions struct {
	ttl time.Duration
	now func() time.Time
	// key signs the sign-in form's CSRF tokens.
	key []byte

	mu   sync.Mutex
	byID map[string]*session
	// links are the live one-time sign-in links by the hash of their code.
	links map[string]signinLink
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, now: now, key: []byte(rand.Text() + rand.Text()), byID: map[string]*session{}, links: map[string]signinLink{}}
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session and sweeps expired ones.
func (ss *sessions) create(token string, id client.Identity, note, project string) *session {
	s := &session{id: randomToken(), csrf: randomToken(), token: token, tokenID: id.TokenID, role: id.Role,
		roleNote: note, project: project, expires: ss.now().Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for k, o := range ss.byID {
		if now.After(o.expires) {
			delete(ss.byID, k)
		}
	}
	ss.byID[s.id] = s
	return s
}

func (ss *sessions) fromRequest(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[ck.Value]
	if s == nil {
		return nil
	}
	if ss.now().After(s.expires) {
		delete(ss.byID, s.id)
		return nil
	}
	return s
}

func (ss *sessions) drop(s *session) {
	if s == nil {
		return
	}
	ss.mu.Lock()
	delete(ss.byID, s.id)
	ss.mu.Unlock()
}

// signinToken is the sign-in form's CSRF token: an HMAC of the nonce in
// the pre-session cookie, so a sign-in cannot be forged from another site
// (login CSRF) and nothing is stored before sign-in.
func (ss *sessions) signinToken(nonce string) string {
	m := hmac.New(sha256.New, ss.key)
	m.Write([]byte("signin\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
	if maxAge > 0 {
		ck.MaxAge = int(maxAge / time.Second)
		ck.Expires = time.Now().Add(maxAge)
	} else {
		ck.MaxAge = -1
	}
	http.SetCookie(w, ck)
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	if c.sessions.fromRequest(r) == nil {
		http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/console/vpcs", http.StatusSeeOther)
}

type signinData struct {
	Token   string // the sign-in form's CSRF token
	Expired bool
	Error   *problem
	// Link is a one-time sign-in code to exchange (the link `moat up`
	// prints): the page offers a button that posts it.
	Link string
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	c.renderSignin(w, r, http.StatusOK, signinData{Expired: r.URL.Query().Get("expired") != ""})
}

func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, d signinData) {
	nonce := randomToken()
	setCookie(w, preCookie, nonce, 30*time.Minute)
	d.Token = c.sessions.signinToken(nonce)
	c.render(w, r, nil, status, "signin", "Sign in", d)
}

// signinCSRF reports whether a sign-in form carries the token bound to
// the browser's pre-session cookie.
func (c *Console) signinCSRF(r *http.Request) bool {
	pre, err := r.Cookie(preCookie)
	want := ""
	if err == nil && pre.Value != "" {
		want = c.sessions.signinToken(pre.Value)
	}
	got := r.PostFormValue(csrfField)
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// formExpired is the refusal of a sign-in form without its CSRF token.
var formExpired = &problem{Msg: "The sign-in form expired or is not from this console; it has been reloaded, sign in again."}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if !c.signinCSRF(r) {
		c.renderSignin(w, r, http.StatusForbidden, signinData{Error: formExpired})
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		c.renderSignin(w, r, http.StatusBadRequest, signinData{Error: &problem{Field: "token", Msg: "an API token is required", Hint: "paste the operator token (admin.token in the server's data directory) or a project token (moat_…)"}})
		return
	}
	c.startSession(w, r, token)
}

// startSession signs the browser in with token: the API says who it is
// (a refusal is shown on the sign-in page), and the session cookie is set.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, token string) {
	ctx := withRemote(r.Context(), r.RemoteAddr)
	cl := c.clientFor(token)
	id, note, projects, err := identify(ctx, cl)
	if err != nil {
		var ae *client.Error
		if errors.As(err, &ae) {
			p := problemOf(ae)
			p.Field = "token"
			c.renderSignin(w, r, http.StatusUnauthorized, signinData{Error: p})
			return
		}
		c.log.Error("console sign-in", "err", err)
		c.renderSignin(w, r, http.StatusInternalServerError, signinData{Error: &problem{Msg: "Something went wrong on the server; try again."}})
		return
	}
	project := ""
	if len(projects) > 0 {
		project = projects[0].ID
	}
	s := c.sessions.create(token, id, note, project)
	setCookie(w, preCookie, "", 0)
	setCookie(w, sessionCookie, s.id, c.cfg.SessionTTL)
	http.Redirect(w, r, "/console/vpcs", http.StatusSeeOther)
}

// identify learns who token is: GET /v1/whoami where the API has it,
// otherwise from read-only routes whose access rule is the role (a
// refused GET leaves no audit entry). A project token that is neither
// admin nor operator is then taken as a viewer, so the console never
// offers a control the API would refuse.
func identify(ctx context.Context, cl *client.Client) (client.Identity, string, []apitype.Project, error) {
	projects, err := cl.ListProjects(ctx)
	if err != nil {
		return client.Identity{}, "", nil, err
	}
	id, err := cl.Whoami(ctx)
	if err == nil {
		return id, "", projects, nil
	}
	if !client.HasCode(err, "route_not_found") {
		return id, "", nil, err
	}
	if ok, err := cl.MayRead(ctx, "/v1/audit", url.Values{"limit": {"1"}}); err != nil {
		return id, "", nil, err
	} else if ok {
		return client.Identity{Role: roleOperator}, "", projects, nil
	}
	if len(projects) != 1 {
		return id, "", nil, fmt.Errorf("a project token sees %d projects", len(projects))
	}
	id.ProjectID = projects[0].ID
	ok, err := cl.MayRead(ctx, "/v1/projects/"+url.PathEscape(id.ProjectID)+"/tokens", url.Values{"limit": {"1"}})
	if err != nil {
		return id, "", nil, err
	}
	if ok {
		id.Role = roleAdmin
		return id, "", projects, nil
	}
	id.Role = roleViewer
	return id, "this API cannot say whether the token is a member or a viewer, so the console shows it read-only", projects, nil
}

func (c *Console) signout(q *req) error {
	c.sessions.drop(q.sess)
	setCookie(q.w, sessionCookie, "", 0)
	http.Redirect(q.w, q.r, "/console/signin", http.StatusSeeOther)
	return nil
}

// switchProject selects the project an operator works in (one the token
// can see).
func (c *Console) switchProject(q *req) error {
	want := q.r.PostFormValue("project")
	ps, err := q.api.ListProjects(q.ctx)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(ps, func(p apitype.Project) bool { return p.ID == want }) {
		q.sess.setProject(want)
	}
	back := q.r.PostFormValue("back")
	if !strings.HasPrefix(back, "/console/") || strings.HasPrefix(back, "//") {
		back = "/console/vpcs"
	}
	http.Redirect(q.w, q.r, back, http.StatusSeeOther)
	return nil
}
