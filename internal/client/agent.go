package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// ServerLongPoll is how long the server holds GET /v1/hosts/{host}/desired
// when nothing newer than ?after= exists.
const ServerLongPoll = 25 * time.Second

// longPollTimeout bounds one long poll: the server's wait plus room for the
// network and a slow answer.
const longPollTimeout = ServerLongPoll + 15*time.Second

// HostDesired long-polls the desired state of host (GET
// /v1/hosts/{host}/desired?after=N): it returns as soon as the revision is
// greater than after, or after the server's wait with the same revision.
// The client's request timeout does not cut the wait: the call is bounded
// by ctx and by the server's wait plus a margin.
func (c *Client) HostDesired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	ctx, cancel := context.WithTimeout(ctx, longPollTimeout)
	defer cancel()
	var out apitype.HostDesired
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	_, err := c.longPoller().do(ctx, request{method: http.MethodGet, path: hostPath(host) + "/desired", query: q, out: &out})
	return out, err
}

// ReportHost reports what host's agent applied (POST
// /v1/hosts/{host}/report).
func (c *Client) ReportHost(ctx context.Context, host string, r apitype.HostReport) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: hostPath(host) + "/report", in: r})
	return err
}

func hostPath(host string) string { return "/v1/hosts/" + url.PathEscape(host) }

// longPollTransports caches, per transport whose response-header timeout
// would cut a long poll, a clone without that timeout (so that its
// connections are reused from one poll to the next).
var longPollTransports sync.Map // *http.Transport -> *http.Transport

// longPoller returns a shallow copy of c whose HTTP client has no overall
// timeout and whose transport waits long enough for the response headers;
// connections are shared with c whenever c's transport allows it.
func (c *Client) longPoller() *Client {
	if c.hc.Timeout == 0 || c.hc.Timeout >= longPollTimeout {
		if t, ok := c.hc.Transport.(*http.Transport); !ok || !cuts(t) {
			return c
		}
	}
	hc := *c.hc
	hc.Timeout = 0
	if t, ok := hc.Transport.(*http.Transport); ok && cuts(t) {
		lt, ok := longPollTransports.Load(t)
		if !ok {
			clone := t.Clone()
			clone.ResponseHeaderTimeout = 0
			lt, _ = longPollTransports.LoadOrStore(t, clone)
		}
		hc.Transport = lt.(*http.Transport)
	}
	lp := *c
	lp.hc = &hc
	return &lp
}

// cuts reports whether t's response-header timeout would end a long poll.
func cuts(t *http.Transport) bool {
	return t.ResponseHeaderTimeout > 0 && t.ResponseHeaderTimeout < longPollTimeout
}
