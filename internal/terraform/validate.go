package terraform

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// detail renders err for a diagnostic: the message, then the hint the
// domain or the API gives to fix it.
func detail(err error) string {
	if de := domain.AsError(err); de != nil {
		msg := de.Msg
		if de.Field != "" {
			msg = de.Field + ": " + msg
		}
		if de.Hint != "" {
			msg += "\n\nHint: " + de.Hint
		}
		return msg
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := ce.Error()
		if ce.Hint != "" {
			msg += "\n\nHint: " + ce.Hint
		}
		if ce.RequestID != "" {
			msg += "\n(request " + ce.RequestID + ")"
		}
		return msg
	}
	return err.Error()
}

// addError adds err as an error diagnostic, on the attribute at p when p
// is not empty.
func addError(diags *diag.Diagnostics, p path.Path, summary string, err error) {
	if len(p.Steps()) > 0 {
		diags.AddAttributeError(p, summary, detail(err))
		return
	}
	diags.AddError(summary, detail(err))
}

// domainString validates a string attribute with one of internal/domain's
// checks, so a plan fails with the API's own message and hint.
type domainString struct {
	desc  string
	check func(string) error
}

func (v domainString) Description(context.Context) string         { return v.desc }
func (v domainString) MarkdownDescription(context.Context) string { return v.desc }

func (v domainString) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := v.check(req.ConfigValue.ValueString()); err != nil {
		addError(&resp.Diagnostics, req.Path, "Invalid "+req.Path.String(), err)
	}
}

func nameValidator() validator.String {
	return domainString{"a Moat name", func(s string) error { return domain.ValidateName("name", s) }}
}

// checkRegion checks region against the server's catalog.
func checkRegion(ctx context.Context, a *api, region types.String, diags *diag.Diagnostics) {
	if a == nil || region.IsNull() || region.IsUnknown() {
		return
	}
	cat, err := a.regions(ctx)
	if err != nil {
		addError(diags, path.Root("region"), "Cannot list regions", err)
		return
	}
	if _, err := cat.Lookup("region", region.ValueString()); err != nil {
		addError(diags, path.Root("region"), "Unsupported region", err)
	}
}

// peerCIDRs validates each CIDR of a peer network.
type peerCIDRs struct{}

func (peerCIDRs) Description(context.Context) string         { return "peer network CIDRs" }
func (peerCIDRs) MarkdownDescription(context.Context) string { return "peer network CIDRs" }

func (peerCIDRs) ValidateList(ctx context.Context, req validator.ListRequest, resp *validator.ListResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	for i, e := range req.ConfigValue.Elements() {
		s, ok := e.(types.String)
		if !ok || s.IsNull() || s.IsUnknown() {
			continue
		}
		if _, err := domain.ParsePeerCIDR(fmt.Sprintf("peer_cidrs[%d]", i), s.ValueString()); err != nil {
			addError(&resp.Diagnostics, req.Path.AtListIndex(i), "Invalid peer CIDR", err)
		}
	}
}

// allowlist validates allowed_ips with the domain's allowlist rules; an
// empty set is an explicit choice in a configuration, so it is allowed.
// CIDRs must be canonical prefixes (a bare address would come back as /32
// and show as a change).
type allowlist struct{}

func (allowlist) Description(context.Context) string         { return "a service allowlist" }
func (allowlist) MarkdownDescription(context.Context) string { return "a service allowlist" }

func (allowlist) ValidateSet(ctx context.Context, req validator.SetRequest, resp *validator.SetResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	var entries []allowModel
	if d := req.ConfigValue.ElementsAs(ctx, &entries, true); d.HasError() {
		return // unknown elements: checked when known
	}
	list := make([]domain.AllowEntry, 0, len(entries))
	for i, e := range entries {
		if e.CIDR.IsUnknown() || e.Description.IsUnknown() {
			return
		}
		if _, err := domain.ParsePrefix(fmt.Sprintf("allowed_ips[%d].cidr", i), e.CIDR.ValueString(), false); err != nil {
			addError(&resp.Diagnostics, req.Path, "Invalid allowlist entry", err)
			continue
		}
		list = append(list, domain.AllowEntry{CIDR: e.CIDR.ValueString(), Description: e.Description.ValueString()})
	}
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := domain.NormalizeAllowlist(list, domain.AllowlistOptions{ConfirmEmpty: true}); err != nil {
		addError(&resp.Diagnostics, req.Path, "Invalid allowlist", err)
	}
}
