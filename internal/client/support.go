package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/moatdb/moat/internal/apitype"
)

// CreateSupportRequest files a support request of project p (a quota
// increase) to the operator.
func (c *Client) CreateSupportRequest(ctx context.Context, p string, in apitype.SupportRequestCreate, opts ...CallOption) (apitype.SupportRequest, error) {
	return create[apitype.SupportRequest](ctx, c, proj(p)+"/support-requests", in, opts)
}

// ListSupportRequests lists support requests (all pages): project p's,
// or, when p is empty, every project's with the operator-only GET
// /v1/support-requests; state ("open", …) selects, "" all.
func (c *Client) ListSupportRequests(ctx context.Context, p, state string, opts ...CallOption) ([]apitype.SupportRequest, error) {
	if p != "" {
		rs, err := listAll[apitype.SupportRequest](ctx, c, proj(p)+"/support-requests", nil, opts)
		if err != nil || state == "" {
			return rs, err
		}
		out := rs[:0]
		for _, r := range rs {
			if r.State == state {
				out = append(out, r)
			}
		}
		return out, nil
	}
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	return listAll[apitype.SupportRequest](ctx, c, "/v1/support-requests", q, opts)
}

// GetSupportRequest returns support request id of project p.
func (c *Client) GetSupportRequest(ctx context.Context, p, id string, opts ...CallOption) (apitype.SupportRequest, error) {
	return get[apitype.SupportRequest](ctx, c, projObj(p, "support-requests", id), opts)
}

// ApproveSupportRequest approves support request id (operator), raising
// the project's quota; reply is optional.
func (c *Client) ApproveSupportRequest(ctx context.Context, id, reply string, opts ...CallOption) (apitype.SupportRequest, error) {
	return send[apitype.SupportRequest](ctx, c, http.MethodPost, "/v1/support-requests/"+url.PathEscape(id)+"/approve", apitype.SupportDecision{Reply: reply}, opts)
}

// DeclineSupportRequest declines support request id (operator) with reply.
func (c *Client) DeclineSupportRequest(ctx context.Context, id, reply string, opts ...CallOption) (apitype.SupportRequest, error) {
	return send[apitype.SupportRequest](ctx, c, http.MethodPost, "/v1/support-requests/"+url.PathEscape(id)+"/decline", apitype.SupportDecision{Reply: reply}, opts)
}
