package client

import (
	"context"
	"net/http"

	"github.com/moatdb/moat/internal/apitype"
)

// ResetPassword gives service svc of project p a new admin password
// (project admin) and returns it; it is shown only here. It is not retried:
// a second reset would replace the first one's password.
func (c *Client) ResetPassword(ctx context.Context, p, svc string, opts ...CallOption) (apitype.PasswordReset, error) {
	return send[apitype.PasswordReset](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/password", nil, opts)
}

// GetProjectCA returns the CA certificate of project p, which the servers
// of its services present certificates from (sslrootcert for
// sslmode=verify-full).
func (c *Client) GetProjectCA(ctx context.Context, p string, opts ...CallOption) (apitype.CA, error) {
	return get[apitype.CA](ctx, c, proj(p)+"/ca", opts)
}

// ProjectMetrics returns the PostgreSQL metrics of project p's nodes in
// the Prometheus text exposition format (GET /v1/projects/{p}/metrics),
// as a tenant's Prometheus scrapes them.
func (c *Client) ProjectMetrics(ctx context.Context, p string, opts ...CallOption) ([]byte, error) {
	var raw []byte
	_, err := c.do(ctx, request{method: http.MethodGet, path: proj(p) + "/metrics", out: &raw, opts: collect(opts)})
	return raw, err
}
