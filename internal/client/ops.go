package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/moatdb/moat/internal/apitype"
)

// Operator access (design 0012): operators' grants, sessions and
// recordings; the agents' side of the nodes' endpoints; tenants' support
// grants.

// CreateOpsGrant asks for a grant to a node and the certificate of the
// session's public key (operator).
func (c *Client) CreateOpsGrant(ctx context.Context, in apitype.OpsGrantCreate, opts ...CallOption) (apitype.OpsGrantIssued, error) {
	return create[apitype.OpsGrantIssued](ctx, c, "/v1/ops/grants", in, opts)
}

// ListOpsGrants lists operator grants, of node when not "" (operator).
func (c *Client) ListOpsGrants(ctx context.Context, node string, opts ...CallOption) ([]apitype.OpsGrant, error) {
	return listAll[apitype.OpsGrant](ctx, c, "/v1/ops/grants", nodeQuery(node), opts)
}

// RevokeOpsGrant revokes a grant; the node's agent ends its sessions
// (operator).
func (c *Client) RevokeOpsGrant(ctx context.Context, id string, opts ...CallOption) (apitype.OpsGrant, error) {
	return send[apitype.OpsGrant](ctx, c, http.MethodPost, "/v1/ops/grants/"+url.PathEscape(id)+"/revoke", nil, opts)
}

// ListOpsSessions lists operator sessions, of node when not "" (operator).
func (c *Client) ListOpsSessions(ctx context.Context, node string, opts ...CallOption) ([]apitype.OpsSession, error) {
	return listAll[apitype.OpsSession](ctx, c, "/v1/ops/sessions", nodeQuery(node), opts)
}

// GetOpsRecording returns a session's terminal recording, channel from 1
// (operator).
func (c *Client) GetOpsRecording(ctx context.Context, session string, channel int, opts ...CallOption) (apitype.OpsRecording, error) {
	return get[apitype.OpsRecording](ctx, c, "/v1/ops/sessions/"+url.PathEscape(session)+"/recordings/"+strconv.Itoa(channel), opts)
}

// CreateSupportGrant records the project's consent to operator data
// access (admin).
func (c *Client) CreateSupportGrant(ctx context.Context, project string, in apitype.SupportGrantCreate, opts ...CallOption) (apitype.SupportGrant, error) {
	return create[apitype.SupportGrant](ctx, c, proj(project)+"/support-grants", in, opts)
}

// ListSupportGrants lists the project's support grants.
func (c *Client) ListSupportGrants(ctx context.Context, project string, opts ...CallOption) ([]apitype.SupportGrant, error) {
	return listAll[apitype.SupportGrant](ctx, c, proj(project)+"/support-grants", nil, opts)
}

// RevokeSupportGrant ends a support grant at once (admin).
func (c *Client) RevokeSupportGrant(ctx context.Context, project, id string, opts ...CallOption) (apitype.SupportGrant, error) {
	return send[apitype.SupportGrant](ctx, c, http.MethodPost, projObj(project, "support-grants", id)+"/revoke", nil, opts)
}

// OpsHostCert registers a node's operator endpoint and returns its host
// certificate (agents).
func (c *Client) OpsHostCert(ctx context.Context, host string, in apitype.OpsHostCertRequest) (apitype.OpsHostCert, error) {
	var out apitype.OpsHostCert
	_, err := c.do(ctx, request{method: http.MethodPost, path: hostPath(host) + "/ops/host-cert", in: in, out: &out})
	return out, err
}

// OpsGrantLive asks whether grant is live for node (agents).
func (c *Client) OpsGrantLive(ctx context.Context, host, grant, node string) (bool, error) {
	var out apitype.OpsGrantCheck
	_, err := c.do(ctx, request{method: http.MethodGet, path: hostPath(host) + "/ops/grants/" + url.PathEscape(grant), query: nodeQuery(node), out: &out})
	return out.Live, err
}

// OpsEvents sends endpoints' audit events (agents).
func (c *Client) OpsEvents(ctx context.Context, host string, in apitype.OpsEvents) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: hostPath(host) + "/ops/events", in: in})
	return err
}

// OpsRecording stores a finished terminal recording (agents).
func (c *Client) OpsRecording(ctx context.Context, host string, in apitype.OpsRecordingUpload) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: hostPath(host) + "/ops/recordings", in: in})
	return err
}

func nodeQuery(node string) url.Values {
	if node == "" {
		return nil
	}
	return url.Values{"node": {node}}
}
