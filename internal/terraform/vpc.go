package terraform

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// vpcResource is moat_vpc. The API cannot rename or renumber a VPC, so
// every argument forces a replacement.
type vpcResource struct {
	configured
}

type vpcModel struct {
	ID         types.String   `tfsdk:"id"`
	Name       types.String   `tfsdk:"name"`
	Region     types.String   `tfsdk:"region"`
	CIDR       types.String   `tfsdk:"cidr"`
	CloudVPCID types.String   `tfsdk:"cloud_vpc_id"`
	Lifecycle  types.String   `tfsdk:"state"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

const defaultTimeout = 10 * time.Minute

func (r *vpcResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_vpc"
}

func (r *vpcResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A provider-side private network services attach to and customer VPCs peer with.",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute("VPC ID (vpc-…)."),
			"name": schema.StringAttribute{Required: true, PlanModifiers: replace, Validators: []validator.String{nameValidator()},
				Description: "Name, unique in the project (the API cannot rename a VPC: a change replaces it)."},
			"region": schema.StringAttribute{Required: true, PlanModifiers: replace, Description: "Region code, e.g. us-east-1."},
			"cidr": schema.StringAttribute{Required: true, PlanModifiers: replace,
				Validators:  []validator.String{domainString{"a VPC CIDR", func(s string) error { _, err := domain.ParseVPCCIDR(s); return err }}},
				Description: "IPv4 RFC 1918 range, /16 to /24, canonical (e.g. 10.20.0.0/16)."},
			"cloud_vpc_id": computedString("The VPC's ID in the cloud."),
			"state":        computedString("creating, active, deleting or failed."),
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (r *vpcResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || !req.State.Raw.IsNull() {
		return // destroy, or an update (the region cannot change in place)
	}
	var plan vpcModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	checkRegion(ctx, r.api, plan.Region, &resp.Diagnostics)
}

func (m *vpcModel) set(v apitype.VPC) {
	m.ID = types.StringValue(v.ID)
	m.Name = types.StringValue(v.Name)
	m.Region = types.StringValue(v.Region)
	m.CIDR = types.StringValue(v.CIDR)
	m.CloudVPCID = types.StringValue(v.CloudVPCID)
	m.Lifecycle = types.StringValue(v.State)
}

func (r *vpcResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m vpcModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d, diags := m.Timeouts.Create(ctx, defaultTimeout)
	resp.Diagnostics.Append(diags...)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := r.api.c.CreateVPC(ctx, r.api.project, apitype.VPCCreate{Name: m.Name.ValueString(), Region: m.Region.ValueString(), CIDR: m.CIDR.ValueString()})
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot create the VPC", err)
		return
	}
	m.set(v)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...) // saved at once: a failed wait taints it, never orphans it
	got, err := r.waitVPC(ctx, v.ID)
	if got.ID != "" { // a wait that read nothing keeps the create's VPC
		v = got
	}
	m.set(v)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "The VPC did not become active", err)
	}
}

func (r *vpcResource) waitVPC(ctx context.Context, id string) (apitype.VPC, error) {
	return waitFor(ctx, "VPC "+id+" to be active", func(ctx context.Context) (apitype.VPC, error) {
		return r.api.c.GetVPC(ctx, r.api.project, id)
	}, func(v apitype.VPC) (bool, error) {
		switch v.State {
		case domain.StateActive:
			return true, nil
		case domain.StateFailed, domain.StateDeleting, domain.StateDeleted:
			return true, stateError("VPC", v.ID, v.State, v.StateInfo)
		}
		return false, nil
	})
}

func (r *vpcResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m vpcModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	v, err := r.api.c.GetVPC(ctx, r.api.project, m.ID.ValueString())
	if gone(v.State, err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot read the VPC", err)
		return
	}
	m.set(v)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *vpcResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	// Only the timeouts block can change in place.
	var m vpcModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *vpcResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m vpcModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := m.ID.ValueString()
	deleteAndWait(ctx, &resp.Diagnostics, m.Timeouts, "the VPC", id,
		func(ctx context.Context) error { _, err := r.api.c.DeleteVPC(ctx, r.api.project, id); return err },
		func(ctx context.Context) (string, error) {
			o, err := r.api.c.GetVPC(ctx, r.api.project, id)
			return o.State, err
		})
}

func (r *vpcResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
