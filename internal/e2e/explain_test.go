package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/cli"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// TestExplainVerify builds the seed's situation one step at a time and, at
// each step, has moat verify's logic probe the service from every simulated
// host for real: explain (the model) and the probes (the kernel) must
// agree, and explain must name the expected reason for each host.
func TestExplainVerify(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("why")
	ctx := e.ctx()
	laptop := up.LaptopHost

	sc := e.seed("orders")
	vpc, svc, acct, cvpc, cust := sc.vpc, sc.svc, sc.acct, sc.cvpc, sc.cust

	// Public: the laptop directly, the customer host through its NAT.
	e.verify(svc.ID, "public", map[string]string{laptop: domain.ReasonAllowed, cust.Name: domain.ReasonAllowed})

	// Attached: nothing from the internet; the customer is not peered yet.
	svc = e.attach(svc.ID, vpc.ID)
	e.verify(svc.ID, "attached", map[string]string{laptop: domain.ReasonPublicAccessDisabled, cust.Name: domain.ReasonNotPeered})

	pcx, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: vpc.ID, PeerAccountID: acct.ID, PeerVPCID: cvpc.ID, PeerRegion: cvpc.Region, PeerCIDRs: []string{"172.31.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	pcx = e.waitPeering(pcx.ID, "pending-acceptance")
	e.verify(svc.ID, "pending", map[string]string{laptop: domain.ReasonPublicAccessDisabled, cust.Name: domain.ReasonPeeringNotActive})

	if _, err := e.stack.Sim.Accept(ctx, pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(pcx.ID, "active")
	e.verify(svc.ID, "accepted", map[string]string{cust.Name: domain.ReasonCustomerRouteMissing})

	if _, err := e.stack.Sim.AddRoute(ctx, cvpc.ID, "10.0.0.0/17", pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	e.verify(svc.ID, "route", map[string]string{cust.Name: domain.ReasonSecurityGroup})

	if _, err := e.stack.Sim.AddEgress(ctx, cust.Name, "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	e.verify(svc.ID, "route and egress", map[string]string{laptop: domain.ReasonPublicAccessDisabled, cust.Name: domain.ReasonAllowed})

	// A second customer VPC, not peered, with an egress rule: refused. The
	// peered customer's NAT address is on the internet: refused too.
	acct2, err := e.stack.Sim.CreateAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.stack.Sim.CreateHost(ctx, "other", e.customerVPC(acct2.ID, "172.30.0.0/16").ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.stack.Sim.AddEgress(ctx, other.Name, "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	e.verify(svc.ID, "unpeered VPC", map[string]string{laptop: domain.ReasonPublicAccessDisabled, cust.Name: domain.ReasonAllowed, other.Name: domain.ReasonNotPeered})
	if v, err := e.explain(svc.ID, cvpc.NATAddr); err != nil || v.Reason != domain.ReasonPublicAccessDisabled {
		t.Errorf("explain from the customer's NAT address %v = %+v, %v; want %s", cvpc.NATAddr, v, err, domain.ReasonPublicAccessDisabled)
	}

	// The commands themselves, as a user runs them.
	if code, out, errb := e.moat("verify", svc.ID); code != 0 || !strings.Contains(out, "HOST") || !strings.Contains(out, "other") {
		t.Errorf("moat verify = %d, stdout %q, stderr %q; want 0 and a table", code, out, errb)
	} else {
		t.Logf("moat verify %s:\n%s", svc.ID, out)
	}
	if code, out, errb := e.moat("explain", svc.ID, "--from", cust.Addr.String()); code != 0 || out != "allowed\n" {
		t.Errorf("moat explain --from %v = %d, stdout %q, stderr %q; want allowed", cust.Addr, code, out, errb)
	}
	if code, out, errb := e.moat("explain", svc.ID, "--from", other.Addr.String()); code != 0 || !strings.HasPrefix(out, "refused: not-peered: customer VPC ") {
		t.Errorf("moat explain --from %v = %d, stdout %q, stderr %q; want refused: not-peered", other.Addr, code, out, errb)
	}

	// The allowlist narrowed to another range: refused by the node.
	e.setAllowlist(svc.ID, "172.31.200.0/24")
	e.verify(svc.ID, "allowlist", map[string]string{cust.Name: domain.ReasonAllowlist, other.Name: domain.ReasonNotPeered})
}

// verify runs moat verify's logic on svc until explain and every probe
// agree (a change the API reports may take a moment to reach the kernel),
// for at most 5 s, then checks the reason explain gives each host in want.
func (e *env) verify(svc, step string, want map[string]string) {
	e.t.Helper()
	var rows []domain.Check
	deadline := time.Now().Add(5 * time.Second)
	for try := 1; ; try++ {
		in, err := e.op.ExplainInput(e.ctx(), e.project, svc)
		if err != nil {
			e.t.Fatalf("%s: the model of %s: %v", step, svc, err)
		}
		if rows, err = e.stack.Sim.Verify(e.ctx(), in, 0); err != nil {
			e.t.Fatalf("%s: verify: %v", step, err)
		}
		if len(domain.Disagreements(rows)) == 0 || time.Now().After(deadline) {
			if try > 1 {
				e.t.Logf("%s: verify agreed after %d tries", step, try)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Host] = true
		if !r.Agree {
			e.t.Errorf("%s: %s (%s): explain %s (%s), probe reachable=%v (%s)", step, r.Host, r.Address, r.Explain.Reason, r.Explain.Detail, r.Reachable, r.ProbeError)
		}
		if w, ok := want[r.Host]; ok && r.Explain.Reason != w {
			e.t.Errorf("%s: explain from %s = %s (%s), want %s", step, r.Host, r.Explain.Reason, r.Explain.Detail, w)
		}
	}
	for h := range want {
		if !seen[h] {
			e.t.Errorf("%s: no verify row for host %s in %s", step, h, rowsString(rows))
		}
	}
	e.t.Logf("%s: %s", step, rowsString(rows))
}

// moat runs the moat command on this stack's data directory and local
// cloud (the data directory's record names its prefix), as its operator
// in the test's project.
func (e *env) moat(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return e.moatAPI(append(args, "--data-dir", e.dir)...)
}

// moatAPI runs a moat command of the API as the operator in the test's
// project.
func (e *env) moatAPI(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	tok, err := os.ReadFile(filepath.Join(e.dir, controlplane.AdminTokenFile))
	if err != nil {
		e.t.Fatal(err)
	}
	args = append(args, "--url", e.stack.CP.URL(), "--token", strings.TrimSpace(string(tok)),
		"--ca", filepath.Join(e.dir, controlplane.APICAFile), "--project", e.project)
	var out, errb bytes.Buffer
	code = cli.Main(e.ctx(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// explain is moat explain's logic for addr: the model of svc from the API,
// the source as the simulated cloud knows it.
func (e *env) explain(svc string, addr netip.Addr) (domain.Verdict, error) {
	in, err := e.op.ExplainInput(e.ctx(), e.project, svc)
	if err != nil {
		return domain.Verdict{}, err
	}
	if in.Source, err = e.stack.Sim.Source(e.ctx(), addr); err != nil {
		return domain.Verdict{}, err
	}
	return domain.Explain(in), nil
}

func rowsString(rows []domain.Check) string {
	var s []string
	for _, r := range rows {
		s = append(s, fmt.Sprintf("%s=%s/reachable=%v", r.Host, r.Explain.Reason, r.Reachable))
	}
	return strings.Join(s, " ")
}
