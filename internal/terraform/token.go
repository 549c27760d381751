package terraform

import (
	"context"

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

// tokenResource is moat_project_token: an API token of the provider's
// project. The secret is known only to the apply that creates it.
type tokenResource struct {
	configured
}

type tokenModel struct {
	ID     types.String `tfsdk:"id"`
	Role   types.String `tfsdk:"role"`
	Name   types.String `tfsdk:"name"`
	Secret types.String `tfsdk:"secret"`
}

func (r *tokenResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project_token"
}

func (r *tokenResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "An API token of the project (a change replaces it: the old one is revoked).",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute("Token ID (tok-…)."),
			"role": schema.StringAttribute{Required: true, PlanModifiers: replace, Description: "admin, member or viewer.",
				Validators: []validator.String{domainString{"a project role", func(s string) error { _, err := domain.ParseRole(s); return err }}}},
			"name": schema.StringAttribute{Optional: true, PlanModifiers: replace, Description: "What the token is for.",
				Validators: []validator.String{nameValidator()}},
			"secret": schema.StringAttribute{Computed: true, Sensitive: true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
				Description:   "The bearer token moat_<id>_<secret> (null after an import)."},
		},
	}
}

func (m *tokenModel) set(t apitype.Token) {
	m.ID, m.Role, m.Name = types.StringValue(t.ID), types.StringValue(t.Role), optString(t.Name)
	if t.Secret != "" {
		m.Secret = types.StringValue(t.Secret)
	}
}

func (r *tokenResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m tokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.api.c.CreateToken(ctx, r.api.project, apitype.TokenCreate{Role: m.Role.ValueString(), Name: m.Name.ValueString()})
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot create the token", err)
		return
	}
	m.set(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// find returns token id, or ok false when it is revoked. The API has no
// GET of one token; the list holds the live ones.
func (r *tokenResource) find(ctx context.Context, id string) (apitype.Token, bool, error) {
	ts, err := r.api.c.ListTokens(ctx, r.api.project)
	for _, t := range ts {
		if t.ID == id {
			return t, true, nil
		}
	}
	return apitype.Token{}, false, err
}

func (r *tokenResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m tokenModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, ok, err := r.find(ctx, m.ID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot read the token", err)
		return
	}
	if !ok {
		resp.State.RemoveResource(ctx)
		return
	}
	m.set(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *tokenResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m tokenModel // every argument replaces; nothing changes in place
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *tokenResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m tokenModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := r.api.c.DeleteToken(ctx, r.api.project, m.ID.ValueString()); err != nil && !gone("", err) {
		addError(&resp.Diagnostics, path.Empty(), "Cannot revoke the token", err)
	}
}

func (r *tokenResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
