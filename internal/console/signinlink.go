package console

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"time"
)

// One-time sign-in links: `moat up` prints a console URL holding a random
// code that stands for the operator token for a short time, once. The
// token itself never appears in a URL (browser history, logs, the
// Referer); the code is kept here hashed, in memory only, and is spent by
// the first sign-in that posts it, or dies at its expiry or with the
// process.

// DefaultLinkTTL is how long a sign-in link is valid.
const DefaultLinkTTL = 15 * time.Minute

// linkPath is where a sign-in link points.
const linkPath = "/console/signin/link"

type signinLink struct {
	token   string
	expires time.Time
}

func linkKey(code string) string {
	sum := sha256.Sum256([]byte("signin-link\x00" + code))
	return hex.EncodeToString(sum[:])
}

// SignInLink returns the path and query of a new one-time sign-in link
// for token (the operator's, for `moat up`), valid for ttl (0:
// DefaultLinkTTL) and for one sign-in.
func (c *Console) SignInLink(token string, ttl time.Duration) string {
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	code := randomToken()
	ss := c.sessions
	ss.mu.Lock()
	now := ss.now()
	for k, l := range ss.links {
		if now.After(l.expires) {
			delete(ss.links, k)
		}
	}
	ss.links[linkKey(code)] = signinLink{token: token, expires: now.Add(ttl)}
	ss.mu.Unlock()
	return linkPath + "?" + url.Values{"code": {code}}.Encode()
}

// peekLink reports whether code is a live link; takeLink spends it and
// returns its token.
func (ss *sessions) peekLink(code string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	l, ok := ss.links[linkKey(code)]
	return ok && !ss.now().After(l.expires)
}

func (ss *sessions) takeLink(code string) (string, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := linkKey(code)
	l, ok := ss.links[k]
	delete(ss.links, k)
	if !ok || ss.now().After(l.expires) {
		return "", false
	}
	return l.token, true
}

// linkSpent is the refusal of a used, expired or unknown link.
var linkSpent = &problem{Code: "link_invalid", Msg: "This sign-in link was already used or has expired.",
	Hint: "sign in with the operator token (admin.token in the data directory), or restart moat up for a new link"}

// signinLinkForm answers a sign-in link: a page with one button that
// posts the code (a GET spends nothing, so a link preview cannot use it
// up).
func (c *Console) signinLinkForm(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("code")
	if code == "" || !c.sessions.peekLink(code) {
		c.renderSignin(w, r, http.StatusForbidden, signinData{Error: linkSpent})
		return
	}
	c.renderSignin(w, r, http.StatusOK, signinData{Link: code})
}

// signinWithLink spends the posted code and signs the browser in with its
// token.
func (c *Console) signinWithLink(w http.ResponseWriter, r *http.Request) {
	if !c.signinCSRF(r) {
		c.renderSignin(w, r, http.StatusForbidden, signinData{Error: formExpired})
		return
	}
	token, ok := c.sessions.takeLink(r.PostFormValue("code"))
	if !ok {
		c.renderSignin(w, r, http.StatusForbidden, signinData{Error: linkSpent})
		return
	}
	c.startSession(w, r, token)
}
