// Package browsertest drives a real headless Chromium (Debian's chromium,
// through chromedp) for tests of the web console: one fresh browser
// profile per Browser, screenshots of each step as test artifacts, and a
// failure on any Content-Security-Policy violation or uncaught script
// exception. Only tests import it (internal/console, internal/e2e).
package browsertest

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

	"github.com/moatdb/moat/internal/testenv"
)

// WaitTimeout bounds WaitText.
const WaitTimeout = 30 * time.Second

// Browser is one headless Chromium with a fresh profile (its own cookie
// jar), driven by a test.
type Browser struct {
	t     testing.TB
	ctx   context.Context
	shots string

	mu         sync.Mutex
	n          int
	violations []string
}

// New starts a browser for t that gives up after timeout. Screenshots go
// to $MOAT_ARTIFACTS/name, else to a temporary directory. It skips (or
// fails under CI=true) without chromium, and skips in -short mode. The
// browser ends, and CSP violations and script exceptions fail t, when t
// ends.
func New(t testing.TB, name string, timeout time.Duration) *Browser {
	t.Helper()
	chromium := testenv.MustHaveCommand(t, "chromium")
	testenv.MustNotBeShort(t, "starts a browser")
	shots := os.Getenv("MOAT_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	} else {
		shots = filepath.Join(shots, name)
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
		// The test servers' certificates are their own; the console is
		// still served over HTTPS (Secure cookies, a secure context).
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	b := &Browser{t: t, ctx: ctx, shots: shots}
	t.Cleanup(func() {
		cancelT()
		cancel()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, v := range b.violations {
			t.Errorf("browser: %s", v)
		}
		t.Logf("screenshots in %s", shots)
	})
	if err := chromedp.Listen(ctx, b.listen); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *Browser) listen(ev any) {
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
		b.mu.Lock()
		b.violations = append(b.violations, text)
		b.mu.Unlock()
	}
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

// Dir is where the screenshots go.
func (b *Browser) Dir() string { return b.shots }

// Run runs the actions of one step; on failure it stops the test with the
// step's name, the page's address and its main element.
func (b *Browser) Run(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		html, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("main")?.outerHTML || document.body.outerHTML`))
		b.t.Fatalf("%s: %v (at %s)\n%s", step, err, loc, html)
	}
}

// Location is the current page's address.
func (b *Browser) Location() string {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return loc
}

// Text is the text of the first element sel selects ("" if none).
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q)?.textContent || ""`, sel)))
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// Shot saves a full-page screenshot as NN-name.png.
func (b *Browser) Shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.n++
		n := b.n
		b.mu.Unlock()
		return os.WriteFile(filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", n, name)), buf, 0o644)
	})
}

// WaitText waits (at most WaitTimeout) until the text of the element sel
// selects holds want; it asks again when a navigation replaced the page
// under the question.
func WaitText(sel, want string) chromedp.Action[chromedp.Void] {
	expr := fmt.Sprintf(`(document.querySelector(%q)?.textContent || "").includes(%q)`, sel, want)
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		deadline := time.Now().Add(WaitTimeout)
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

// Clear empties an input the user typed into (chromedp.Clear resets only
// what the page's HTML set).
func Clear(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%q).value = "") === ""`, sel))(ctx, tg)
		return err
	})
}

// WaitHTMX waits (at most WaitTimeout) until htmx has processed the
// element sel selects (its triggers are listening): typing into an input
// htmx has just swapped in, before that, fires no request.
func WaitHTMX(sel string) chromedp.Action[chromedp.Void] {
	expr := fmt.Sprintf(`(() => { const d = document.querySelector(%q)?.["htmx-internal-data"]; return !!(d && d.initHash); })()`, sel)
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		deadline := time.Now().Add(WaitTimeout)
		for {
			ok, err := chromedp.Evaluate[bool](expr)(ctx, tg)
			if err == nil && ok {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("wait for htmx to process %s: last %v, %v", sel, ok, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}
