package console_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/browsertest"
	"github.com/moatdb/moat/internal/domain"
)

// TestBrowser walks the console in a real headless Chromium against an
// in-process control plane: sign in, be refused 10.0.0.7/17 with the hint
// shown before and after submit, create the VPC, edit the allowlist (remove
// the wide-open rows, add rows, see the normalisation, save, see the
// applied state arrive live), reach every control of every page with Tab
// alone (a tenant's and the operator's), sign out. It fails on any
// Content-Security-Policy violation. Screenshots of each step go to
// $MOAT_ARTIFACTS, else a temporary directory.
func TestBrowser(t *testing.T) {
	br := browsertest.New(t, "console", 90*time.Second)
	e := newEnv(t)
	run, shot, waitText, clear := br.Run, br.Shot, browsertest.WaitText, browsertest.Clear

	run("sign in",
		chromedp.Navigate(e.srv.URL+"/console/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("signin"),
		chromedp.SendKeys(chromedp.CSS(`#token`), e.adminA),
		chromedp.Submit(chromedp.CSS(`#token`)),
		chromedp.WaitVisible(chromedp.CSS(`#vpc-cidr`)),
		waitText("h1", "VPCs"),
		waitText("#quota", "0 of 3 VPCs used"),
	)

	run("VPC hint before submit",
		chromedp.SendKeys(chromedp.CSS(`#vpc-name`), "dev"),
		chromedp.SendKeys(chromedp.CSS(`#vpc-cidr`), "10.0.0.7/17"),
		waitText("#cidr-hint", "Hint: use 10.0.0.0/17"),
		shot("vpc-cidr-hint"),
	)
	run("VPC refused on submit",
		chromedp.Submit(chromedp.CSS(`#vpc-cidr`)),
		waitText("#vpc-cidr-error", "has host bits set"),
		waitText("#vpc-cidr-error", "Hint: use 10.0.0.0/17"),
		shot("vpc-refused"),
	)
	run("VPC created",
		clear(`#vpc-cidr`),
		chromedp.SendKeys(chromedp.CSS(`#vpc-cidr`), "10.0.0.0/17"),
		waitText("#cidr-hint", "10.0.0.0/17: 32,768 addresses"),
		chromedp.Submit(chromedp.CSS(`#vpc-cidr`)),
		waitText("tbody", "10.0.0.0/17"),
		waitText("#quota", "1 of 3 VPCs used"),
		shot("vpc-created"),
	)
	vpcs, err := e.api(e.adminA).ListVPCs(context.Background(), e.A)
	if err != nil || len(vpcs) != 1 || vpcs[0].CIDR != "10.0.0.0/17" || vpcs[0].Name != "dev" {
		t.Fatalf("VPCs after the browser created one: %+v, %v", vpcs, err)
	}

	svc, err := e.api(e.adminA).CreateService(context.Background(), e.A, apitype.ServiceCreate{Name: "orders", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	run("allowlist editor",
		chromedp.Navigate(e.srv.URL+"/console/services/"+svc.ID+"/allowlist"),
		waitText("#wide-open", "whole internet"),
		chromedp.Click(chromedp.CSS(`a[href$="/allowlist/edit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#allowlist-form`)),
		// Remove the two wide-open rows.
		chromedp.Click(chromedp.CSS(`#rows tr:first-child button.remove-row`)),
		chromedp.Click(chromedp.CSS(`#rows tr:first-child button.remove-row`)),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:first-child input[name=cidr]`), "203.0.113.7"),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:first-child input[name=description]`), "office"),
		waitText("#rows tr:first-child .field-hint", "becomes 203.0.113.7/32: 1 address"),
		chromedp.Click(`//button[text()="Add row"]`),
		chromedp.WaitVisible(chromedp.CSS(`#rows tr:nth-child(2) input[name=cidr]`)),
		browsertest.WaitHTMX(`#rows tr:nth-child(2) input[name=cidr]`),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(2) input[name=cidr]`), "198.51.100.7/24"),
		waitText("#rows tr:nth-child(2) .field-hint", "Hint: use 198.51.100.0/24"),
		clear(`#rows tr:nth-child(2) input[name=cidr]`),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(2) input[name=cidr]`), "198.51.100.0/24"),
		chromedp.SendKeys(chromedp.CSS(`#rows tr:nth-child(2) input[name=description]`), "vpn"),
		waitText("#rows tr:nth-child(2) .field-hint", "256 addresses"),
		shot("allowlist-edit"),
	)
	run("allowlist saved",
		chromedp.Submit(chromedp.CSS(`#allowlist-form`)),
		waitText("#applied", "waiting for every node"),
		waitText("tbody", "203.0.113.7/32"),
		waitText("tbody", "198.51.100.0/24"),
		shot("allowlist-saved"),
	)
	// The agents report the new revision (no agent runs here): the page,
	// left alone, turns to "applied" by itself.
	edit(t, e, svc.ID, func(s *domain.Service) { s.AppliedAllowlistRevision = s.AllowlistRevision })
	run("allowlist applied live",
		waitText("#applied", "applied on every node"),
		shot("allowlist-applied"),
	)
	// Every control of every page is reachable with Tab alone.
	for _, page := range []string{"/console/vpcs", "/console/services", "/console/services/" + svc.ID,
		"/console/services/" + svc.ID + "/network", "/console/services/" + svc.ID + "/allowlist",
		"/console/services/" + svc.ID + "/allowlist/edit", "/console/services/" + svc.ID + "/explain?from=203.0.113.9",
		"/console/audit", "/console/support"} {
		run("keyboard reaches every control of "+page,
			chromedp.Navigate(e.srv.URL+page),
			chromedp.WaitVisible(chromedp.CSS(`main`)),
			tabEverywhere(),
		)
	}
	// The Support form by keyboard alone: Tab reaches every control in
	// order, typing goes into the focused one, Enter on the button sends.
	var visited []string
	run("support request by keyboard",
		chromedp.Navigate(e.srv.URL+"/console/vpcs"),
		chromedp.Click(chromedp.CSS(`#request-quota`)),
		chromedp.WaitVisible(chromedp.CSS(`#support-message`)),
		tabTo(&visited, "support-message"),
		chromedp.KeyEvent("more environments"),
		tabTo(&visited, "support-send"),
		chromedp.KeyEvent("\r"),
		waitText(".alert.ok", "is filed: vpcs quota 3 → 5"),
		shot("support-filed"),
	)
	if i, j := slices.Index(visited, "support-resource"), slices.Index(visited, "support-requested"); i < 0 || j < i {
		t.Errorf("Tab order on the Support page: %v, want the quota select, then the new quota, then the message", visited)
	}
	rs, err := e.api(e.adminA).ListSupportRequests(context.Background(), e.A, "open")
	if err != nil || len(rs) != 1 || rs[0].Message != "more environments" || rs[0].Requested != 5 {
		t.Errorf("requests after the keyboard: %+v, %v", rs, err)
	}
	run("sign out",
		chromedp.Click(`//button[text()="Sign out"]`),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.Navigate(e.srv.URL+"/console/vpcs"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("signed-out"),
	)
	if location := br.Location(); !strings.HasSuffix(location, "/console/signin") {
		t.Errorf("after sign-out /console/vpcs is at %s, want the sign-in page", location)
	}
	// The operator's controls too: the support queue (approve, decline),
	// the quota, audit verify.
	run("operator signs in",
		chromedp.SendKeys(chromedp.CSS(`#token`), e.operator),
		chromedp.Submit(chromedp.CSS(`#token`)),
		chromedp.WaitVisible(chromedp.CSS(`main`)),
	)
	for _, page := range []struct{ path, shows string }{
		{"/console/support", "Decline"}, {"/console/vpcs", "VPCs"}, {"/console/audit/verify", "The audit log is intact"},
	} {
		run("keyboard reaches every operator control of "+page.path,
			chromedp.Navigate(e.srv.URL+page.path),
			waitText("main", page.shows),
			tabEverywhere(),
		)
	}
}

// tabTo presses Tab until the element with id has the focus (at most 60
// times), appending the ID of each element focused on the way to visited.
func tabTo(visited *[]string, id string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for range 60 {
			if _, err := chromedp.KeyEvent("\t")(ctx, tg); err != nil {
				return err
			}
			got, err := chromedp.Evaluate[string](`document.activeElement ? document.activeElement.id : ""`)(ctx, tg)
			if err != nil {
				return err
			}
			*visited = append(*visited, got)
			if got == id {
				return nil
			}
		}
		return fmt.Errorf("Tab never reached #%s (focused: %v)", id, *visited)
	})
}

// tabEverywhere presses Tab until every visible control of the page (links,
// buttons, inputs, selects, text areas, the summaries of closed details) has
// had the focus, and fails naming the controls it never reached.
func tabEverywhere() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		n, err := chromedp.Evaluate[int](`(() => {
  // Inside a closed details only its own summary shows.
  const folded = e => {
    for (let a = e.parentElement; a; a = a.parentElement) {
      if (a.tagName === 'DETAILS' && !a.open && !(e.tagName === 'SUMMARY' && e.parentElement === a)) return true;
    }
    return false;
  };
  const els = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')]
    .filter(e => e.getClientRects().length > 0 && !e.disabled && !folded(e));
  els.forEach((e, i) => e.dataset.kb = String(i));
  return els.length;
})()`)(ctx, tg)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("the page has no controls")
		}
		seen := map[string]bool{}
		for range 3*n + 10 {
			if _, err := chromedp.KeyEvent("\t")(ctx, tg); err != nil {
				return err
			}
			kb, err := chromedp.Evaluate[string](`document.activeElement && document.activeElement.dataset.kb || ""`)(ctx, tg)
			if err != nil {
				return err
			}
			if kb != "" {
				seen[kb] = true
			}
			if len(seen) == n {
				return nil
			}
		}
		var missed []string
		for i := range n {
			if !seen[fmt.Sprint(i)] {
				html, err := chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('[data-kb="%d"]').outerHTML.slice(0, 160)`, i))(ctx, tg)
				if err != nil {
					return err
				}
				missed = append(missed, html)
			}
		}
		return fmt.Errorf("Tab reached %d of %d controls; never: %s", len(seen), n, strings.Join(missed, "; "))
	})
}
