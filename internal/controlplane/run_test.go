package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/testenv"
)

// idleProvider is a provider for a control plane with nothing to place:
// the reconciler runs but never calls it (any call would panic).
type idleProvider struct{ provider.Provider }

// TestRunStopsEverything: a control plane with its reconciler serves a
// request, stops when its context ends with no error, and leaves no
// goroutine behind (listener, checkpoint loop, reconciler, long polls).
func TestRunStopsEverything(t *testing.T) {
	testenv.CheckGoroutines(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", Provider: idleProvider{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()

	tok, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: cp.URL(), Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "acme"}); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
