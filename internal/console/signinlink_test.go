package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/console"
)

// TestSignInLink: the one-time link `moat up` prints signs a browser in
// as the operator once: a GET spends nothing (link previews), the post
// needs the form's CSRF token, a second use and an expired link are
// refused, and the token is never in the URL.
func TestSignInLink(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e := newEnvWith(t, func(c *console.Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	link := e.con.SignInLink(e.operator, 10*time.Minute)
	if !strings.HasPrefix(link, "/console/signin/link?code=") || strings.Contains(link, e.operator) || strings.Contains(link, strings.Split(e.operator, "_")[2]) {
		t.Fatalf("link %q: want /console/signin/link?code=… without the token", link)
	}
	code, _ := url.ParseQuery(strings.SplitN(link, "?", 2)[1])

	b := e.browser()
	// Opened twice (a preview, then the user): both show the button.
	b.mustGet(link)
	body := b.mustGet(link)
	if !strings.Contains(body, `<button type="submit" id="signin-link">Sign in as the operator</button>`) {
		t.Fatalf("link page:\n%s", body)
	}
	// Without the form's CSRF token: refused, and the code is not spent.
	if resp, _ := e.browser().post("/console/signin/link", url.Values{"code": code["code"], "csrf": {"x"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("link post without the form's token: %s, want 403", resp.Status)
	}
	resp, _ := b.post("/console/signin/link", url.Values{"code": code["code"]})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/vpcs" {
		t.Fatalf("sign in with the link: %s to %q, want 303 to /console/vpcs", resp.Status, resp.Header.Get("Location"))
	}
	checkCookie(t, resp, "__Host-moat-console")
	if body := b.mustGet("/console/vpcs"); !strings.Contains(body, "Role: operator") {
		t.Errorf("signed in by link, not as the operator:\n%s", body)
	}

	// Used once: refused, on the page and on the post.
	other := e.browser()
	resp, body = other.get(link)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "This sign-in link was already used or has expired.") {
		t.Errorf("GET of a used link: %s\n%s", resp.Status, body)
	}
	resp, _ = other.post("/console/signin/link", url.Values{"code": code["code"]})
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
		t.Errorf("second use of the link: %s, want 403", resp.Status)
	}

	// Expired: refused.
	late := e.con.SignInLink(e.operator, 10*time.Minute)
	lateCode, _ := url.ParseQuery(strings.SplitN(late, "?", 2)[1])
	c := e.browser()
	c.mustGet(late)
	mu.Lock()
	now = now.Add(11 * time.Minute)
	mu.Unlock()
	resp, body = c.post("/console/signin/link", url.Values{"code": lateCode["code"]})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "already used or has expired") {
		t.Errorf("expired link: %s, want 403", resp.Status)
	}
	// A made-up code.
	if resp, _ := c.get("/console/signin/link?code=AAAA"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("made-up code: %s, want 403", resp.Status)
	}
}
