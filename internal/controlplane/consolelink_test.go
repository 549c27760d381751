package controlplane_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/controlplane"
)

// TestConsoleLink: the link `moat console link` mints through the API (and
// the one moat server prints) signs a browser into the console as the
// operator, once; the token is never in it.
func TestConsoleLink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs lockedBuffer
	cp, op, _ := startCP(t, dir, &logs)
	caPEM, err := os.ReadFile(filepath.Join(dir, controlplane.APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	browser := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	read := func(res *http.Response, err error) (int, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	// signIn opens link in a fresh browser and presses its button.
	signIn := func(link string) (*http.Client, int) {
		t.Helper()
		b := browser()
		status, body := read(b.Get(link))
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
		if status != http.StatusOK || m == nil {
			return b, status
		}
		code, _ := url.ParseQuery(strings.SplitN(link, "?", 2)[1])
		res, err := b.PostForm(cp.URL()+"/console/signin/link", url.Values{"code": code["code"], "csrf": {m[1]}})
		status, _ = read(res, err)
		return b, status
	}

	before := time.Now()
	l, err := op.CreateConsoleLink(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.URL, cp.URL()+"/console/signin/link?code=") || strings.Contains(l.URL, "moat_") {
		t.Fatalf("link %q: want %s/console/signin/link?code=… without the token", l.URL, cp.URL())
	}
	if d := l.ExpiresAt.Sub(before); d < 14*time.Minute || d > 16*time.Minute {
		t.Errorf("link expires in %v, want 15 minutes", d)
	}
	b, status := signIn(l.URL)
	if status != http.StatusSeeOther {
		t.Fatalf("sign in with the minted link: %d, want 303", status)
	}
	if status, body := read(b.Get(cp.URL() + "/console/vpcs")); status != http.StatusOK || !strings.Contains(body, "Role: operator") {
		t.Errorf("signed in by the minted link: %d, not as the operator:\n%s", status, body)
	}
	if _, status := signIn(l.URL); status != http.StatusForbidden {
		t.Errorf("second use of the link: %d, want 403", status)
	}
	// moat server's own link, from the data directory's operator token.
	if _, status := signIn(cp.OperatorSignInLink()); status != http.StatusSeeOther {
		t.Errorf("sign in with OperatorSignInLink: %d, want 303", status)
	}
}
