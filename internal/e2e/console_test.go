package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/browsertest"
	"github.com/moatdb/moat/internal/controlplane"
)

// TestConsoleWalkthrough is issue 14's workflow clicked through in a real
// headless Chromium against a whole stack (control plane, agent, local
// provider, simulated customer cloud): as the tenant, create a VPC (and be
// refused 10.0.0.7/17 with the hint), add a peering; as the customer (CLI),
// accept it, add the route and the security-group rule; change the allowed
// IP addresses to exclude the laptop and see a real psql from the laptop
// refused, restore them and see it connect; attach the service to the VPC
// and see its host name change (and the customer's host connect over the
// peering); file a quota increase; as the operator, signed in by moat up's
// one-time link, approve it. The allowlist steps come before the attach:
// once attached, the laptop is refused whatever the allowlist says (no
// public access), which would prove nothing. Screenshots of every step go
// to $MOAT_ARTIFACTS/console-walkthrough.
func TestConsoleWalkthrough(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("shop")
	ctx := e.ctx()
	tenant, err := e.op.CreateToken(ctx, e.project, apitype.TokenCreate{Role: "admin", Name: "console"})
	if err != nil {
		t.Fatal(err)
	}
	created, err := e.op.CreateService(ctx, e.project, apitype.ServiceCreate{Name: "orders", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	pw := created.AdminPassword
	// The customer: an account and a VPC with a host, in the simulator.
	account := e.cli("sim", "account", "create", "-o", "id")
	custVPC := e.cli("sim", "vpc", "create", "--account", account, "--region", "eu-west-1", "--cidr", "172.31.0.0/16", "-o", "id")
	e.cli("sim", "host", "create", "cust", "--vpc", custVPC)

	br := browsertest.New(t, "console-walkthrough", 4*time.Minute)
	run, shot, waitText, clear := br.Run, br.Shot, browsertest.WaitText, browsertest.Clear
	base := e.stack.CP.URL() + "/console"

	run("tenant signs in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), tenant.Secret),
		chromedp.Submit(chromedp.CSS(`#token`)),
		waitText("#quota", "0 of 3 VPCs used"),
	)
	run("VPC: 10.0.0.7/17 hinted before submit",
		chromedp.SendKeys(chromedp.CSS(`#vpc-name`), "main"),
		chromedp.SendKeys(chromedp.CSS(`#vpc-cidr`), "10.0.0.7/17"),
		waitText("#cidr-hint", "Hint: use 10.0.0.0/17"),
		shot("vpc-cidr-hint"),
	)
	run("VPC: 10.0.0.7/17 refused with the hint",
		chromedp.Submit(chromedp.CSS(`#vpc-cidr`)),
		waitText("#vpc-cidr-error", `"10.0.0.7/17" has host bits set`),
		waitText("#vpc-cidr-error", "Hint: use 10.0.0.0/17"),
		shot("vpc-cidr-refused"),
	)
	run("VPC created",
		clear(`#vpc-cidr`),
		chromedp.SendKeys(chromedp.CSS(`#vpc-cidr`), "10.0.0.0/17"),
		chromedp.Submit(chromedp.CSS(`#vpc-cidr`)),
		waitText("tbody", "10.0.0.0/17"),
	)
	vpcs, err := e.op.ListVPCs(ctx, e.project)
	if err != nil || len(vpcs) != 1 {
		t.Fatalf("VPCs after the click: %+v, %v", vpcs, err)
	}
	vpc := vpcs[0]
	row := `//tr[@id="vpc-` + vpc.ID + `"]`
	run("VPC active, live",
		waitText("#vpc-"+vpc.ID+"-state", "active"),
		waitText("#quota", "1 of 3 VPCs used"),
		shot("vpc-active"),
	)

	run("peering added",
		chromedp.Click(row+`//summary[.="Add peering"]`),
		chromedp.SendKeys(chromedp.CSS(`#peer-account-`+vpc.ID), account),
		chromedp.SendKeys(chromedp.CSS(`#peer-vpc-`+vpc.ID), custVPC),
		chromedp.SendKeys(chromedp.CSS(`#peer-region-`+vpc.ID), "eu-west-1"),
		chromedp.SendKeys(chromedp.CSS(`#peer-cidrs-`+vpc.ID), "172.31.0.0/16"),
		chromedp.Click(row+`//button[.="Add Connection"]`),
		waitText("#vpc-"+vpc.ID+"-peerings", "State: pending-acceptance"),
		waitText("#vpc-"+vpc.ID+"-peerings", "Accept the peering request pcx-"),
		shot("peering-pending"),
	)
	pcs, err := e.op.ListPeerings(ctx, e.project, vpc.ID)
	if err != nil || len(pcs) != 1 || pcs[0].CloudPeeringID == "" {
		t.Fatalf("peerings after the click: %+v, %v", pcs, err)
	}
	pcx := pcs[0].CloudPeeringID
	e.cli("sim", "peering", "accept", pcx)
	run("peering active, live, with the customer's steps",
		waitText("#vpc-"+vpc.ID+"-peerings", "State: active"),
		waitText("#vpc-"+vpc.ID+"-peerings", "destination 10.0.0.0/17, target "+pcx),
		waitText("#vpc-"+vpc.ID+"-peerings", "TCP port 5432 to 10.0.0.0/17"),
		shot("peering-active"),
	)
	e.cli("sim", "route", "add", "--vpc", custVPC, "--destination", "10.0.0.0/17", "--target", pcx)
	e.cli("sim", "sg", "egress", "add", "--host", "cust", "--protocol", "tcp", "--port", "5432", "--cidr", "10.0.0.0/17")

	svc, err := e.op.WaitService(ctx, e.project, created.ID, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	laptop := e.stack.Laptop.Addr.String()
	if r := e.psql("laptop", pw, e.conninfo(svc, ""), "-c", "select 1"); r.code != 0 {
		t.Fatalf("psql from the laptop to the new (wide-open) service: %v", r)
	}
	svcPage := base + "/services/" + svc.ID
	run("allowlist: the laptop excluded",
		chromedp.Navigate(svcPage+"/allowlist"),
		waitText("#wide-open", "whole internet"),
		chromedp.Click(chromedp.CSS(`a[href$="/allowlist/edit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#allowlist-form`)),
		chromedp.Click(chromedp.CSS(`#rows tr:first-child button.remove-row`)),
		chromedp.Click(chromedp.CSS(`#rows tr:first-child button.remove-row`)),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:first-child input[name=cidr]`), "203.0.113.0/24"),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:first-child input[name=description]`), "office"),
		chromedp.Click(`//button[text()="Add row"]`),
		chromedp.WaitVisible(chromedp.CSS(`#rows tr:nth-child(2) input[name=cidr]`)),
		browsertest.WaitHTMX(`#rows tr:nth-child(2) input[name=cidr]`),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(2) input[name=cidr]`), "172.31.0.0/16"),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(2) input[name=description]`), "customer-vpc"),
		waitText("#rows tr:nth-child(2) .field-hint", "65,536 addresses"),
		chromedp.Submit(chromedp.CSS(`#allowlist-form`)),
		waitText("tbody", "203.0.113.0/24"),
		waitText("#applied", "applied on every node"),
		shot("allowlist-laptop-excluded"),
	)
	if r := e.psql("laptop", pw, e.conninfo(svc, ""), "-c", "select 1"); r.code == 0 {
		t.Fatalf("psql from the laptop (%s) after the console excluded it: %v, want refused", laptop, r)
	}
	run("allowlist: the laptop restored",
		chromedp.Navigate(svcPage+"/allowlist/edit"),
		chromedp.WaitVisible(chromedp.CSS(`#allowlist-form`)),
		chromedp.Click(`//button[text()="Add row"]`),
		chromedp.WaitVisible(chromedp.CSS(`#rows tr:nth-child(3) input[name=cidr]`)),
		browsertest.WaitHTMX(`#rows tr:nth-child(3) input[name=cidr]`),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(3) input[name=cidr]`), laptop),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(3) input[name=description]`), "laptop"),
		waitText("#rows tr:nth-child(3) .field-hint", "becomes "+laptop+"/32: 1 address"),
		shot("allowlist-restore"),
		chromedp.Submit(chromedp.CSS(`#allowlist-form`)),
		waitText("tbody", laptop+"/32"),
		waitText("#applied", "applied on every node"),
		shot("allowlist-laptop-restored"),
	)
	if r := e.psql("laptop", pw, e.conninfo(svc, ""), "-c", "select 1"); r.code != 0 || r.stdout != "1" {
		t.Fatalf("psql from the laptop after the console restored it: %v", r)
	}

	publicHost := svc.Connection.Host
	run("attach: the host name changes",
		chromedp.Navigate(svcPage),
		waitText("dl.conn", publicHost),
		chromedp.Navigate(svcPage+"/network"),
		waitText("#host-warning", "The host name changes."),
		chromedp.Click(`//button[.="Attach to this VPC"]`),
		waitText(".operation", "succeeded"),
		shot("attach-succeeded"),
		chromedp.Navigate(svcPage),
		waitText("dl.conn", svc.ID+"."+e.project+".vpc."),
		shot("attached-host-name"),
	)
	svc, err = e.op.GetService(ctx, e.project, svc.ID)
	if err != nil || svc.VPCID != vpc.ID || svc.Connection == nil || svc.Connection.Host == publicHost || !strings.Contains(svc.Connection.Host, ".vpc.") {
		t.Fatalf("service after the attach click: %+v, %v; want attached to %s with a .vpc. host name", svc, err, vpc.ID)
	}
	if r := e.psql("cust", pw, e.conninfo(svc, ""), "-c", "select 1"); r.code != 0 {
		t.Errorf("psql from the customer's host over the peering: %v", r)
	}

	run("quota increase requested",
		chromedp.Navigate(base+"/vpcs"),
		chromedp.Click(chromedp.CSS(`#request-quota`)),
		chromedp.WaitVisible(chromedp.CSS(`#support-message`)),
		chromedp.SendKeys(chromedp.CSS(`#support-message`), "a VPC per environment: staging and prod"),
		chromedp.Click(`//button[.="Send request"]`),
		waitText(".alert.ok", "is filed: vpcs quota 3 → 5"),
		waitText("#your-requests + table", "open"),
		shot("quota-requested"),
		chromedp.Click(`//button[text()="Sign out"]`),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
	)

	opTok, err := os.ReadFile(filepath.Join(e.dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	link := e.stack.CP.URL() + e.stack.CP.Console.SignInLink(strings.TrimSpace(string(opTok)), 0)
	run("operator signs in with the one-time link and approves",
		chromedp.Navigate(link),
		chromedp.Click(chromedp.CSS(`#signin-link`)),
		waitText(".role", "Role: operator"),
		chromedp.Navigate(base+"/support"),
		waitText("#open-requests + p + table", "a VPC per environment"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name=reply]`), "approved: 5 VPCs"),
		shot("quota-open-request"),
		chromedp.Click(`//button[.="Approve"]`),
		waitText("main", "No open requests."),
		waitText("main", "approved: 5 VPCs"),
		shot("quota-approved"),
		chromedp.Navigate(base+"/vpcs"),
		waitText("#quota", "1 of 5 VPCs used"),
	)
	if p, err := e.op.GetProject(ctx, e.project); err != nil || p.VPCQuota != 5 {
		t.Errorf("VPC quota after the operator's approval = %d, %v; want 5", p.VPCQuota, err)
	}
	run("the link is spent",
		chromedp.Navigate(link),
		waitText("main", "This sign-in link was already used or has expired."),
	)
}

// cli runs a moat command of the stack (as in the README) that must
// succeed, and returns its trimmed output.
func (e *env) cli(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.moat(args...)
	if code != 0 {
		e.t.Fatalf("moat %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimSpace(out)
}
