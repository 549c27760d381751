package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// beatSource is a control plane with nothing for the host, recording the
// reports it gets.
type beatSource struct {
	reports chan apitype.HostReport
	// heartbeatMillis, when set, is what the control plane asks for in
	// its first answer (revision 1).
	heartbeatMillis int64
}

func (s beatSource) Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	if s.heartbeatMillis > 0 && after < 1 {
		return apitype.HostDesired{Host: host, Revision: 1, HeartbeatMillis: s.heartbeatMillis}, nil
	}
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

// TestHeartbeatFollowsControlPlane: an agent without HeartbeatEvery
// heartbeats at the interval the control plane's desired state asks for.
func TestHeartbeatFollowsControlPlane(t *testing.T) {
	t.Parallel()
	src := beatSource{reports: make(chan apitype.HostReport), heartbeatMillis: 20}
	a := newAgent(Config{Host: "h", Source: src, DataDir: t.TempDir(), NoSync: true}, newFakeHost().platform())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-src.reports // the first, at once
	// The next may still wait for the default interval (1 s); after it
	// every heartbeat comes 20 ms apart.
	select {
	case <-src.reports:
	case <-time.After(10 * time.Second):
		t.Fatal("second heartbeat did not come")
	}
	start := time.Now()
	for range 5 {
		<-src.reports
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("5 heartbeats took %v, want them 20ms apart as the control plane asked (default %v)", took, domain.DefaultHeartbeatInterval)
	}
}

// slowSource answers every report after delay, counting the calls.
type slowSource struct {
	delay time.Duration
	calls atomic.Int32
}

func (s *slowSource) Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	<-ctx.Done()
	return apitype.HostDesired{}, ctx.Err()
}

func (s *slowSource) Report(ctx context.Context, host string, r apitype.HostReport) error {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHeartbeatDoesNotWaitForAnswer: a control plane that answers late
// delays no heartbeat, and the lease counts from the sending of each
// answered one: with answers taking 400 ms and heartbeats every 100 ms,
// the lease is never more than ~500 ms old (a heartbeat that waited for
// the previous answer would renew it only every 400 ms, from a sending
// up to 800 ms old).
func TestHeartbeatDoesNotWaitForAnswer(t *testing.T) {
	t.Parallel()
	src := &slowSource{delay: 400 * time.Millisecond}
	a := newAgent(Config{Host: "h", Source: src, DataDir: t.TempDir(), NoSync: true, HeartbeatEvery: 100 * time.Millisecond}, newFakeHost().platform())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Run(ctx) }()
	time.Sleep(time.Second)
	oldest := time.Duration(0)
	for range 20 {
		oldest = max(oldest, time.Since(a.lastContact()))
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	took := time.Since(start)
	if n := src.calls.Load(); n < int32(took/(200*time.Millisecond)) {
		t.Errorf("%d heartbeats in %v with answers taking 400ms, want one every 100ms (up to %d waiting)", n, took, maxHeartbeatsInFlight)
	}
	if oldest > 700*time.Millisecond {
		t.Errorf("lease renewed from a sending %v old, want at most ~500ms (answer 400ms + interval 100ms)", oldest)
	}
}
