package localcloud_test

import (
	"context"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/localcloud"
)

// TestSetLinks: a cut host reaches nothing and nothing reaches it; restored,
// it answers again with its address and routes as they were.
func TestSetLinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCloud(t)
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	laptop, _ := addHost(t, c, "laptop", localcloud.Internet(localcloud.SimPool))
	node, nodeAddr := addHost(t, c, "node1", localcloud.Internet(localcloud.PublicPool))
	listen(t, c, node.NS)
	if err := dial(t, c, laptop.NS, nodeAddr); err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	if n, err := c.SetLinks(ctx, node.NS, false); err != nil || n != 1 {
		t.Fatalf("SetLinks(down) = %d, %v; want 1 port", n, err)
	}
	if err := dial(t, c, laptop.NS, nodeAddr); err == nil {
		t.Error("laptop reached the cut node")
	}
	if n, err := c.SetLinks(ctx, node.NS, true); err != nil || n != 1 {
		t.Fatalf("SetLinks(up) = %d, %v; want 1 port", n, err)
	}
	var err error
	for start := time.Now(); time.Since(start) < 5*time.Second; {
		if err = dial(t, c, laptop.NS, nodeAddr); err == nil {
			t.Logf("reachable %s after restoring", time.Since(start))
			break
		}
	}
	if err != nil {
		t.Errorf("after restoring: %v", err)
	}
	if n, err := c.SetLinks(ctx, c.HostNS("gone"), false); err != nil || n != 0 {
		t.Errorf("SetLinks of a missing namespace = %d, %v; want 0, nil", n, err)
	}
}
