package terraform

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/apitype"
)

// regionsDataSource is moat_regions: the regions the platform supports.
type regionsDataSource struct {
	dsConfigured
}

var regionType = types.ObjectType{AttrTypes: map[string]attr.Type{"code": types.StringType, "azs": types.ListType{ElemType: types.StringType}}}

func (d *regionsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_regions"
}

func (d *regionsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The regions the platform supports, with their availability zones.",
		Attributes: map[string]schema.Attribute{
			"codes": schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: "Region codes, in the platform's order."},
			"regions": schema.ListNestedAttribute{Computed: true, Description: "Each region and its zones.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"code": schema.StringAttribute{Computed: true},
					"azs":  schema.ListAttribute{Computed: true, ElementType: types.StringType},
				}}},
		},
	}
}

func (d *regionsDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	rs, err := d.api.c.ListRegions(ctx)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot list regions", err)
		return
	}
	codes := make([]string, len(rs))
	objs := make([]attr.Value, len(rs))
	for i, r := range rs {
		codes[i] = r.Code
		azs, diags := types.ListValueFrom(ctx, types.StringType, r.AZs)
		resp.Diagnostics.Append(diags...)
		objs[i] = types.ObjectValueMust(regionType.AttrTypes, map[string]attr.Value{"code": types.StringValue(r.Code), "azs": azs})
	}
	cl, diags := types.ListValueFrom(ctx, types.StringType, codes)
	resp.Diagnostics.Append(diags...)
	rl, diags := types.ListValue(regionType, objs)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("codes"), cl)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("regions"), rl)...)
}

// byIDOrName is the id/name pair a lookup data source is configured with:
// exactly one of them.
func byIDOrName() (map[string]schema.Attribute, []datasource.ConfigValidator) {
	return map[string]schema.Attribute{
			"id":   schema.StringAttribute{Optional: true, Computed: true, Description: "The ID (give id or name)."},
			"name": schema.StringAttribute{Optional: true, Computed: true, Description: "The name (give id or name)."},
		}, []datasource.ConfigValidator{
			datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("name")),
		}
}

// lookup finds the object with id, or the live one named name.
func lookup[T any](ctx context.Context, id, name string, get func(context.Context, string) (T, error),
	list func(context.Context) ([]T, error), key func(T) (string, string), diags *diag.Diagnostics, kind string) (T, bool) {
	var zero T
	if id != "" {
		v, err := get(ctx, id)
		if err != nil {
			addError(diags, path.Root("id"), "Cannot read the "+kind, err)
			return zero, false
		}
		return v, true
	}
	vs, err := list(ctx)
	if err != nil {
		addError(diags, path.Empty(), "Cannot list "+kind+"s", err)
		return zero, false
	}
	for _, v := range vs {
		if n, state := key(v); n == name && state != "deleted" {
			return v, true
		}
	}
	diags.AddAttributeError(path.Root("name"), "No such "+kind, "the project has no "+kind+" named "+name)
	return zero, false
}

// vpcDataSource is moat_vpc: one VPC by ID or name.
type vpcDataSource struct {
	dsConfigured
}

type vpcDataModel struct {
	ID         types.String `tfsdk:"id"`
	Name       types.String `tfsdk:"name"`
	Region     types.String `tfsdk:"region"`
	CIDR       types.String `tfsdk:"cidr"`
	CloudVPCID types.String `tfsdk:"cloud_vpc_id"`
	Lifecycle  types.String `tfsdk:"state"`
}

func (d *vpcDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_vpc"
}

func (d *vpcDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs, _ := byIDOrName()
	for _, a := range []string{"region", "cidr", "cloud_vpc_id", "state"} {
		attrs[a] = schema.StringAttribute{Computed: true}
	}
	resp.Schema = schema.Schema{Description: "A VPC of the project, by ID or name.", Attributes: attrs}
}

func (d *vpcDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	_, v := byIDOrName()
	return v
}

func (d *vpcDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m vpcDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := d.api.project
	v, ok := lookup(ctx, m.ID.ValueString(), m.Name.ValueString(),
		func(ctx context.Context, id string) (apitype.VPC, error) { return d.api.c.GetVPC(ctx, p, id) },
		func(ctx context.Context) ([]apitype.VPC, error) { return d.api.c.ListVPCs(ctx, p) },
		func(v apitype.VPC) (string, string) { return v.Name, v.State }, &resp.Diagnostics, "VPC")
	if !ok {
		return
	}
	m = vpcDataModel{ID: types.StringValue(v.ID), Name: types.StringValue(v.Name), Region: types.StringValue(v.Region),
		CIDR: types.StringValue(v.CIDR), CloudVPCID: types.StringValue(v.CloudVPCID), Lifecycle: types.StringValue(v.State)}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// serviceDataSource is moat_service: one service by ID or name.
type serviceDataSource struct {
	dsConfigured
}

type serviceDataModel struct {
	ID         types.String `tfsdk:"id"`
	Name       types.String `tfsdk:"name"`
	Region     types.String `tfsdk:"region"`
	Nodes      types.Int64  `tfsdk:"nodes"`
	VPCID      types.String `tfsdk:"vpc_id"`
	AllowedIPs types.Set    `tfsdk:"allowed_ips"`
	Host       types.String `tfsdk:"host"`
	Address    types.String `tfsdk:"address"`
	Port       types.Int64  `tfsdk:"port"`
	Database   types.String `tfsdk:"database"`
	User       types.String `tfsdk:"user"`
	Lifecycle  types.String `tfsdk:"state"`
}

func (d *serviceDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_service"
}

func (d *serviceDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs, _ := byIDOrName()
	for _, a := range []string{"region", "vpc_id", "host", "address", "database", "user", "state"} {
		attrs[a] = schema.StringAttribute{Computed: true}
	}
	attrs["nodes"] = schema.Int64Attribute{Computed: true}
	attrs["port"] = schema.Int64Attribute{Computed: true}
	attrs["allowed_ips"] = schema.SetNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
		"cidr": schema.StringAttribute{Computed: true}, "description": schema.StringAttribute{Computed: true}}}}
	resp.Schema = schema.Schema{Description: "A service of the project, by ID or name: how to connect to it.", Attributes: attrs}
}

func (d *serviceDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	_, v := byIDOrName()
	return v
}

func (d *serviceDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var c serviceDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &c)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := d.api.project
	s, ok := lookup(ctx, c.ID.ValueString(), c.Name.ValueString(),
		func(ctx context.Context, id string) (apitype.Service, error) { return d.api.c.GetService(ctx, p, id) },
		func(ctx context.Context) ([]apitype.Service, error) { return d.api.c.ListServices(ctx, p) },
		func(s apitype.Service) (string, string) { return s.Name, s.State }, &resp.Diagnostics, "service")
	if !ok {
		return
	}
	var m serviceModel
	m.set(s, &resp.Diagnostics)
	out := serviceDataModel{ID: m.ID, Name: m.Name, Region: m.Region, Nodes: m.Nodes, VPCID: m.VPCID, AllowedIPs: m.AllowedIPs,
		Host: m.Host, Address: m.Address, Port: m.Port, Database: m.Database, User: m.User, Lifecycle: m.Lifecycle}
	resp.Diagnostics.Append(resp.State.Set(ctx, &out)...)
}

// caDataSource is moat_project_ca: the CA clients verify services with.
type caDataSource struct {
	dsConfigured
}

func (d *caDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project_ca"
}

func (d *caDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The project CA certificate: sslrootcert for sslmode=verify-full.",
		Attributes: map[string]schema.Attribute{
			"project_id": schema.StringAttribute{Computed: true},
			"pem":        schema.StringAttribute{Computed: true, Description: "The CA certificate (PEM)."},
		},
	}
}

func (d *caDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	ca, err := d.api.c.GetProjectCA(ctx, d.api.project)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot read the project CA", err)
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), ca.ProjectID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("pem"), ca.PEM)...)
}
