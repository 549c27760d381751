package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/moatdb/moat/internal/apitype"
)

// Platform tokens: operator tokens and hosts' agent tokens (operator only).

// CreateOperatorToken creates a named operator token; the result's Secret
// is shown once.
func (c *Client) CreateOperatorToken(ctx context.Context, name string, opts ...CallOption) (apitype.Token, error) {
	return create[apitype.Token](ctx, c, "/v1/tokens", apitype.PlatformTokenCreate{Name: name}, opts)
}

// CreateAgentToken creates an agent token bound to host (name "" means
// agent-<host>); the result's Secret is shown once.
func (c *Client) CreateAgentToken(ctx context.Context, host, name string, opts ...CallOption) (apitype.Token, error) {
	return create[apitype.Token](ctx, c, "/v1/hosts/"+url.PathEscape(host)+"/tokens", apitype.PlatformTokenCreate{Name: name}, opts)
}

// ListPlatformTokens lists the live operator and agent tokens (all pages);
// host, when set, keeps the agent tokens of that host.
func (c *Client) ListPlatformTokens(ctx context.Context, host string, opts ...CallOption) ([]apitype.Token, error) {
	var q url.Values
	if host != "" {
		q = url.Values{"host": {host}}
	}
	return listAll[apitype.Token](ctx, c, "/v1/tokens", q, opts)
}

// DeletePlatformToken revokes operator or agent token id.
func (c *Client) DeletePlatformToken(ctx context.Context, id string, opts ...CallOption) (apitype.Token, error) {
	return send[apitype.Token](ctx, c, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, opts)
}
