package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
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

// HostStats sends the PostgreSQL statistics of host's nodes, for the
// tenants' metrics (POST /v1/hosts/{host}/stats).
func (c *Client) HostStats(ctx context.Context, host string, s apitype.HostStats) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: hostPath(host) + "/stats", in: s})
	return err
}

func hostPath(host string) string { return "/v1/hosts/" + url.PathEscape(host) }

// longPoller returns the client for long polls: c itself, or, when c's
// overall timeout or its transport's response-header timeout would cut a
// long poll, the copy of c that New made without them.
func (c *Client) longPoller() *Client {
	if c.poll != nil {
		return c.poll
	}
	return c
}

// newLongPoller returns a shallow copy of c whose HTTP client has no
// overall timeout and whose transport waits long enough for the response
// headers (a clone of c's, whose connections it then keeps apart), or nil
// when c's own HTTP client can wait that long. New calls it once: the copy
// and its transport live as long as c.
func (c *Client) newLongPoller() *Client {
	t, isTransport := c.hc.Transport.(*http.Transport)
	if (c.hc.Timeout == 0 || c.hc.Timeout >= longPollTimeout) && (!isTransport || !cuts(t)) {
		return nil
	}
	hc := *c.hc
	hc.Timeout = 0
	if isTransport && cuts(t) {
		clone := t.Clone()
		clone.ResponseHeaderTimeout = 0
		hc.Transport = clone
	}
	lp := *c
	lp.hc = &hc
	return &lp
}

// CloseIdleConnections closes the idle connections of c's transports (its
// own, and the long polls' when they have one of their own); see
// http.Client.CloseIdleConnections. c stays usable.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
	if c.poll != nil {
		c.poll.hc.CloseIdleConnections()
	}
}

// cuts reports whether t's response-header timeout would end a long poll.
func cuts(t *http.Transport) bool {
	return t.ResponseHeaderTimeout > 0 && t.ResponseHeaderTimeout < longPollTimeout
}
