package controlplane_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/metrics"
	"github.com/moatdb/moat/internal/metrics/promtest"
	"github.com/moatdb/moat/internal/testenv"
)

// TestMetricsServed: with MetricsListen the control plane serves
// /metrics on its own plain-HTTP listener; API requests are counted by
// route pattern and status, the reconciler's passes are counted, the
// exposition passes `promtool check metrics`, and Run stops the metrics
// server with everything else.
func TestMetricsServed(t *testing.T) {
	testenv.CheckGoroutines(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", Provider: idleProvider{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil after its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}()
	if !strings.HasPrefix(cp.MetricsURL(), "http://127.0.0.1:") {
		t.Fatalf("MetricsURL = %q, want http://127.0.0.1:PORT/metrics", cp.MetricsURL())
	}

	tok, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: cp.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"acme", "globex"} {
		if _, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: name}); err != nil {
			t.Fatalf("CreateProject %s: %v", name, err)
		}
	}
	if _, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "acme"}); err == nil {
		t.Fatal("CreateProject acme twice succeeded")
	}

	var body []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		body = scrape(t, cp.MetricsURL())
		// The reconciler's first pass after the projects may not have
		// ended yet.
		if bytes.Contains(body, []byte(`kind="project_ca"`)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`moat_api_requests_total{route="POST /v1/projects",status="201"} 2`,
		`moat_api_requests_total{route="POST /v1/projects",status="409"} 1`,
		`moat_api_request_duration_seconds_count{route="POST /v1/projects",status="201"} 2`,
		`moat_pki_certificate_expiry_timestamp_seconds{kind="api",node="",project=""} `,
		`moat_pki_certificate_expiry_timestamp_seconds{kind="internal_ca",node="",project=""} `,
		`moat_pki_certificate_expiry_timestamp_seconds{kind="project_ca",node="",project="proj-`,
		"go_goroutines ",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("scrape lacks %q:\n%s", want, grepMoat(body))
		}
	}
	if !bytes.Contains(body, []byte("\nmoat_reconcile_passes_total ")) || bytes.Contains(body, []byte("\nmoat_reconcile_passes_total 0\n")) {
		t.Errorf("no reconcile pass counted:\n%s", grepMoat(body))
	}

	promtest.CheckMetrics(t, body)
}

// TestMetricsPublicAddressRefused: a metrics address off loopback fails
// at start unless MetricsPublic, and binds nothing (the API address stays
// free).
func TestMetricsPublicAddressRefused(t *testing.T) {
	testenv.CheckGoroutines(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "not-an-address"} {
		cp, err := controlplane.New(context.Background(), controlplane.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", MetricsListen: addr})
		if err != nil {
			t.Fatal(err)
		}
		err = cp.Listen()
		cp.Store.Close()
		if err == nil {
			t.Fatalf("Listen with MetricsListen %q succeeded", addr)
		}
		if addr != "not-an-address" && !errors.Is(err, metrics.ErrPublicAddress) {
			t.Errorf("Listen with MetricsListen %q = %v, want metrics.ErrPublicAddress", addr, err)
		}
		if cp.URL() != "" {
			t.Errorf("MetricsListen %q: the API listener was bound (%s)", addr, cp.URL())
		}
	}
}

func scrape(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	return body
}

// grepMoat returns the moat_ lines of a scrape, for failure messages.
func grepMoat(body []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "moat_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
