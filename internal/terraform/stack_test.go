package terraform

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	"github.com/hashicorp/terraform-plugin-testing/config"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/sim"
)

// customerVPC makes a simulated customer account (a new one when account
// is "") with a VPC of cidr.
func customerVPC(t *testing.T, s *server, account, cidr string) sim.VPC {
	t.Helper()
	ctx := testCtx(t)
	if account == "" {
		a, err := s.sim.CreateAccount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		account = a.ID
	}
	v, err := s.sim.CreateVPC(ctx, account, "eu-west-1", cidr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitPeering waits until the API shows peering id in state.
func (tn *tenant) waitPeering(t *testing.T, id, state string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := waitFor(ctx, "peering "+id+" "+state, func(ctx context.Context) (apitype.Peering, error) {
		return tn.c.GetPeering(ctx, tn.project, id)
	}, func(p apitype.Peering) (bool, error) { return p.State == state, nil })
	if err != nil {
		t.Fatal(err)
	}
}

// attr returns the state's attribute of resource name.
func stateAttr(s *terraform.State, name, key string) string {
	r := s.RootModule().Resources[name]
	if r == nil {
		return ""
	}
	return r.Primary.Attributes[key]
}

// TestServiceLifecycle drives a VPC-peering workflow through terraform:
// create (VPCs, a peering left for the customer to accept, a service),
// update in place (allowlist and password reset, attach, move, detach),
// drift made through the API the CLI uses, import, destroy.
func TestServiceLifecycle(t *testing.T) {
	s := stack(t)
	tn := s.newTenant(t, "tf-net")
	cvpc := customerVPC(t, s, "", "172.31.0.0/16")
	cfg := func(vpc, allow string, pwVersion int) string {
		attach := ""
		if vpc != "" {
			attach = "vpc_id = moat_vpc." + vpc + ".id"
		}
		return tn.config(fmt.Sprintf(`
resource "moat_vpc" "a" {
  name   = "a"
  region = "us-east-1"
  cidr   = "10.10.0.0/16"
}

resource "moat_vpc" "b" {
  name   = "b"
  region = "us-east-1"
  cidr   = "10.11.0.0/16"
}

resource "moat_peering_connection" "p" {
  vpc_id          = moat_vpc.a.id
  peer_account_id = %q
  peer_vpc_id     = %q
  peer_region     = "eu-west-1"
  peer_cidrs      = ["172.31.0.0/16"]
}

resource "moat_service" "db" {
  name   = "db"
  region = "us-east-1"
  %s
  allowed_ips = [%s]
  admin_password_version = %d
  timeouts {
    create = "40s"
    update = "3m"
  }
}

data "moat_service" "db" {
  name = moat_service.db.name
}
`, cvpc.Account, cvpc.ID, attach, allow, pwVersion))
	}
	office := `{ cidr = "203.0.113.0/24", description = "office" }`
	vpn := `{ cidr = "198.51.100.0/24", description = "vpn" }`
	var svcID, pcx, peeringID, password string
	apiService := func() apitype.Service {
		svc, err := tn.c.GetService(testCtx(t), tn.project, svcID)
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	inPlace := func(addr string) resource.ConfigPlanChecks {
		return resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)}}
	}
	attached := func(vpc string) resource.TestCheckFunc {
		return func(st *terraform.State) error {
			want := ""
			if vpc != "" {
				want = stateAttr(st, "moat_vpc."+vpc, "id")
			}
			if got := apiService(); got.VPCID != want || got.State != "running" {
				return fmt.Errorf("service in the API: vpc_id %q state %s, want vpc_id %q running", got.VPCID, got.State, want)
			}
			if got := stateAttr(st, "moat_service.db", "vpc_id"); got != want {
				return fmt.Errorf("vpc_id in the state = %q, want %q", got, want)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: cfg("", office, 0),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("moat_vpc.a", "state", "active"),
					resource.TestCheckResourceAttrSet("moat_vpc.a", "cloud_vpc_id"),
					resource.TestCheckResourceAttr("moat_peering_connection.p", "state", "pending-acceptance"),
					resource.TestMatchResourceAttr("moat_peering_connection.p", "cloud_peering_id", regexp.MustCompile(`^pcx-[0-9a-f]{17}$`)),
					resource.TestCheckResourceAttr("moat_service.db", "state", "running"),
					resource.TestCheckResourceAttr("moat_service.db", "nodes", "1"),
					resource.TestCheckResourceAttr("moat_service.db", "port", "5432"),
					resource.TestCheckResourceAttrSet("moat_service.db", "host"),
					resource.TestCheckResourceAttrSet("moat_service.db", "address"),
					resource.TestCheckResourceAttrSet("moat_service.db", "user"),
					resource.TestCheckResourceAttrSet("moat_service.db", "database"),
					resource.TestCheckResourceAttr("moat_service.db", "allowed_ips.#", "1"),
					resource.TestCheckTypeSetElemNestedAttrs("moat_service.db", "allowed_ips.*", map[string]string{"cidr": "203.0.113.0/24", "description": "office"}),
					resource.TestCheckNoResourceAttr("moat_service.db", "vpc_id"),
					resource.TestCheckResourceAttrPair("data.moat_service.db", "host", "moat_service.db", "host"),
					func(st *terraform.State) error {
						svcID = stateAttr(st, "moat_service.db", "id")
						pcx = stateAttr(st, "moat_peering_connection.p", "cloud_peering_id")
						peeringID = stateAttr(st, "moat_peering_connection.p", "id")
						password = stateAttr(st, "moat_service.db", "admin_password")
						if password == "" {
							return fmt.Errorf("no admin_password after create")
						}
						return nil
					},
				),
			},
			{
				// The customer accepts; the allowlist grows and the
				// password is reset, in place.
				PreConfig: func() {
					if _, err := s.sim.Accept(testCtx(t), pcx); err != nil {
						t.Fatal(err)
					}
					tn.waitPeering(t, peeringID, "active")
				},
				Config:           cfg("", office+", "+vpn, 1),
				ConfigPlanChecks: inPlace("moat_service.db"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("moat_service.db", "allowed_ips.#", "2"),
					resource.TestCheckTypeSetElemNestedAttrs("moat_service.db", "allowed_ips.*", map[string]string{"cidr": "198.51.100.0/24", "description": "vpn"}),
					func(st *terraform.State) error {
						if pw := stateAttr(st, "moat_service.db", "admin_password"); pw == "" || pw == password {
							return fmt.Errorf("admin_password after a reset is %q, want a new one", pw)
						}
						al, _, err := tn.c.GetAllowlist(testCtx(t), tn.project, svcID)
						if err != nil || len(al.AllowedIPs) != 2 || !al.Applied {
							return fmt.Errorf("allowlist in the API = %+v, %v; want 2 entries, applied", al, err)
						}
						return nil
					},
				),
			},
			{
				// The accepted peering shows up as active on refresh.
				Config:           cfg("a", office+", "+vpn, 1),
				ConfigPlanChecks: inPlace("moat_service.db"),
				Check: resource.ComposeAggregateTestCheckFunc(
					attached("a"),
					resource.TestCheckResourceAttr("moat_peering_connection.p", "state", "active"),
				),
			},
			{
				Config:           cfg("b", office+", "+vpn, 1),
				ConfigPlanChecks: inPlace("moat_service.db"),
				Check:            attached("b"),
			},
			{
				// Drift: the allowlist changed through the API (as moat
				// allowlist set does); the plan puts it back in place.
				PreConfig: func() {
					_, _, err := tn.c.PutAllowlist(testCtx(t), tn.project, svcID,
						apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: "0.0.0.0/0"}}}, "")
					if err != nil {
						t.Fatal(err)
					}
				},
				Config:           cfg("b", office+", "+vpn, 1),
				ConfigPlanChecks: inPlace("moat_service.db"),
				Check: func(*terraform.State) error {
					if al := apiService().AllowedIPs; len(al) != 2 {
						return fmt.Errorf("allowlist after the drift was corrected = %+v, want the 2 configured entries", al)
					}
					return nil
				},
			},
			{
				Config:           cfg("", office+", "+vpn, 1),
				ConfigPlanChecks: inPlace("moat_service.db"),
				Check:            attached(""),
			},
			{
				ResourceName:            "moat_service.db",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"admin_password", "admin_password_version", "timeouts"},
			},
			{ResourceName: "moat_vpc.a", ImportState: true, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
			{ResourceName: "moat_peering_connection.p", ImportState: true, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
		},
		CheckDestroy: func(*terraform.State) error {
			ctx := testCtx(t)
			if s, err := tn.c.GetService(ctx, tn.project, svcID); !gone(s.State, err) {
				return fmt.Errorf("service after destroy: %s, %v", s.State, err)
			}
			vs, err := tn.c.ListVPCs(ctx, tn.project)
			if err != nil {
				return err
			}
			for _, v := range vs {
				if v.State != "deleted" {
					return fmt.Errorf("VPC %s after destroy: %s", v.ID, v.State)
				}
			}
			return nil
		},
	})
}

// TestPeeringErrors checks that a failed peering is an error at create,
// and a rejected or expired one an error at the next plan, each naming
// its state_info.
func TestPeeringErrors(t *testing.T) {
	s := stack(t)
	t.Run("failed", func(t *testing.T) {
		tn := s.newTenant(t, "tf-peer-failed")
		stranger := customerVPC(t, s, "", "172.26.0.0/16")
		other := customerVPC(t, s, "", "172.25.0.0/16") // another account
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factories,
			Steps: []resource.TestStep{{
				Config: tn.config(fmt.Sprintf(`
resource "moat_vpc" "v" {
  name   = "v"
  region = "us-east-1"
  cidr   = "10.20.0.0/16"
}

resource "moat_peering_connection" "p" {
  vpc_id          = moat_vpc.v.id
  peer_account_id = %q
  peer_vpc_id     = %q
  peer_region     = "eu-west-1"
  peer_cidrs      = ["172.26.0.0/16"]
}
`, other.Account, stranger.ID)),
				ExpectError: regexp.MustCompile(`(?s)peering pcx-\S+ is failed: .*\(peer_vpc_not_found\)`),
			}},
		})
	})
	t.Run("rejected and expired", func(t *testing.T) {
		tn := s.newTenant(t, "tf-peer-dead")
		rej := customerVPC(t, s, "", "172.20.0.0/16")
		exp := customerVPC(t, s, rej.Account, "172.21.0.0/16")
		cfg := tn.config(fmt.Sprintf(`
resource "moat_vpc" "v" {
  name   = "v"
  region = "us-east-1"
  cidr   = "10.21.0.0/16"
}

resource "moat_peering_connection" "rej" {
  vpc_id          = moat_vpc.v.id
  peer_account_id = %[1]q
  peer_vpc_id     = %[2]q
  peer_region     = "eu-west-1"
  peer_cidrs      = ["172.20.0.0/16"]
}

resource "moat_peering_connection" "exp" {
  vpc_id          = moat_vpc.v.id
  peer_account_id = %[1]q
  peer_vpc_id     = %[3]q
  peer_region     = "eu-west-1"
  peer_cidrs      = ["172.21.0.0/16"]
}
`, rej.Account, rej.ID, exp.ID))
		ids := map[string][2]string{} // resource → API ID, cloud ID
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factories,
			Steps: []resource.TestStep{
				{
					Config: cfg,
					Check: func(st *terraform.State) error {
						for _, n := range []string{"rej", "exp"} {
							a := "moat_peering_connection." + n
							ids[n] = [2]string{stateAttr(st, a, "id"), stateAttr(st, a, "cloud_peering_id")}
						}
						return nil
					},
				},
				{
					PreConfig: func() {
						if _, err := s.sim.Reject(testCtx(t), ids["rej"][1]); err != nil {
							t.Fatal(err)
						}
						tn.waitPeering(t, ids["rej"][0], "rejected")
					},
					Config:      cfg,
					ExpectError: regexp.MustCompile(`(?s)Peering connection rejected.*is rejected: .*\(rejected\)`),
				},
				{
					PreConfig: func() {
						if _, err := s.sim.Advance(testCtx(t), 8*24*time.Hour); err != nil {
							t.Fatal(err)
						}
						tn.waitPeering(t, ids["exp"][0], "expired")
					},
					Config:      cfg,
					ExpectError: regexp.MustCompile(`(?s)Peering connection expired.*is expired: .*\(expired\)`),
				},
			},
			CheckDestroy: func(*terraform.State) error {
				ps, err := tn.c.ListPeerings(testCtx(t), tn.project, "")
				if err != nil {
					return err
				}
				for _, p := range ps {
					if p.State != "deleted" {
						return fmt.Errorf("peering %s after destroy: %s", p.ID, p.State)
					}
				}
				return nil
			},
		})
	})
}

// TestCreateTimeout checks that the timeouts block bounds the provider's
// wait, and that what was created is saved (tainted), so the destroy
// removes it instead of leaving it behind.
func TestCreateTimeout(t *testing.T) {
	tn := stack(t).newTenant(t, "tf-timeout")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: tn.config(`
resource "moat_service" "slow" {
  name   = "slow"
  region = "us-east-1"
  timeouts {
    create = "200ms"
  }
}
`),
			ExpectError: regexp.MustCompile(`(?s)wait for service svc-\S+ to run: context deadline exceeded.*raise the timeouts`),
		}},
		CheckDestroy: func(*terraform.State) error {
			ss, err := tn.c.ListServices(testCtx(t), tn.project)
			if err != nil || len(ss) != 0 {
				return fmt.Errorf("services after destroy = %+v, %v; want none", ss, err)
			}
			audit, err := tn.c.ListAudit(testCtx(t), tn.project)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(audit, func(e apitype.AuditEntry) bool { return e.Action == "service.delete" && e.Outcome == "success" }) {
				return fmt.Errorf("no service.delete in the audit log %+v: the timed-out service was not destroyed", audit)
			}
			return nil
		},
	})
}

// TestExample applies examples/terraform (the VPC-peering workflow) with
// the provider configured from the moat CLI's environment variables, then
// sees the customer's acceptance on refresh.
func TestExample(t *testing.T) {
	s := stack(t)
	tn := s.newTenant(t, "tf-example")
	cvpc := customerVPC(t, s, "", "172.30.0.0/16")
	t.Setenv("MOAT_URL", tn.url)
	t.Setenv("MOAT_TOKEN", tn.token)
	t.Setenv("MOAT_CA", tn.caFile)
	t.Setenv("MOAT_PROJECT", tn.project)
	vars := config.Variables{
		"peer_account_id": config.StringVariable(cvpc.Account),
		"peer_vpc_id":     config.StringVariable(cvpc.ID),
		"peer_cidr":       config.StringVariable("172.30.0.0/16"),
	}
	dir := config.StaticDirectory("../../examples/terraform")
	var pcx, peeringID string
	resource.Test(t, resource.TestCase{
		Steps: []resource.TestStep{
			{
				ProtoV6ProviderFactories: factories,
				ConfigDirectory:          dir,
				ConfigVariables:          vars,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("moat_peering_connection.app", "state", "pending-acceptance"),
					resource.TestCheckResourceAttr("moat_service.db", "state", "running"),
					resource.TestCheckResourceAttrPair("moat_service.db", "vpc_id", "moat_vpc.main", "id"),
					resource.TestCheckResourceAttr("moat_service.db", "allowed_ips.#", "2"),
					resource.TestCheckOutput("peering_state", "pending-acceptance"),
					func(st *terraform.State) error {
						pcx = stateAttr(st, "moat_peering_connection.app", "cloud_peering_id")
						peeringID = stateAttr(st, "moat_peering_connection.app", "id")
						return nil
					},
				),
			},
			{
				PreConfig: func() {
					if _, err := s.sim.Accept(testCtx(t), pcx); err != nil {
						t.Fatal(err)
					}
					// The reconciler sees the acceptance asynchronously.
					tn.waitPeering(t, peeringID, "active")
				},
				ProtoV6ProviderFactories: factories,
				ConfigDirectory:          dir,
				ConfigVariables:          vars,
				Check:                    resource.TestCheckOutput("peering_state", "active"),
			},
		},
	})
}

// TestPeeringCreateWarns calls the resource's Create directly (the testing
// framework does not show warnings) and checks the pending-acceptance
// warning tells the user what to do in their account.
func TestPeeringCreateWarns(t *testing.T) {
	s := stack(t)
	tn := s.newTenant(t, "tf-warn")
	ctx := testCtx(t)
	cvpc := customerVPC(t, s, "", "172.22.0.0/16")
	v, err := tn.c.CreateVPC(ctx, tn.project, apitype.VPCCreate{Name: "v", Region: "us-east-1", CIDR: "10.22.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	r := &peeringResource{configured{api: &api{c: tn.c, project: tn.project}}}
	var sch fwresource.SchemaResponse
	r.Schema(ctx, fwresource.SchemaRequest{}, &sch)
	typ := sch.Schema.Type().TerraformType(ctx)
	plan := tfsdk.Plan{Schema: sch.Schema, Raw: tftypes.NewValue(typ, nil)}
	cidrs, _ := types.ListValueFrom(ctx, types.StringType, []string{"172.22.0.0/16"})
	unknown := types.StringUnknown()
	if d := plan.Set(ctx, &peeringModel{ID: unknown, VPCID: types.StringValue(v.ID), PeerAccountID: types.StringValue(cvpc.Account),
		PeerVPCID: types.StringValue(cvpc.ID), PeerRegion: types.StringValue("eu-west-1"), PeerCIDRs: cidrs,
		CloudPeeringID: unknown, Lifecycle: unknown, StateInfo: unknown,
		Timeouts: timeouts.Value{Object: types.ObjectNull(map[string]attr.Type{"create": types.StringType, "delete": types.StringType})},
	}); d.HasError() {
		t.Fatalf("plan: %v", d)
	}
	resp := fwresource.CreateResponse{State: tfsdk.State{Schema: sch.Schema, Raw: tftypes.NewValue(typ, nil)}}
	r.Create(ctx, fwresource.CreateRequest{Plan: plan}, &resp)
	if resp.Diagnostics.HasError() {
		t.Fatalf("Create: %v", resp.Diagnostics)
	}
	var got peeringModel
	resp.State.Get(ctx, &got)
	if got.Lifecycle.ValueString() != "pending-acceptance" {
		t.Errorf("state after Create = %s, want pending-acceptance", got.Lifecycle)
	}
	w := resp.Diagnostics.Warnings()
	if len(w) != 1 || w[0].Summary() != "Accept the peering connection" {
		t.Fatalf("Create warnings = %v, want one: Accept the peering connection", w)
	}
	for _, want := range []string{"accept " + got.CloudPeeringID.ValueString(), "In account " + cvpc.Account, "add a route to 10.22.0.0/16", "TCP 5432", "security group"} {
		if !strings.Contains(w[0].Detail(), want) {
			t.Errorf("warning %q does not say %q", w[0].Detail(), want)
		}
	}
	if _, err := tn.c.DeletePeering(ctx, tn.project, got.ID.ValueString()); err != nil {
		t.Error(err)
	}
}
