package terraform

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/moatdb/moat/internal/apitype"
)

// shortTimeouts is a timeouts block with the attributes ops (those of
// the resource's block: create, update, delete), each set to d.
func shortTimeouts(d string, ops ...string) timeouts.Value {
	attrTypes := map[string]attr.Type{}
	vals := map[string]attr.Value{}
	for _, op := range ops {
		attrTypes[op] = types.StringType
		vals[op] = types.StringValue(d)
	}
	return timeouts.Value{Object: types.ObjectValueMust(attrTypes, vals)}
}

// checkTimedOut fails t unless diags is one error of summary saying the
// wait ended at its deadline, and the call took well under the default
// timeout.
func checkTimedOut(t *testing.T, diags diag.Diagnostics, summary string, took time.Duration) {
	t.Helper()
	errs := diags.Errors()
	if len(errs) != 1 || errs[0].Summary() != summary ||
		!strings.Contains(errs[0].Detail(), "context deadline exceeded") || !strings.Contains(errs[0].Detail(), "raise the timeouts") {
		t.Fatalf("diagnostics = %v, want one error %q: deadline exceeded, raise the timeouts", diags, summary)
	}
	if took > 10*time.Second {
		t.Errorf("the call took %v: the timeouts block's 200ms was not honoured", took)
	}
}

// TestUpdateAndDeleteTimeouts calls the resources' Update and Delete
// directly against a control plane without a provider (nothing is ever
// enforced or removed there) and checks each waits only as long as its
// timeouts block says, then names the deadline.
func TestUpdateAndDeleteTimeouts(t *testing.T) {
	tn := controlPlane(t).newTenant(t, "tf-timeouts")
	ctx := testCtx(t)
	a := &api{c: tn.c, project: tn.project}

	t.Run("service update", func(t *testing.T) {
		s, err := tn.c.CreateService(ctx, tn.project, apitype.ServiceCreate{Name: "slow-update", Region: "us-east-1"})
		if err != nil {
			t.Fatal(err)
		}
		r := &serviceResource{configured{api: a}}
		var sch fwresource.SchemaResponse
		r.Schema(ctx, fwresource.SchemaRequest{}, &sch)
		typ := sch.Schema.Type().TerraformType(ctx)
		var prior serviceModel
		var diags diag.Diagnostics
		prior.set(s, &diags)
		prior.AdminPassword, prior.AdminPasswordVersion = types.StringNull(), types.Int64Null()
		prior.Timeouts = shortTimeouts("200ms", "create", "update", "delete")
		plan := prior
		if plan.AllowedIPs, diags = types.SetValueFrom(ctx, allowType, []allowModel{{CIDR: types.StringValue("203.0.113.0/24"), Description: types.StringValue("office")}}); diags.HasError() {
			t.Fatal(diags)
		}
		state := tfsdk.State{Schema: sch.Schema, Raw: tftypes.NewValue(typ, nil)}
		if d := state.Set(ctx, &prior); d.HasError() {
			t.Fatalf("state: %v", d)
		}
		p := tfsdk.Plan{Schema: sch.Schema, Raw: tftypes.NewValue(typ, nil)}
		if d := p.Set(ctx, &plan); d.HasError() {
			t.Fatalf("plan: %v", d)
		}
		resp := fwresource.UpdateResponse{State: state}
		start := time.Now()
		r.Update(ctx, fwresource.UpdateRequest{Plan: p, State: state}, &resp)
		checkTimedOut(t, resp.Diagnostics, "The allowlist is not enforced", time.Since(start))
	})

	t.Run("vpc delete", func(t *testing.T) {
		v, err := tn.c.CreateVPC(ctx, tn.project, apitype.VPCCreate{Name: "slow-delete", Region: "us-east-1", CIDR: "10.52.0.0/16"})
		if err != nil {
			t.Fatal(err)
		}
		r := &vpcResource{configured{api: a}}
		var sch fwresource.SchemaResponse
		r.Schema(ctx, fwresource.SchemaRequest{}, &sch)
		var m vpcModel
		m.set(v)
		m.Timeouts = shortTimeouts("200ms", "create", "delete")
		state := tfsdk.State{Schema: sch.Schema, Raw: tftypes.NewValue(sch.Schema.Type().TerraformType(ctx), nil)}
		if d := state.Set(ctx, &m); d.HasError() {
			t.Fatalf("state: %v", d)
		}
		resp := fwresource.DeleteResponse{State: state}
		start := time.Now()
		r.Delete(ctx, fwresource.DeleteRequest{State: state}, &resp)
		checkTimedOut(t, resp.Diagnostics, "The VPC was not deleted", time.Since(start))
	})
}
