package terraform

import (
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/apitype"
)

// idAttribute is a resource's computed ID, kept across updates.
func idAttribute(desc string) schema.StringAttribute {
	return computedString(desc)
}

// computedString is a computed attribute that keeps its value across
// plans unless a ModifyPlan marks it unknown.
func computedString(desc string) schema.StringAttribute {
	return schema.StringAttribute{Computed: true, Description: desc,
		PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
}

// stateError is the error of an object in a state it cannot leave for the
// one wanted, naming its state_info.
func stateError(kind, id, state string, info *apitype.StateInfo) error {
	if info != nil && (info.Code != "" || info.Message != "") {
		return fmt.Errorf("%s %s is %s: %s (%s)", kind, id, state, info.Message, info.Code)
	}
	return fmt.Errorf("%s %s is %s", kind, id, state)
}

// optString is s, or null when it is empty.
func optString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}
