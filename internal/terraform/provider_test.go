package terraform

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/moatdb/moat/internal/apitype"
)

// TestPlanValidation checks that plans fail with internal/domain's own
// messages and hints, before anything is sent to the API.
func TestPlanValidation(t *testing.T) {
	tn := controlPlane(t).newTenant(t, "tf-validate")
	cases := []struct {
		name, body string
		want       string
	}{
		{"non-canonical VPC CIDR", `resource "moat_vpc" "v" {
  name = "main"
  region = "us-east-1"
  cidr = "10.0.0.1/16"
}`, `(?s)cidr: "10.0.0.1/16" has host bits set.*Hint: use 10.0.0.0/16`},
		{"public VPC range", `resource "moat_vpc" "v" {
  name = "main"
  region = "us-east-1"
  cidr = "8.8.0.0/16"
}`, `(?s)is not a private \(RFC 1918\) range.*Hint: use RFC 1918 space`},
		{"unsupported region", `resource "moat_vpc" "v" {
  name = "main"
  region = "ap-south-2"
  cidr = "10.0.0.0/16"
}`, `(?s)region "ap-south-2" is not supported by this platform.*Hint: supported regions: us-east-1, eu-west-1`},
		{"bad name", `resource "moat_service" "s" {
  name = "My_DB"
  region = "us-east-1"
}`, `(?s)"My_DB" is not a valid name`},
		{"non-canonical allowlist entry", `resource "moat_service" "s" {
  name = "db"
  region = "us-east-1"
  allowed_ips = [{ cidr = "203.0.113.7/24" }]
}`, `(?s)has host bits set.*Hint: use 203.0.113.0/24`},
		{"bare address in the allowlist", `resource "moat_service" "s" {
  name = "db"
  region = "us-east-1"
  allowed_ips = [{ cidr = "203.0.113.7" }]
}`, `(?s)is an address, not a CIDR.*Hint: add a prefix length, e.g. 203.0.113.7/32`},
		{"duplicate allowlist range", `resource "moat_service" "s" {
  name = "db"
  region = "us-east-1"
  allowed_ips = [{ cidr = "203.0.113.0/24", description = "a" }, { cidr = "203.0.113.0/24", description = "b" }]
}`, `(?s)203.0.113.0/24 is listed twice`},
		{"node count", `resource "moat_service" "s" {
  name = "db"
  region = "us-east-1"
  nodes = 4
}`, `(?s)4 nodes is out of range.*Hint: a service has 1, 2 or 3 nodes`},
		{"peer account", `resource "moat_peering_connection" "p" {
  vpc_id = "vpc-x"
  peer_account_id = "12345"
  peer_vpc_id = "vpc-0123abcd"
  peer_region = "eu-west-1"
  peer_cidrs = ["172.31.0.0/16"]
}`, `(?s)"12345" is not an AWS account ID`},
		{"peer CIDR", `resource "moat_peering_connection" "p" {
  vpc_id = "vpc-x"
  peer_account_id = "123456789012"
  peer_vpc_id = "vpc-0123abcd"
  peer_region = "eu-west-1"
  peer_cidrs = ["172.31.0.0/12"]
}`, `(?s)has host bits set.*Hint: use 172.16.0.0/12`},
		{"role", `resource "moat_project_token" "t" {
  role = "owner"
}`, `(?s)"owner" is not a role.*Hint: use admin, member or viewer`},
	}
	// Without a provider the control plane never builds a VPC: it stays
	// creating, and the domain refuses to attach to it.
	v, err := tn.c.CreateVPC(testCtx(t), tn.project, apitype.VPCCreate{Name: "new", Region: "us-east-1", CIDR: "10.30.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct{ name, body, want string }{"attach to a VPC not active", fmt.Sprintf(`resource "moat_service" "s" {
  name = "db"
  region = "us-east-1"
  vpc_id = %q
}`, v.ID), `(?s)VPC vpc-\S+ is creating.*Hint: attach to an active VPC`})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resource.ParallelTest(t, resource.TestCase{
				ProtoV6ProviderFactories: factories,
				Steps: []resource.TestStep{{
					Config:      tn.config(tc.body),
					PlanOnly:    true,
					ExpectError: regexp.MustCompile(tc.want),
				}},
			})
		})
	}
}

// TestProjectToken creates a token, imports it, sees its revocation
// through the CLI's API as drift, and reads the data sources that need no
// nodes.
func TestProjectToken(t *testing.T) {
	tn := controlPlane(t).newTenant(t, "tf-token")
	cfg := tn.config(`
resource "moat_project_token" "ci" {
  role = "member"
  name = "ci"
}

data "moat_regions" "all" {}
data "moat_project_ca" "ca" {}
`)
	var id string
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestMatchResourceAttr("moat_project_token.ci", "secret", regexp.MustCompile(`^moat_tok-`)),
					resource.TestCheckResourceAttr("moat_project_token.ci", "role", "member"),
					resource.TestCheckResourceAttr("data.moat_regions.all", "codes.#", "2"),
					resource.TestCheckResourceAttr("data.moat_regions.all", "regions.0.code", "us-east-1"),
					resource.TestCheckResourceAttr("data.moat_regions.all", "regions.0.azs.#", "3"),
					resource.TestMatchResourceAttr("data.moat_project_ca.ca", "pem", regexp.MustCompile(`^-----BEGIN CERTIFICATE-----`)),
					resource.TestCheckResourceAttr("data.moat_project_ca.ca", "project_id", tn.project),
					func(s *terraform.State) error {
						id = s.RootModule().Resources["moat_project_token.ci"].Primary.ID
						return nil
					},
				),
			},
			{
				ResourceName:            "moat_project_token.ci",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"secret"},
			},
			{
				// Revoked outside Terraform: the next plan creates it again.
				PreConfig: func() {
					if _, err := tn.c.DeleteToken(testCtx(t), tn.project, id); err != nil {
						t.Fatal(err)
					}
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("moat_project_token.ci", plancheck.ResourceActionCreate)},
				},
				Check: func(s *terraform.State) error {
					if got := s.RootModule().Resources["moat_project_token.ci"].Primary.ID; got == id {
						t.Errorf("token after revocation and apply = %s, want a new one", got)
					}
					return nil
				},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			ts, err := tn.c.ListTokens(testCtx(t), tn.project)
			if err != nil {
				return err
			}
			for _, tok := range ts {
				if tok.Name == "ci" {
					t.Errorf("token %s survived destroy", tok.ID)
				}
			}
			return nil
		},
	})
}

// TestProviderEnvironment configures the provider from the moat CLI's
// environment variables only.
func TestProviderEnvironment(t *testing.T) {
	tn := controlPlane(t).newTenant(t, "tf-env")
	t.Setenv("MOAT_URL", tn.url)
	t.Setenv("MOAT_TOKEN", tn.token)
	t.Setenv("MOAT_CA", tn.caFile)
	t.Setenv("MOAT_PROJECT", tn.project)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: `
terraform {
  required_providers {
    moat = { source = "moatdb/moat" }
  }
}
provider "moat" {}
data "moat_project_ca" "ca" {}
`,
			Check: resource.TestCheckResourceAttr("data.moat_project_ca.ca", "project_id", tn.project),
		}},
	})
}
