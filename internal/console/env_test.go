package console_test

import (
	"context"
	"crypto/tls"
	"flag"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/console"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// env is a real control plane (its API handler, a SQLite store in a temp
// data directory, no provider) with the console mounted beside the API on
// one HTTPS server, as the API listener serves them.
type env struct {
	t        testing.TB
	cp       *controlplane.ControlPlane
	con      *console.Console
	srv      *httptest.Server
	operator string
	// A is a project with one token per role; B another project.
	A, B                             string
	adminA, memberA, viewerA, adminB string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with the console's configuration adjusted by
// configure (after API is set).
func newEnvWith(t testing.TB, configure func(*console.Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	// The control plane does not run here, nor its audit checkpoint
	// signer: a long interval keeps the unsigned tail from aging past
	// what verify allows (2 intervals) in a slow run, which would report
	// the log broken (TestBrowser's audit verify, in a loaded make test).
	cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleettest.Register(ctx, cp.Store, domain.Catalog{}, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Store.Close() })
	cfg := console.Config{API: cp.API, Poll: 200 * time.Millisecond}
	if configure != nil {
		configure(&cfg)
	}
	con, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, con)
	mux.Handle("/", cp.API)
	e := &env{t: t, cp: cp, con: con, srv: httptest.NewTLSServer(mux)}
	t.Cleanup(e.srv.Close)
	raw, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	e.operator = strings.TrimSpace(string(raw))
	op := e.api(e.operator)
	for _, x := range []struct {
		name   string
		id     *string
		tokens map[string]*string
	}{
		{"alpha", &e.A, map[string]*string{"admin": &e.adminA, "member": &e.memberA, "viewer": &e.viewerA}},
		{"beta", &e.B, map[string]*string{"admin": &e.adminB}},
	} {
		p, err := op.CreateProject(ctx, apitype.ProjectCreate{Name: x.name})
		if err != nil {
			t.Fatal(err)
		}
		*x.id = p.ID
		for role, dst := range x.tokens {
			tok, err := op.CreateToken(ctx, p.ID, apitype.TokenCreate{Role: role, Name: role})
			if err != nil {
				t.Fatal(err)
			}
			*dst = tok.Secret
		}
	}
	return e
}

// api is a Go client of the API with token, over the test server.
func (e *env) api(token string) *client.Client {
	e.t.Helper()
	cl, err := client.New(client.Config{URL: e.srv.URL, Token: token, HTTPClient: e.srv.Client()})
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// browser is a cookie-keeping HTTP client that does not follow
// redirects, so tests see them.
type browser struct {
	e    *env
	hc   *http.Client
	csrf string // the CSRF token of the last page read
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	tr := e.srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	return &browser{e: e, hc: &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// signIn signs a new browser in with token.
func (e *env) signIn(token string) *browser {
	e.t.Helper()
	b := e.browser()
	b.get("/console/signin")
	resp, _ := b.post("/console/signin", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/vpcs" {
		e.t.Fatalf("sign in: %s, want 303 to /console/vpcs", resp.Status)
	}
	b.get("/console/vpcs")
	return b
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.e.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = html.UnescapeString(string(m[1]))
	}
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	return b.do(req)
}

// post submits form with the CSRF token of the last page read, unless
// the form has one.
func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.e.t.Helper()
	if _, ok := form["csrf"]; !ok && b.csrf != "" {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// mustGet reads a page that must answer 200.
func (b *browser) mustGet(path string) string {
	b.e.t.Helper()
	resp, body := b.get(path)
	if resp.StatusCode != http.StatusOK {
		b.e.t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	return body
}

// mustPost submits a form that must redirect (303), and returns where to.
func (b *browser) mustPost(path string, form url.Values) string {
	b.e.t.Helper()
	resp, body := b.post(path, form)
	if resp.StatusCode != http.StatusSeeOther {
		b.e.t.Fatalf("POST %s: %s, want 303\n%s", path, resp.Status, body)
	}
	return resp.Header.Get("Location")
}
