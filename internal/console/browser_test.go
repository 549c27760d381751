package console_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/testenv"
)

// TestBrowser walks the console in a real headless Chromium against an
// in-process control plane: sign in, be refused 10.0.0.7/17 with the hint
// shown before and after submit, create the VPC, edit the allowlist (remove
// the wide-open rows, add rows, see the normalisation, save, see the
// applied state arrive live), sign out. It fails on any
// Content-Security-Policy violation. Screenshots of each step go to
// $MOAT_ARTIFACTS, else a temporary directory.
func TestBrowser(t *testing.T) {
	chromium := testenv.MustHaveCommand(t, "chromium")
	testenv.MustNotBeShort(t, "starts a browser")
	e := newEnv(t)
	shots := os.Getenv("MOAT_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	} else {
		shots = filepath.Join(shots, "console")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// The test server's certificate is its own; the console is still
		// served over HTTPS (Secure cookies, a secure context).
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	var mu sync.Mutex
	var violations []string
	listen := chromedp.Listen(ctx, func(ev any) {
		var text string
		switch ev := ev.(type) {
		case *log.EventEntryAdded:
			text = ev.Entry.Text
		case log.EventEntryAdded:
			text = ev.Entry.Text
		case *runtime.EventExceptionThrown:
			text = exceptionText(ev.ExceptionDetails)
		case runtime.EventExceptionThrown:
			text = exceptionText(ev.ExceptionDetails)
		default:
			return
		}
		if strings.Contains(text, "Content Security Policy") || strings.HasPrefix(text, "exception") {
			mu.Lock()
			violations = append(violations, text)
			mu.Unlock()
		}
	})
	if listen != nil {
		t.Fatal(listen)
	}
	n := 0
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			n++
			return os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s.png", n, name)), buf, 0o644)
		})
	}
	// waitText waits until the element sel's text holds want.
	// waitText waits until the element sel's text holds want; it asks
	// again when a navigation replaced the page under the question.
	waitText := func(sel, want string) chromedp.Action[chromedp.Void] {
		expr := fmt.Sprintf(`(document.querySelector(%q)?.textContent || "").includes(%q)`, sel, want)
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			deadline := time.Now().Add(15 * time.Second)
			for {
				ok, err := chromedp.Evaluate[bool](expr)(ctx, tg)
				if err == nil && ok {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("wait for %q in %s: last %v, %v", want, sel, ok, err)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	// clear empties an input the user typed into (chromedp.Clear resets
	// only what the page's HTML set).
	clear := func(sel string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%q).value = "") === ""`, sel))(ctx, tg)
			return err
		})
	}
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").outerHTML`))
			t.Fatalf("%s: %v (at %s)\n%s", step, err, loc, html)
		}
	}

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
	run("sign out",
		chromedp.Click(`//button[text()="Sign out"]`),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.Navigate(e.srv.URL+"/console/vpcs"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("signed-out"),
	)
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(location, "/console/signin") {
		t.Errorf("after sign-out /console/vpcs is at %s, want the sign-in page", location)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Errorf("browser: %s", v)
	}
	t.Logf("screenshots in %s", shots)
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "exception"
	}
	text := "exception: " + d.Text
	if d.Exception != nil {
		text += " " + d.Exception.Description
	}
	return text
}
