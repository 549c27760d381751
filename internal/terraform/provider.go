// Package terraform is Moat's Terraform provider (source address
// moatdb/moat), built on terraform-plugin-framework: the resources
// moat_vpc, moat_peering_connection, moat_service and moat_project_token,
// and the data sources moat_regions, moat_vpc, moat_service and
// moat_project_ca. It talks to the API through internal/client and
// validates plans with internal/domain's own rules. Only
// cmd/terraform-provider-moat and this package's tests import it.
package terraform

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// Address is the provider's source address in required_providers.
const Address = "registry.terraform.io/moatdb/moat"

// New returns the provider's factory for providerserver.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &moatProvider{version: version} }
}

type moatProvider struct {
	version string
}

type providerModel struct {
	URL     types.String `tfsdk:"url"`
	Token   types.String `tfsdk:"token"`
	CAFile  types.String `tfsdk:"ca_file"`
	Project types.String `tfsdk:"project"`
}

// api is what the resources and data sources share: the client, the
// project they work in, and the server's region catalog (read once).
type api struct {
	c       *client.Client
	project string

	once    sync.Once
	catalog domain.Catalog
	catErr  error
}

// regions returns the server's region catalog.
func (a *api) regions(ctx context.Context) (domain.Catalog, error) {
	a.once.Do(func() {
		rs, err := a.c.ListRegions(ctx)
		if err != nil {
			a.catErr = fmt.Errorf("list regions: %w", err)
			return
		}
		for _, r := range rs {
			a.catalog.Regions = append(a.catalog.Regions, domain.Region{Code: r.Code, AZs: r.AZs})
		}
	})
	return a.catalog, a.catErr
}

func (p *moatProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "moat"
	resp.Version = p.version
}

func (p *moatProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages Moat PostgreSQL services, VPCs, peerings and project tokens. Every attribute falls back to the moat CLI's environment variable.",
		Attributes: map[string]schema.Attribute{
			"url":     schema.StringAttribute{Optional: true, Description: "API URL, https://HOST:PORT (env MOAT_URL)."},
			"token":   schema.StringAttribute{Optional: true, Sensitive: true, Description: "API token moat_<id>_<secret> (env MOAT_TOKEN)."},
			"ca_file": schema.StringAttribute{Optional: true, Description: "File with the API server's CA certificate, its api-ca.pem (env MOAT_CA)."},
			"project": schema.StringAttribute{Optional: true, Description: "Project ID the resources live in (env MOAT_PROJECT)."},
		},
	}
}

// setting is the configured value of attr, else the environment variable.
func setting(v types.String, env string) string {
	if !v.IsNull() && !v.IsUnknown() && v.ValueString() != "" {
		return v.ValueString()
	}
	return os.Getenv(env)
}

func (p *moatProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	for _, v := range []struct {
		val  types.String
		attr string
	}{{m.URL, "url"}, {m.Token, "token"}, {m.CAFile, "ca_file"}, {m.Project, "project"}} {
		if v.val.IsUnknown() {
			resp.Diagnostics.AddAttributeError(path.Root(v.attr), "Unknown provider setting",
				v.attr+" depends on a value not known until apply; the provider needs it to plan. Use a literal or its environment variable.")
		}
	}
	if resp.Diagnostics.HasError() {
		return
	}
	url, token := setting(m.URL, "MOAT_URL"), setting(m.Token, "MOAT_TOKEN")
	caFile, project := setting(m.CAFile, "MOAT_CA"), setting(m.Project, "MOAT_PROJECT")
	missing := func(attr, env, hint string) {
		resp.Diagnostics.AddAttributeError(path.Root(attr), "No "+attr, "set "+attr+" in the provider block or "+env+" in the environment; "+hint)
	}
	if url == "" {
		missing("url", "MOAT_URL", "it is the API's https://HOST:PORT")
	}
	if token == "" {
		missing("token", "MOAT_TOKEN", "create one with moat token create")
	}
	if project == "" {
		missing("project", "MOAT_PROJECT", "see moat project list")
	}
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := client.New(client.Config{URL: url, Token: token, CAFile: caFile, UserAgent: "terraform-provider-moat/" + p.version})
	if err != nil {
		resp.Diagnostics.AddError("Cannot configure the Moat client", err.Error())
		return
	}
	a := &api{c: c, project: project}
	resp.ResourceData = a
	resp.DataSourceData = a
}

func (p *moatProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		func() resource.Resource { return &vpcResource{} },
		func() resource.Resource { return &peeringResource{} },
		func() resource.Resource { return &serviceResource{} },
		func() resource.Resource { return &tokenResource{} },
	}
}

func (p *moatProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		func() datasource.DataSource { return &regionsDataSource{} },
		func() datasource.DataSource { return &vpcDataSource{} },
		func() datasource.DataSource { return &serviceDataSource{} },
		func() datasource.DataSource { return &caDataSource{} },
	}
}

// configured is embedded by every resource and data source: it receives
// the provider's *api.
type configured struct {
	api *api
}

func (c *configured) configure(data any, diags interface{ AddError(string, string) }) {
	if data == nil {
		return // not configured yet (validation)
	}
	a, ok := data.(*api)
	if !ok {
		diags.AddError("Unexpected provider data", fmt.Sprintf("got %T, want *api", data))
		return
	}
	c.api = a
}

func (c *configured) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	c.configure(req.ProviderData, &resp.Diagnostics)
}

// dsConfigured is configured for data sources (their Configure has
// other request types).
type dsConfigured struct {
	configured
}

func (c *dsConfigured) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	c.configure(req.ProviderData, &resp.Diagnostics)
}
