package client

import (
	"context"
	"net/http"

	"github.com/moatdb/moat/internal/apitype"
)

// CreateHost registers a host (operator); the answer's AgentToken is
// the host-bound agent token, its Secret shown once.
func (c *Client) CreateHost(ctx context.Context, in apitype.HostCreate, opts ...CallOption) (apitype.HostCreated, error) {
	return create[apitype.HostCreated](ctx, c, "/v1/hosts", in, opts)
}

// ListHosts lists the hosts (operator).
func (c *Client) ListHosts(ctx context.Context, opts ...CallOption) ([]apitype.Host, error) {
	return listAll[apitype.Host](ctx, c, "/v1/hosts", nil, opts)
}

// GetHost reads a host, by name or ID, with its nodes (operator).
func (c *Client) GetHost(ctx context.Context, host string, opts ...CallOption) (apitype.Host, error) {
	return get[apitype.Host](ctx, c, hostPath(host), opts)
}

// UpdateHost changes a host's capacity (operator).
func (c *Client) UpdateHost(ctx context.Context, host string, in apitype.HostUpdate, opts ...CallOption) (apitype.Host, error) {
	return send[apitype.Host](ctx, c, http.MethodPatch, hostPath(host), in, opts)
}

// DrainHost cordons a host: it takes no new node and its nodes are
// replaced elsewhere (operator).
func (c *Client) DrainHost(ctx context.Context, host string, opts ...CallOption) (apitype.Host, error) {
	return send[apitype.Host](ctx, c, http.MethodPost, hostPath(host)+"/drain", nil, opts)
}

// ActivateHost uncordons a drained host (operator).
func (c *Client) ActivateHost(ctx context.Context, host string, opts ...CallOption) (apitype.Host, error) {
	return send[apitype.Host](ctx, c, http.MethodPost, hostPath(host)+"/activate", nil, opts)
}

// DeleteHost removes an empty host and revokes its agent tokens
// (operator); a host with nodes is refused (409 in_use).
func (c *Client) DeleteHost(ctx context.Context, host string, opts ...CallOption) (apitype.Host, error) {
	return send[apitype.Host](ctx, c, http.MethodDelete, hostPath(host), nil, opts)
}
