package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/moatdb/moat/internal/apitype"
)

// The methods below follow the server's route table, in its order.

func proj(p string) string { return "/v1/projects/" + url.PathEscape(p) }

func projObj(p, kind, id string) string { return proj(p) + "/" + kind + "/" + url.PathEscape(id) }

func get[T any](ctx context.Context, c *Client, path string, opts []CallOption) (T, error) {
	var out T
	_, err := c.do(ctx, request{method: http.MethodGet, path: path, out: &out, opts: collect(opts)})
	return out, err
}

func send[T any](ctx context.Context, c *Client, method, path string, in any, opts []CallOption) (T, error) {
	var out T
	_, err := c.do(ctx, request{method: method, path: path, in: in, out: &out, opts: collect(opts)})
	return out, err
}

func create[T any](ctx context.Context, c *Client, path string, in any, opts []CallOption) (T, error) {
	var out T
	_, err := c.do(ctx, request{method: http.MethodPost, path: path, in: in, out: &out, create: true, opts: collect(opts)})
	return out, err
}

// Health returns the server's liveness answer (GET /v1/health).
func (c *Client) Health(ctx context.Context, opts ...CallOption) (apitype.Health, error) {
	return get[apitype.Health](ctx, c, "/v1/health", opts)
}

// OpenAPI returns the server's OpenAPI 3 document as raw JSON.
func (c *Client) OpenAPI(ctx context.Context, opts ...CallOption) ([]byte, error) {
	var raw []byte
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/openapi.json", out: &raw, opts: collect(opts)})
	return raw, err
}

// ListRegions lists the supported regions.
func (c *Client) ListRegions(ctx context.Context, opts ...CallOption) ([]apitype.Region, error) {
	return listAll[apitype.Region](ctx, c, "/v1/regions", nil, opts)
}

// CreateProject creates a project (operator).
func (c *Client) CreateProject(ctx context.Context, in apitype.ProjectCreate, opts ...CallOption) (apitype.Project, error) {
	return create[apitype.Project](ctx, c, "/v1/projects", in, opts)
}

// ListProjects lists the projects the token may see (all pages).
func (c *Client) ListProjects(ctx context.Context, opts ...CallOption) ([]apitype.Project, error) {
	return listAll[apitype.Project](ctx, c, "/v1/projects", nil, opts)
}

// GetProject returns project p.
func (c *Client) GetProject(ctx context.Context, p string, opts ...CallOption) (apitype.Project, error) {
	return get[apitype.Project](ctx, c, proj(p), opts)
}

// SetQuota sets project p's quotas (operator).
func (c *Client) SetQuota(ctx context.Context, p string, in apitype.QuotaUpdate, opts ...CallOption) (apitype.Project, error) {
	return send[apitype.Project](ctx, c, http.MethodPut, proj(p)+"/quota", in, opts)
}

// CreateToken creates an API token of project p; the result's Secret is
// the bearer string, shown only here.
func (c *Client) CreateToken(ctx context.Context, p string, in apitype.TokenCreate, opts ...CallOption) (apitype.Token, error) {
	return create[apitype.Token](ctx, c, proj(p)+"/tokens", in, opts)
}

// ListTokens lists project p's tokens (all pages).
func (c *Client) ListTokens(ctx context.Context, p string, opts ...CallOption) ([]apitype.Token, error) {
	return listAll[apitype.Token](ctx, c, proj(p)+"/tokens", nil, opts)
}

// DeleteToken revokes token id of project p.
func (c *Client) DeleteToken(ctx context.Context, p, id string, opts ...CallOption) (apitype.Token, error) {
	return send[apitype.Token](ctx, c, http.MethodDelete, projObj(p, "tokens", id), nil, opts)
}

// CreateVPC creates a VPC in project p.
func (c *Client) CreateVPC(ctx context.Context, p string, in apitype.VPCCreate, opts ...CallOption) (apitype.VPC, error) {
	return create[apitype.VPC](ctx, c, proj(p)+"/vpcs", in, opts)
}

// ListVPCs lists project p's VPCs (all pages).
func (c *Client) ListVPCs(ctx context.Context, p string, opts ...CallOption) ([]apitype.VPC, error) {
	return listAll[apitype.VPC](ctx, c, proj(p)+"/vpcs", nil, opts)
}

// GetVPC returns VPC id of project p.
func (c *Client) GetVPC(ctx context.Context, p, id string, opts ...CallOption) (apitype.VPC, error) {
	return get[apitype.VPC](ctx, c, projObj(p, "vpcs", id), opts)
}

// DeleteVPC starts deleting VPC id of project p (202).
func (c *Client) DeleteVPC(ctx context.Context, p, id string, opts ...CallOption) (apitype.VPC, error) {
	return send[apitype.VPC](ctx, c, http.MethodDelete, projObj(p, "vpcs", id), nil, opts)
}

// CreatePeering creates a peering connection in project p.
func (c *Client) CreatePeering(ctx context.Context, p string, in apitype.PeeringCreate, opts ...CallOption) (apitype.Peering, error) {
	return create[apitype.Peering](ctx, c, proj(p)+"/peerings", in, opts)
}

// ListPeerings lists project p's peering connections (all pages), only
// those of VPC vpcID when it is not empty.
func (c *Client) ListPeerings(ctx context.Context, p, vpcID string, opts ...CallOption) ([]apitype.Peering, error) {
	q := url.Values{}
	if vpcID != "" {
		q.Set("vpc_id", vpcID)
	}
	return listAll[apitype.Peering](ctx, c, proj(p)+"/peerings", q, opts)
}

// GetPeering returns peering connection id of project p.
func (c *Client) GetPeering(ctx context.Context, p, id string, opts ...CallOption) (apitype.Peering, error) {
	return get[apitype.Peering](ctx, c, projObj(p, "peerings", id), opts)
}

// DeletePeering starts deleting peering connection id of project p (202).
func (c *Client) DeletePeering(ctx context.Context, p, id string, opts ...CallOption) (apitype.Peering, error) {
	return send[apitype.Peering](ctx, c, http.MethodDelete, projObj(p, "peerings", id), nil, opts)
}

// CreateService creates a service in project p.
func (c *Client) CreateService(ctx context.Context, p string, in apitype.ServiceCreate, opts ...CallOption) (apitype.Service, error) {
	return create[apitype.Service](ctx, c, proj(p)+"/services", in, opts)
}

// ListServices lists project p's services (all pages).
func (c *Client) ListServices(ctx context.Context, p string, opts ...CallOption) ([]apitype.Service, error) {
	return listAll[apitype.Service](ctx, c, proj(p)+"/services", nil, opts)
}

// GetService returns service id of project p.
func (c *Client) GetService(ctx context.Context, p, id string, opts ...CallOption) (apitype.Service, error) {
	return get[apitype.Service](ctx, c, projObj(p, "services", id), opts)
}

// DeleteService starts deleting service id of project p (202).
func (c *Client) DeleteService(ctx context.Context, p, id string, opts ...CallOption) (apitype.Service, error) {
	return send[apitype.Service](ctx, c, http.MethodDelete, projObj(p, "services", id), nil, opts)
}

// GetAllowlist returns service svc's allowlist and its ETag.
func (c *Client) GetAllowlist(ctx context.Context, p, svc string, opts ...CallOption) (apitype.Allowlist, string, error) {
	var out apitype.Allowlist
	h, err := c.do(ctx, request{method: http.MethodGet, path: projObj(p, "services", svc) + "/allowlist", out: &out, opts: collect(opts)})
	return out, etagOf(h), err
}

// PutAllowlist replaces service svc's allowlist and returns it with its new
// ETag. With ifMatch (an ETag from GetAllowlist) a concurrent change makes
// it fail with code stale_revision (412) instead of being overwritten.
func (c *Client) PutAllowlist(ctx context.Context, p, svc string, in apitype.AllowlistUpdate, ifMatch string, opts ...CallOption) (apitype.Allowlist, string, error) {
	var out apitype.Allowlist
	o := collect(opts)
	if ifMatch != "" {
		o.ifMatch = ifMatch
	}
	h, err := c.do(ctx, request{method: http.MethodPut, path: projObj(p, "services", svc) + "/allowlist", in: in, out: &out, opts: o})
	return out, etagOf(h), err
}

// ListBackups lists service svc's base backups, oldest first.
func (c *Client) ListBackups(ctx context.Context, p, svc string, opts ...CallOption) ([]apitype.Backup, error) {
	return listAll[apitype.Backup](ctx, c, projObj(p, "services", svc)+"/backups", nil, opts)
}

// FailoverService asks for a failover of service svc; the result is the
// service.failover operation.
func (c *Client) FailoverService(ctx context.Context, p, svc string, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/failover", nil, opts)
}

// UpdateService resizes service svc to in.Nodes nodes by rolling
// forward (with in.Settings, if any, changed in the same request); the
// result is the service.resize operation. UpdateServiceSettings changes
// the settings alone.
func (c *Client) UpdateService(ctx context.Context, p, svc string, in apitype.ServiceUpdate, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPatch, projObj(p, "services", svc), in, opts)
}

// UpdateServiceSettings changes service svc's PostgreSQL settings (a
// value sets one, nil removes it); the result is the service, with the
// settings pending a restart (applied by UpgradeService).
func (c *Client) UpdateServiceSettings(ctx context.Context, p, svc string, settings map[string]*apitype.SettingValue, opts ...CallOption) (apitype.Service, error) {
	return send[apitype.Service](ctx, c, http.MethodPatch, projObj(p, "services", svc), apitype.ServiceUpdate{Settings: settings}, opts)
}

// UpgradeService moves service svc to fresh nodes (a switchover to one of
// them, the old ones wiped); the result is the service.upgrade operation.
func (c *Client) UpgradeService(ctx context.Context, p, svc string, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/upgrade", nil, opts)
}

// CreateBackup starts a base backup of service svc; the result is the
// asynchronous operation (the one already under way, if any).
func (c *Client) CreateBackup(ctx context.Context, p, svc string, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/backups", nil, opts)
}

// AttachService attaches service svc to a VPC, or moves it to another; the
// result is the asynchronous operation.
func (c *Client) AttachService(ctx context.Context, p, svc string, in apitype.AttachRequest, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/attach", in, opts)
}

// DetachService detaches service svc from its VPC; the result is the
// asynchronous operation.
func (c *Client) DetachService(ctx context.Context, p, svc string, opts ...CallOption) (apitype.Operation, error) {
	return send[apitype.Operation](ctx, c, http.MethodPost, projObj(p, "services", svc)+"/detach", nil, opts)
}

// ListOperations lists project p's operations (all pages), only those on
// targetID when it is not empty.
func (c *Client) ListOperations(ctx context.Context, p, targetID string, opts ...CallOption) ([]apitype.Operation, error) {
	q := url.Values{}
	if targetID != "" {
		q.Set("target_id", targetID)
	}
	return listAll[apitype.Operation](ctx, c, proj(p)+"/operations", q, opts)
}

// GetOperation returns operation id of project p.
func (c *Client) GetOperation(ctx context.Context, p, id string, opts ...CallOption) (apitype.Operation, error) {
	return get[apitype.Operation](ctx, c, projObj(p, "operations", id), opts)
}

// ListAudit lists audit entries (all pages): project p's with GET
// /v1/projects/{p}/audit, or, when p is empty, every project's with the
// operator-only GET /v1/audit.
func (c *Client) ListAudit(ctx context.Context, p string, opts ...CallOption) ([]apitype.AuditEntry, error) {
	if p == "" {
		return listAll[apitype.AuditEntry](ctx, c, "/v1/audit", nil, opts)
	}
	return listAll[apitype.AuditEntry](ctx, c, proj(p)+"/audit", nil, opts)
}

// VerifyAudit verifies the audit hash chain and checkpoints (operator). An
// intact log answers OK; a broken one answers !OK naming the first bad
// entry, with a nil error.
func (c *Client) VerifyAudit(ctx context.Context, opts ...CallOption) (apitype.AuditVerify, error) {
	return get[apitype.AuditVerify](ctx, c, "/v1/audit/verify", opts)
}

// CreateConsoleLink mints a one-time console sign-in link for the
// client's own operator token (operator).
func (c *Client) CreateConsoleLink(ctx context.Context, opts ...CallOption) (apitype.ConsoleLink, error) {
	return send[apitype.ConsoleLink](ctx, c, http.MethodPost, "/v1/console/links", nil, opts)
}

func etagOf(h http.Header) string {
	if h == nil {
		return ""
	}
	return h.Get("ETag")
}
