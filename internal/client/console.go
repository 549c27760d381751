package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/moatdb/moat/internal/apitype"
)

// Identity is the caller's token as the API knows it.
type Identity = apitype.Identity

// Whoami returns the identity of the client's token (GET /v1/whoami). A
// server without the route answers an *Error with code route_not_found.
func (c *Client) Whoami(ctx context.Context, opts ...CallOption) (Identity, error) {
	return get[Identity](ctx, c, "/v1/whoami", opts)
}

// MayRead reports whether the token may GET path (under /v1, with an
// optional query): true when the API answers 2xx, false when it refuses
// (401, 403, 404). A refused GET is not audited, so this probes a role
// without leaving a trace. Other errors are returned.
func (c *Client) MayRead(ctx context.Context, path string, q url.Values, opts ...CallOption) (bool, error) {
	var raw []byte
	_, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q, out: &raw, opts: collect(opts)})
	if err == nil {
		return true, nil
	}
	var e *Error
	if errors.As(err, &e) && (e.Status == 401 || e.Status == 403 || e.Status == 404) {
		return false, nil
	}
	return false, err
}
