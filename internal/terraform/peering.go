package terraform

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// peeringResource is moat_peering_connection: a request to peer a Moat VPC
// with a customer VPC. Create returns once the request waits for the
// customer's acceptance; a rejected, expired or failed peering is an error
// at the next plan (replace it with terraform apply -replace).
type peeringResource struct {
	configured
}

type peeringModel struct {
	ID             types.String   `tfsdk:"id"`
	VPCID          types.String   `tfsdk:"vpc_id"`
	PeerAccountID  types.String   `tfsdk:"peer_account_id"`
	PeerVPCID      types.String   `tfsdk:"peer_vpc_id"`
	PeerRegion     types.String   `tfsdk:"peer_region"`
	PeerCIDRs      types.List     `tfsdk:"peer_cidrs"`
	CloudPeeringID types.String   `tfsdk:"cloud_peering_id"`
	Lifecycle      types.String   `tfsdk:"state"`
	StateInfo      types.String   `tfsdk:"state_info"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

func (r *peeringResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_peering_connection"
}

func (r *peeringResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	str := func(desc string, v validator.String) schema.StringAttribute {
		a := schema.StringAttribute{Required: true, PlanModifiers: replace, Description: desc}
		if v != nil {
			a.Validators = []validator.String{v}
		}
		return a
	}
	resp.Schema = schema.Schema{
		Description: "A peering connection from a Moat VPC to a VPC in the customer's cloud account. " +
			"The customer accepts it in their account and adds the route and the security-group rule there.",
		Attributes: map[string]schema.Attribute{
			"id":              idAttribute("Peering ID (pcx-…)."),
			"vpc_id":          str("The Moat VPC.", nil),
			"peer_account_id": str("The peer VPC owner's 12-digit account ID.", domainString{"an account ID", domain.ValidateAccountID}),
			"peer_vpc_id":     str("The peer VPC's ID (vpc-…).", domainString{"a VPC ID", domain.ValidatePeerVPCID}),
			"peer_region":     str("The peer VPC's region.", domainString{"a region code", domain.ValidatePeerRegion}),
			"peer_cidrs": schema.ListAttribute{Required: true, ElementType: types.StringType,
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
				Validators:    []validator.List{peerCIDRs{}},
				Description:   "The peer VPC's ranges that may reach the Moat VPC (IPv4, /16 to /28, canonical)."},
			"cloud_peering_id": computedString("The peering's ID in the cloud (pcx-…): the one to accept."),
			"state":            schema.StringAttribute{Computed: true, Description: "provisioning, pending-acceptance, active, rejected, expired, failed or deleting."},
			"state_info":       schema.StringAttribute{Computed: true, Description: "Why the peering is in its state, when there is a reason."},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (m *peeringModel) set(ctx context.Context, p apitype.Peering) {
	m.ID = types.StringValue(p.ID)
	m.VPCID = types.StringValue(p.VPCID)
	m.PeerAccountID = types.StringValue(p.PeerAccountID)
	m.PeerVPCID = types.StringValue(p.PeerVPCID)
	m.PeerRegion = types.StringValue(p.PeerRegion)
	m.PeerCIDRs, _ = types.ListValueFrom(ctx, types.StringType, p.PeerCIDRs)
	m.CloudPeeringID = types.StringValue(p.CloudPeeringID)
	m.Lifecycle = types.StringValue(p.State)
	m.StateInfo = types.StringNull()
	if p.StateInfo != nil {
		m.StateInfo = types.StringValue(fmt.Sprintf("%s (%s)", p.StateInfo.Message, p.StateInfo.Code))
	}
}

// dead reports whether a peering in state s can never become active.
func dead(s string) bool {
	return s == domain.StateRejected || s == domain.StateExpired || s == domain.StateFailed
}

func (r *peeringResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.api == nil {
		return // destroy
	}
	var plan peeringModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !req.State.Raw.IsNull() {
		var prior peeringModel
		resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
		if s := prior.Lifecycle.ValueString(); dead(s) {
			resp.Diagnostics.AddError("Peering connection "+s,
				fmt.Sprintf("peering %s (%s) is %s: %s.\n\nHint: it cannot become active; request a new one with terraform apply -replace=<this resource's address>, or remove it.",
					prior.ID.ValueString(), prior.CloudPeeringID.ValueString(), s, prior.StateInfo.ValueString()))
		}
		return
	}
	r.checkNew(ctx, plan, resp)
}

// checkNew validates a new peering against its VPC and the VPC's other
// peerings with the domain's rules (overlaps, duplicates), when the VPC
// already exists.
func (r *peeringResource) checkNew(ctx context.Context, plan peeringModel, resp *resource.ModifyPlanResponse) {
	if plan.VPCID.IsUnknown() || plan.PeerCIDRs.IsUnknown() {
		return
	}
	var cidrs []string
	if d := plan.PeerCIDRs.ElementsAs(ctx, &cidrs, false); d.HasError() {
		return
	}
	v, err := r.api.c.GetVPC(ctx, r.api.project, plan.VPCID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, path.Root("vpc_id"), "Cannot read the VPC", err)
		return
	}
	ps, err := r.api.c.ListPeerings(ctx, r.api.project, v.ID)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot list the VPC's peerings", err)
		return
	}
	others := make([]*domain.Peering, len(ps))
	for i, p := range ps {
		others[i] = &domain.Peering{Meta: domain.Meta{ID: p.ID, State: p.State}, VPCID: p.VPCID,
			PeerAccountID: p.PeerAccountID, PeerVPCID: p.PeerVPCID, PeerRegion: p.PeerRegion, PeerCIDRs: p.PeerCIDRs}
	}
	vpc := &domain.VPC{Meta: domain.Meta{ID: v.ID, ProjectID: v.ProjectID, State: v.State}, Region: v.Region, CIDR: v.CIDR}
	_, err = domain.NewPeering(vpc, domain.PeeringRequest{PeerAccountID: plan.PeerAccountID.ValueString(),
		PeerVPCID: plan.PeerVPCID.ValueString(), PeerRegion: plan.PeerRegion.ValueString(), PeerCIDRs: cidrs}, others, 0)
	if err != nil {
		p := path.Empty()
		if de := domain.AsError(err); de != nil && de.Field != "" {
			p = path.Root(strings.SplitN(de.Field, "[", 2)[0])
		}
		addError(&resp.Diagnostics, p, "Invalid peering connection", err)
	}
}

func (r *peeringResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m peeringModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d, diags := m.Timeouts.Create(ctx, defaultTimeout)
	resp.Diagnostics.Append(diags...)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	in := apitype.PeeringCreate{VPCID: m.VPCID.ValueString(), PeerAccountID: m.PeerAccountID.ValueString(),
		PeerVPCID: m.PeerVPCID.ValueString(), PeerRegion: m.PeerRegion.ValueString()}
	resp.Diagnostics.Append(m.PeerCIDRs.ElementsAs(ctx, &in.PeerCIDRs, false)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := r.api.c.CreatePeering(ctx, r.api.project, in)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot create the peering connection", err)
		return
	}
	tm := m.Timeouts
	m.set(ctx, p)
	m.Timeouts = tm
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	got, err := waitFor(ctx, "peering "+p.ID+" to be requested", func(ctx context.Context) (apitype.Peering, error) {
		return r.api.c.GetPeering(ctx, r.api.project, p.ID)
	}, func(p apitype.Peering) (bool, error) {
		switch {
		case p.State == domain.StatePendingAcceptance || p.State == domain.StateActive:
			return true, nil
		case dead(p.State) || p.State == domain.StateDeleting || p.State == domain.StateDeleted:
			return true, stateError("peering", p.ID, p.State, p.StateInfo)
		}
		return false, nil
	})
	if got.ID != "" { // a wait that read nothing keeps the create's peering
		p = got
	}
	m.set(ctx, p)
	m.Timeouts = tm
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "The peering connection was not requested", err)
		return
	}
	if p.State == domain.StatePendingAcceptance {
		dest := "the Moat VPC's range"
		if v, err := r.api.c.GetVPC(ctx, r.api.project, p.VPCID); err == nil {
			dest = v.CIDR
		}
		resp.Diagnostics.AddWarning("Accept the peering connection",
			fmt.Sprintf("Peering %s waits for acceptance until %s. In account %s: accept %s (to your VPC %s), add a route to %s through %s "+
				"in that VPC's route table, and allow egress to %s on TCP 5432 in the security group of your clients. "+
				"The peering turns active once accepted (the next refresh shows it).",
				p.ID, p.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"), p.PeerAccountID, p.CloudPeeringID, p.PeerVPCID, dest, p.CloudPeeringID, dest))
	}
}

func (r *peeringResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m peeringModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := r.api.c.GetPeering(ctx, r.api.project, m.ID.ValueString())
	if gone(p.State, err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, path.Empty(), "Cannot read the peering connection", err)
		return
	}
	tm := m.Timeouts
	m.set(ctx, p)
	m.Timeouts = tm
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *peeringResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	// Only the timeouts block can change in place; the rest is as read.
	var m, prior peeringModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	prior.Timeouts = m.Timeouts
	resp.Diagnostics.Append(resp.State.Set(ctx, &prior)...)
}

func (r *peeringResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m peeringModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := m.ID.ValueString()
	deleteAndWait(ctx, &resp.Diagnostics, m.Timeouts, "the peering connection", id,
		func(ctx context.Context) error { _, err := r.api.c.DeletePeering(ctx, r.api.project, id); return err },
		func(ctx context.Context) (string, error) {
			o, err := r.api.c.GetPeering(ctx, r.api.project, id)
			return o.State, err
		})
}

func (r *peeringResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
