// Package client is the typed Go client of Moat's HTTP API (/v1): one method
// per route of the server's route table, problem details surfaced as
// *Error, pagination followed for list calls, and an Idempotency-Key on
// every create. The CLI, the console's tests, the Terraform provider and
// the end-to-end tests import it; it imports only apitype from Moat, and
// domain for ExplainInput (the model that explain and verify judge from).
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// Config configures a Client.
type Config struct {
	// URL is the API's base URL, e.g. https://127.0.0.1:8443. It must be
	// https; a trailing /v1 is accepted.
	URL string
	// Token is the bearer token, moat_<token-id>_<secret>.
	Token string
	// CAFile or CAPEM holds the certificate(s) of the CA that signed the
	// server's certificate (the server's api-ca.pem). With neither, the
	// system roots are trusted.
	CAFile string
	CAPEM  []byte
	// HTTPClient, if set, is used as-is (its transport decides whom to
	// trust; CAFile and CAPEM are then ignored).
	HTTPClient *http.Client
	// Timeout bounds one HTTP request (0: 30s).
	Timeout time.Duration
	// UserAgent is sent with every request (default "moat-client").
	UserAgent string
}

// Client calls one Moat API server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	ua    string
	// poll is the client long polls use, when hc's timeouts would cut
	// them (see newLongPoller); nil when hc will do.
	poll *Client
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("client: no API URL")
	}
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: parse API URL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: API URL %q is not https://HOST[:PORT] (the API serves HTTPS only)", cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/v1")
	u.RawQuery, u.Fragment = "", ""
	c := &Client{base: u, token: cfg.Token, hc: cfg.HTTPClient, ua: cfg.UserAgent}
	if c.ua == "" {
		c.ua = "moat-client"
	}
	if c.hc == nil {
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		pemData := cfg.CAPEM
		if len(pemData) == 0 && cfg.CAFile != "" {
			if pemData, err = os.ReadFile(cfg.CAFile); err != nil {
				return nil, fmt.Errorf("client: read CA file: %w", err)
			}
		}
		if len(pemData) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemData) {
				return nil, errors.New("client: the CA holds no PEM certificate")
			}
			tc.RootCAs = pool
		}
		dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		c.hc = &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           dialer.DialContext,
				TLSClientConfig:       tc,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: timeout,
				IdleConnTimeout:       90 * time.Second,
				MaxIdleConnsPerHost:   16,
				ForceAttemptHTTP2:     true,
			},
		}
	}
	c.poll = c.newLongPoller()
	return c, nil
}

// URL returns the API's base URL (without /v1).
func (c *Client) URL() string { return c.base.String() }

// Error is an API error: the server's RFC 9457 problem details. Callers
// branch on Code (stable) with errors.As.
type Error struct {
	apitype.Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	if e.Detail != "" {
		b.WriteString(e.Detail)
	} else if e.Title != "" {
		b.WriteString(strings.ToLower(e.Title))
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
	}
	return b.String()
}

// HasCode reports whether err is an *Error with the given problem code.
func HasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// CallOption adjusts one call.
type CallOption func(*callOpts)

type callOpts struct {
	idemKey   string
	ifMatch   string
	requestID string
	etag      *string
	limit     int
}

// WithIdempotencyKey sets the Idempotency-Key of a create instead of a
// random one (to retry a create across processes).
func WithIdempotencyKey(key string) CallOption { return func(o *callOpts) { o.idemKey = key } }

// WithIfMatch makes a write conditional on the object's ETag.
func WithIfMatch(etag string) CallOption { return func(o *callOpts) { o.ifMatch = etag } }

// WithRequestID sets X-Request-Id (it appears in the audit log).
func WithRequestID(id string) CallOption { return func(o *callOpts) { o.requestID = id } }

// WithETag stores the response's ETag header in *dst.
func WithETag(dst *string) CallOption { return func(o *callOpts) { o.etag = dst } }

// WithPageSize sets the page size list calls request (1 to 1000).
func WithPageSize(n int) CallOption { return func(o *callOpts) { o.limit = n } }

func collect(opts []CallOption) callOpts {
	var o callOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

// NewIdempotencyKey returns a random UUID-formatted key.
func NewIdempotencyKey() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// request is one API call.
type request struct {
	method string
	path   string // under the base URL, starting with /v1
	query  url.Values
	in     any // JSON body, or nil
	out    any // decoded on success, or nil
	create bool
	opts   callOpts
}

// do performs r and returns the response headers. A create carries an
// Idempotency-Key and, like a GET, is retried once on a network error.
func (c *Client) do(ctx context.Context, r request) (http.Header, error) {
	var body []byte
	if r.in != nil {
		var err error
		if body, err = json.Marshal(r.in); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	u := *c.base
	u.Path = c.base.Path + r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	key := r.opts.idemKey
	if r.create && key == "" {
		key = NewIdempotencyKey()
	}
	retryable := r.method == http.MethodGet || key != ""
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		req, err := http.NewRequestWithContext(ctx, r.method, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", c.ua)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		if r.opts.ifMatch != "" {
			req.Header.Set("If-Match", quoteETag(r.opts.ifMatch))
		}
		if r.opts.requestID != "" {
			req.Header.Set("X-Request-Id", r.opts.requestID)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the method and URL are said below
			}
			lastErr = err
			if ctx.Err() != nil || !retryable {
				break
			}
			continue
		}
		return c.finish(resp, r)
	}
	return nil, fmt.Errorf("%s %s: %w", r.method, u.Path, lastErr)
}

func (c *Client) finish(resp *http.Response, r request) (http.Header, error) {
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", r.method, r.path, err)
	}
	if r.opts.etag != nil {
		*r.opts.etag = resp.Header.Get("ETag")
	}
	if resp.StatusCode >= 300 {
		return resp.Header, problemFrom(resp, data)
	}
	if r.out != nil {
		if raw, ok := r.out.(*[]byte); ok {
			*raw = data
			return resp.Header, nil
		}
		if err := json.Unmarshal(data, r.out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode response: %w", r.method, r.path, err)
		}
	}
	return resp.Header, nil
}

// problemFrom builds the *Error of a failed response, also when the body is
// not a problem document (a proxy's HTML page, say).
func problemFrom(resp *http.Response, data []byte) error {
	e := &Error{}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		_ = json.Unmarshal(data, &e.Problem)
	}
	e.Status = resp.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	if e.Code == "" {
		e.Code = fmt.Sprintf("http_%d", resp.StatusCode)
	}
	if e.Detail == "" {
		e.Detail = fmt.Sprintf("the server answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-Id")
	}
	return e
}

// quoteETag accepts an ETag with or without its quotes.
func quoteETag(s string) string {
	if strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `W/"`) || s == "*" {
		return s
	}
	return `"` + s + `"`
}

// listAll follows next_page_token until the last page.
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values, opts []CallOption) ([]T, error) {
	o := collect(opts)
	if q == nil {
		q = url.Values{}
	}
	if o.limit > 0 {
		q.Set("limit", fmt.Sprint(o.limit))
	}
	out := []T{}
	for {
		var page apitype.List[T]
		if _, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q, out: &page, opts: o}); err != nil {
			return out, err
		}
		out = append(out, page.Items...)
		if page.NextPageToken == "" {
			return out, nil
		}
		q.Set("page_token", page.NextPageToken)
	}
}
