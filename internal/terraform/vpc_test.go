package terraform

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/moatdb/moat/internal/apitype"
)

// TestVPCDataSource reads a VPC made through the API (as `moat vpc
// create` makes it) by name and by ID, and names a missing one.
func TestVPCDataSource(t *testing.T) {
	tn := controlPlane(t).newTenant(t, "tf-vpc-data")
	v, err := tn.c.CreateVPC(testCtx(t), tn.project, apitype.VPCCreate{Name: "shared", Region: "us-east-1", CIDR: "10.50.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: tn.config(fmt.Sprintf(`
data "moat_vpc" "by_name" {
  name = "shared"
}

data "moat_vpc" "by_id" {
  id = %q
}
`, v.ID)),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.moat_vpc.by_name", "id", v.ID),
					resource.TestCheckResourceAttr("data.moat_vpc.by_name", "region", "us-east-1"),
					resource.TestCheckResourceAttr("data.moat_vpc.by_name", "cidr", "10.50.0.0/16"),
					resource.TestCheckResourceAttr("data.moat_vpc.by_name", "state", v.State),
					resource.TestCheckResourceAttr("data.moat_vpc.by_id", "name", "shared"),
					resource.TestCheckResourceAttrPair("data.moat_vpc.by_id", "cidr", "data.moat_vpc.by_name", "cidr"),
				),
			},
			{
				Config: tn.config(`
data "moat_vpc" "missing" {
  name = "nope"
}
`),
				ExpectError: regexp.MustCompile(`(?s)No such VPC.*the project has no VPC named nope`),
			},
		},
	})
}

// TestVPCDrift: a VPC deleted outside Terraform (moat vpc delete) leaves
// the state on the next refresh, and the plan creates it again; the
// moat_vpc data source follows the new one.
func TestVPCDrift(t *testing.T) {
	tn := stack(t).newTenant(t, "tf-vpc-drift")
	cfg := tn.config(`
resource "moat_vpc" "d" {
  name   = "drift"
  region = "us-east-1"
  cidr   = "10.51.0.0/16"
}

data "moat_vpc" "d" {
  name = moat_vpc.d.name
}
`)
	var first string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("moat_vpc.d", "state", "active"),
					resource.TestCheckResourceAttrPair("data.moat_vpc.d", "id", "moat_vpc.d", "id"),
					resource.TestCheckResourceAttrPair("data.moat_vpc.d", "cloud_vpc_id", "moat_vpc.d", "cloud_vpc_id"),
					func(st *terraform.State) error { first = stateAttr(st, "moat_vpc.d", "id"); return nil },
				),
			},
			{
				PreConfig: func() {
					ctx := testCtx(t)
					if _, err := tn.c.DeleteVPC(ctx, tn.project, first); err != nil {
						t.Fatal(err)
					}
					wctx, cancel := context.WithTimeout(ctx, time.Minute)
					defer cancel()
					if err := waitGone(wctx, "VPC "+first, func(ctx context.Context) (string, error) {
						v, err := tn.c.GetVPC(ctx, tn.project, first)
						return v.State, err
					}); err != nil {
						t.Fatal(err)
					}
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("moat_vpc.d", plancheck.ResourceActionCreate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("moat_vpc.d", "state", "active"),
					resource.TestCheckResourceAttrPair("data.moat_vpc.d", "id", "moat_vpc.d", "id"),
					func(st *terraform.State) error {
						if id := stateAttr(st, "moat_vpc.d", "id"); id == first {
							return fmt.Errorf("VPC after the drift was corrected is still %s, want a new one", id)
						}
						return nil
					},
				),
			},
		},
	})
}
