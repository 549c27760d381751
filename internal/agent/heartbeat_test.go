package agent

import (
	"context"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// beatSource is a control plane with nothing for the host, recording the
// reports it gets.
type beatSource struct {
	reports chan apitype.HostReport
}

func (s beatSource) Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	<-ctx.Done()
	return apitype.HostDesired{}, ctx.Err()
}

func (s beatSource) Report(ctx context.Context, host string, r apitype.HostReport) error {
	select {
	case s.reports <- r:
	case <-ctx.Done():
	}
	return nil
}

// TestHeartbeat: an agent with no node reports at once and then every
// HeartbeatEvery, a report without nodes carrying its version.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	src := beatSource{reports: make(chan apitype.HostReport)}
	a := newAgent(Config{Host: "h", Source: src, DataDir: t.TempDir(), NoSync: true, Version: "v9", HeartbeatEvery: 20 * time.Millisecond}, newFakeHost().platform())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	start := time.Now()
	for i := range 3 {
		select {
		case r := <-src.reports:
			if r.AgentVersion != "v9" || len(r.Nodes) != 0 {
				t.Errorf("heartbeat %d = %+v, want no nodes and version v9", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeat %d did not come", i)
		}
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("3 heartbeats in %s, want them HeartbeatEvery (20ms) apart", took)
	}
	if v := Version(); v == "" {
		t.Error("Version() is empty")
	}
}
