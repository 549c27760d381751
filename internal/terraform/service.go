package terraform

import (
	"context"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// serviceResource is moat_service. Changing vpc_id attaches, moves or
// detaches the running service in place; allowed_ips is replaced in place
// and the update returns once every node enforces it.
type serviceResource struct {
	configured
}

type serviceModel struct {
	ID                   types.String   `tfsdk:"id"`
	Name                 types.String   `tfsdk:"name"`
	Region               types.String   `tfsdk:"region"`
	Nodes                types.Int64    `tfsdk:"nodes"`
	VPCID                types.String   `tfsdk:"vpc_id"`
	AllowedIPs           types.Set      `tfsdk:"allowed_ips"`
	Host                 types.String   `tfsdk:"host"`
	Address              types.String   `tfsdk:"address"`
	Port                 types.Int64    `tfsdk:"port"`
	Database             types.String   `tfsdk:"database"`
	User                 types.String   `tfsdk:"user"`
	Lifecycle            types.String   `tfsdk:"state"`
	AdminPassword        types.String   `tfsdk:"admin_password"`
	AdminPasswordVersion types.Int64    `tfsdk:"admin_password_version"`
	Timeouts             timeouts.Value `tfsdk:"timeouts"`
}

type allowModel struct {
	CIDR        types.String `tfsdk:"cidr"`
	Description types.String `tfsdk:"description"`
}

var allowType = types.ObjectType{AttrTypes: map[string]attr.Type{"cidr": types.StringType, "description": types.StringType}}

func (r *serviceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_service"
}

func (r *serviceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A PostgreSQL service: its nodes, the VPC it is attached to and its allowlist.",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute("Service ID (svc-…)."),
			"name": schema.StringAttribute{Required: true, PlanModifiers: replace, Validators: []validator.String{nameValidator()},
				Description: "Name, unique in the project (the API cannot rename a service: a change replaces it)."},
			"region": schema.StringAttribute{Required: true, PlanModifiers: replace, Description: "Region code, e.g. us-east-1."},
			"nodes": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(1),
				PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:    []validator.Int64{nodeCount{}},
				Description:   "1, 2 or 3 nodes (one primary, the rest replicas). A change replaces the service."},
			"vpc_id": schema.StringAttribute{Optional: true,
				Description: "The Moat VPC the service is attached to; unset, it is on the internet. A change attaches, moves or detaches it in place."},
			"allowed_ips": schema.SetNestedAttribute{Optional: true, Computed: true,
				PlanModifiers: []planmodifier.Set{setplanmodifier.UseStateForUnknown()},
				Validators:    []validator.Set{allowlist{}},
				Description:   "Source ranges that may connect. Unset: the server's default (open to the internet); an empty set refuses everyone.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"cidr":        schema.StringAttribute{Required: true, Description: "Canonical CIDR, e.g. 203.0.113.0/24 or 198.51.100.7/32."},
					"description": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(""), Description: "What the range is."},
				}}},
			"host":     computedString("Host name clients connect to (sslmode=verify-full); it changes when the service attaches or detaches."),
			"address":  computedString("The primary's address (host resolves to it); changes when the service moves."),
			"port":     schema.Int64Attribute{Computed: true, PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}, Description: "PostgreSQL port."},
			"database": computedString("Database name."),
			"user":     computedString("Admin user name."),
			"state":    computedString("creating, running, migrating, failed or deleting."),
			"admin_password": schema.StringAttribute{Computed: true, Sensitive: true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
				Description:   "The admin user's password, known on create and after a reset (null after an import)."},
			"admin_password_version": schema.Int64Attribute{Optional: true,
				Description: "Change it to reset the admin password in place (the new one lands in admin_password)."},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

// nodeCount validates nodes with the domain's rule.
type nodeCount struct{}

func (nodeCount) Description(context.Context) string         { return "1 to 3 nodes" }
func (nodeCount) MarkdownDescription(context.Context) string { return "1 to 3 nodes" }

func (nodeCount) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := domain.ValidateNodeCount(int(req.ConfigValue.ValueInt64())); err != nil {
		addError(&resp.Diagnostics, req.Path, "Invalid nodes", err)
	}
}

func (r *serviceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan serviceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if req.State.Raw.IsNull() {
		checkRegion(ctx, r.api, plan.Region, &resp.Diagnostics)
		// The new service will be running when it is attached.
		r.checkAttach(ctx, &domain.Service{Meta: domain.Meta{State: domain.StateRunning}, Region: plan.Region.ValueString()}, plan.VPCID, &resp.Diagnostics)
		return
	}
	var prior serviceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if !plan.VPCID.Equal(prior.VPCID) {
		if r.api != nil && !plan.VPCID.IsNull() && !plan.VPCID.IsUnknown() {
			s, err := r.api.c.GetService(ctx, r.api.project, prior.ID.ValueString())
			if err != nil {
				addError(&resp.Diagnostics, path.Empty(), "Cannot read the service", err)
				return
			}
			r.checkAttach(ctx, &domain.Service{Meta: domain.Meta{ID: s.ID, State: s.State}, Region: s.Region, VPCID: s.VPCID, OperationID: s.OperationID}, plan.VPCID, &resp.Diagnostics)
		}
		// The host name and address follow the network the service is on.
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("address"), types.StringUnknown())...)
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("host"), types.StringUnknown())...)
	}
	if !plan.AdminPasswordVersion.Equal(prior.AdminPasswordVersion) && !plan.AdminPasswordVersion.IsNull() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("admin_password"), types.StringUnknown())...)
	}
}

// checkAttach checks at plan time, with the domain's rule, that svc can be
// attached to VPC vpcID (active, same region), when the VPC exists.
func (r *serviceResource) checkAttach(ctx context.Context, svc *domain.Service, vpcID types.String, diags *diag.Diagnostics) {
	if r.api == nil || vpcID.IsNull() || vpcID.IsUnknown() {
		return
	}
	v, err := r.api.c.GetVPC(ctx, r.api.project, vpcID.ValueString())
	if err != nil {
		addError(diags, path.Root("vpc_id"), "Cannot read the VPC", err)
		return
	}
	vpc := &domain.VPC{Meta: domain.Meta{ID: v.ID, State: v.State}, Region: v.Region, CIDR: v.CIDR}
	if err := domain.CheckAttach(svc, vpc); err != nil {
		addError(diags, path.Root("vpc_id"), "Cannot attach the service", err)
	}
}

// set copies what the API says into m; the password, its version and the
// timeouts are not the API's and stay.
func (m *serviceModel) set(s apitype.Service, diags *diag.Diagnostics) {
	m.ID = types.StringValue(s.ID)
	m.Name = types.StringValue(s.Name)
	m.Region = types.StringValue(s.Region)
	m.Nodes = types.Int64Value(int64(s.Nodes))
	m.VPCID = optString(s.VPCID)
	elems := make([]attr.Value, len(s.AllowedIPs))
	for i, e := range s.AllowedIPs {
		elems[i] = types.ObjectValueMust(allowType.AttrTypes, map[string]attr.Value{
			"cidr": types.StringValue(e.CIDR), "description": types.StringValue(e.Description)})
	}
	var d diag.Diagnostics
	m.AllowedIPs, d = types.SetValue(allowType, elems)
	diags.Append(d...)
	m.Lifecycle = types.StringValue(s.State)
	m.Host, m.Address, m.Database, m.User = types.StringNull(), types.StringNull(), types.StringNull(), types.StringNull()
	m.Port = types.Int64Null()
	if c := s.Connection; c != nil {
		m.Host, m.Address = types.StringValue(c.Host), optString(c.Address)
		m.Port = types.Int64Value(int64(c.Port))
		m.Database, m.User = types.StringValue(c.Database), types.StringValue(c.User)
	}
	if s.AdminPassword != "" {
		m.AdminPassword = types.StringValue(s.AdminPassword)
	}
}

// entries is the planned allowlist, or nil when it is not set.
func (m *serviceModel) entries(ctx context.Context, diags *diag.Diagnostics) []apitype.AllowEntry {
	if m.AllowedIPs.IsNull() || m.AllowedIPs.IsUnknown() {
		return nil
	}
	var in []allowModel
	diags.Append(m.AllowedIPs.ElementsAs(ctx, &in, false)...)
	out := make([]apitype.AllowEntry, len(in))
	for i, e := range in {
		out[i] = apitype.AllowEntry{CIDR: e.CIDR.ValueString(), Description: e.Description.ValueString()}
	}
	return out
}

func (r *serviceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m serviceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d, diags := m.Timeouts.Create(ctx, defaultTimeout)
	resp.Diagnostics.Append(diags...)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	in := apitype.ServiceCreate{Name: m.Name.ValueString(), Region: m.Region.ValueString(), Nodes: int(m.Nodes.ValueInt64()),
		AllowedIPs: m.entries(ctx, &resp.Diagnostics)}
	in.ConfirmEmpty = in.AllowedIPs != nil && len(in.AllowedIPs) == 0
	if resp.Diagnostics.HasError() {
		return
	}
	wantVPC := m.VPCID.ValueString()
	s, err := r.api.c.CreateService(ctx, r.api.project, in)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot create the service", err)
		return
	}
	// Saved at once: a failed wait taints the service, never orphans it.
	m.set(s, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	// A wait that read nothing returns no service (its deadline ended
	// the first read): the state keeps the create's, so destroy finds it.
	got, err := r.waitRunning(ctx, s.ID)
	if got.ID != "" {
		s = got
	}
	if err == nil && wantVPC != "" {
		if got, err = r.moveTo(ctx, s, wantVPC); got.ID != "" {
			s = got
		}
	}
	m.set(s, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "The service is not ready", err)
	}
}

// waitRunning waits until service id is running. A degraded service (a
// node failed: changes are not enforced everywhere) ends the wait with an
// error naming why, rather than waiting out the timeout.
func (r *serviceResource) waitRunning(ctx context.Context, id string) (apitype.Service, error) {
	return waitFor(ctx, "service "+id+" to run", func(ctx context.Context) (apitype.Service, error) {
		return r.api.c.GetService(ctx, r.api.project, id)
	}, func(s apitype.Service) (bool, error) {
		switch s.State {
		case domain.StateRunning:
			return s.OperationID == "", nil
		case domain.StateFailed, domain.StateDegraded, domain.StateDeleting, domain.StateDeleted:
			return true, stateError("service", s.ID, s.State, s.StateInfo)
		}
		return false, nil
	})
}

// moveTo attaches service s to vpc (moving it from its VPC), or detaches
// it when vpc is "", and waits for the operation and the running service.
func (r *serviceResource) moveTo(ctx context.Context, s apitype.Service, vpc string) (apitype.Service, error) {
	var (
		op  apitype.Operation
		err error
	)
	if vpc == "" {
		op, err = r.api.c.DetachService(ctx, r.api.project, s.ID)
	} else {
		op, err = r.api.c.AttachService(ctx, r.api.project, s.ID, apitype.AttachRequest{VPCID: vpc})
	}
	if err != nil {
		return s, err
	}
	_, err = waitFor(ctx, op.Type+" "+op.ID, func(ctx context.Context) (apitype.Operation, error) {
		return r.api.c.GetOperation(ctx, r.api.project, op.ID)
	}, func(o apitype.Operation) (bool, error) {
		switch o.State {
		case domain.StateSucceeded:
			return true, nil
		case domain.StateFailed:
			return true, stateError("operation "+o.Type, o.ID, o.State, o.Error)
		}
		return false, nil
	})
	if err != nil {
		return s, err
	}
	return r.waitRunning(ctx, s.ID)
}

func (r *serviceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m serviceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, err := r.api.c.GetService(ctx, r.api.project, m.ID.ValueString())
	if gone(s.State, err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot read the service", err)
		return
	}
	m.set(s, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *serviceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, prior serviceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d, diags := plan.Timeouts.Update(ctx, defaultTimeout)
	resp.Diagnostics.Append(diags...)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	id := prior.ID.ValueString()
	m := prior
	m.Timeouts, m.AdminPasswordVersion = plan.Timeouts, plan.AdminPasswordVersion
	fail := func(summary string, err error) {
		if s, gerr := r.api.c.GetService(ctx, r.api.project, id); gerr == nil {
			m.set(s, &resp.Diagnostics)
		}
		resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
		addError(&resp.Diagnostics, path.Empty(), summary, err)
	}

	if want := plan.entries(ctx, &resp.Diagnostics); want != nil && !plan.AllowedIPs.Equal(prior.AllowedIPs) {
		al, _, err := r.api.c.PutAllowlist(ctx, r.api.project, id, apitype.AllowlistUpdate{AllowedIPs: want, ConfirmEmpty: len(want) == 0}, "")
		if err != nil {
			fail("Cannot set the allowlist", err)
			return
		}
		_, err = waitFor(ctx, "allowlist revision "+strconv.FormatInt(al.Revision, 10)+" to be enforced", func(ctx context.Context) (apitype.Allowlist, error) {
			a, _, err := r.api.c.GetAllowlist(ctx, r.api.project, id)
			return a, err
		}, func(a apitype.Allowlist) (bool, error) { return a.AppliedRevision >= al.Revision, nil })
		if err != nil {
			fail("The allowlist is not enforced", err)
			return
		}
	}
	if vpc := plan.VPCID.ValueString(); vpc != prior.VPCID.ValueString() {
		s, err := r.api.c.GetService(ctx, r.api.project, id)
		if err == nil {
			_, err = r.moveTo(ctx, s, vpc)
		}
		if err != nil {
			fail("Cannot move the service", err)
			return
		}
	}
	if !plan.AdminPasswordVersion.Equal(prior.AdminPasswordVersion) && !plan.AdminPasswordVersion.IsNull() {
		pw, err := r.api.c.ResetPassword(ctx, r.api.project, id)
		if err != nil {
			fail("Cannot reset the admin password", err)
			return
		}
		m.AdminPassword = types.StringValue(pw.Password)
	}
	s, err := r.api.c.GetService(ctx, r.api.project, id)
	if err != nil {
		fail("Cannot read the service", err)
		return
	}
	m.set(s, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *serviceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m serviceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := m.ID.ValueString()
	deleteAndWait(ctx, &resp.Diagnostics, m.Timeouts, "the service", id,
		func(ctx context.Context) error { _, err := r.api.c.DeleteService(ctx, r.api.project, id); return err },
		func(ctx context.Context) (string, error) {
			o, err := r.api.c.GetService(ctx, r.api.project, id)
			return o.State, err
		})
}

func (r *serviceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
