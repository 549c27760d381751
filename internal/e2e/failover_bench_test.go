package e2e

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
)

// BenchmarkFailoverUnavailability measures what a writer sees when a
// 3-node service fails over: a writer on the laptop commits one row per
// connection through the multi-host connection string
// (target_session_attrs=read-write). Unplanned: the primary's PostgreSQL
// dies for good (data directory gone, postmaster killed); requested: POST
// .../failover on a healthy service. The unavailability of one round is
// the time from the writer's last commit before the fault to its first
// after; between rounds the service recovers fully (the replacement
// streams). Reference: the writer's median commit interval. Rows lost
// are counted at the end (must be 0). Policy: fastFailover (2 s grace).
// Run: ./bench/failover/run.sh (MOAT_BENCH_ROUNDS, default 10).
func BenchmarkFailoverUnavailability(b *testing.B) {
	rounds := benchRounds()
	e := startFailoverTB(b, "", "")
	svc, pw := e.haBenchService(b)
	var conninfo atomic.Value
	conninfo.Store(e.multiHost(svc))
	w := e.startHAWriter(pw, func() string { return conninfo.Load().(string) })
	waitFor(b, 30*time.Second, func() bool { return w.count() >= 20 })
	var unplanned, requested []time.Duration
	for i := range 2 * rounds {
		kind := "unplanned"
		if i%2 == 1 {
			kind = "requested"
		}
		old := primaryNode(b, svc)
		n := w.count()
		t0 := time.Now()
		if kind == "unplanned" {
			e.killPostgres(old)
		} else if _, err := e.op.FailoverService(e.ctx(), e.project, svc.ID); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 2*time.Minute, func() bool { return w.count() > n && w.gapAround(t0) > 0 })
		gap := w.gapAround(t0)
		e.waitFailoverDone(svc.ID, old.ID)
		svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
		conninfo.Store(e.multiHost(svc))
		if kind == "unplanned" {
			unplanned = append(unplanned, gap)
		} else {
			requested = append(requested, gap)
		}
		b.Logf("round %d %s: unavailable %v", i/2+1, kind, gap)
	}
	b.Logf("failed attempts: %v", w.failures())
	acked, _, normal := w.halt()
	lost := e.lostRows(svc, pw, "w", acked)
	p50 := func(ds []time.Duration) time.Duration { return median(ds) }
	fmt.Printf("| unplanned (primary's PostgreSQL lost), n=%d | %v | %v | %v | %.1f× |\n", len(unplanned), p50(unplanned).Round(time.Millisecond), slices.Max(unplanned).Round(time.Millisecond), normal.Round(time.Millisecond), float64(p50(unplanned))/float64(normal))
	fmt.Printf("| requested failover, n=%d | %v | %v | %v | %.1f× |\n", len(requested), p50(requested).Round(time.Millisecond), slices.Max(requested).Round(time.Millisecond), normal.Round(time.Millisecond), float64(p50(requested))/float64(normal))
	fmt.Printf("rows acknowledged %d, lost %d\n", len(acked), lost)
	if lost > 0 {
		b.Errorf("%d acknowledged rows lost", lost)
	}
}

// waitFailoverDone waits until the failover that replaced old succeeded.
func (e *env) waitFailoverDone(id, old string) {
	e.t.Helper()
	waitFor(e.t, 3*time.Minute, func() bool {
		ops, err := e.op.ListOperations(e.ctx(), e.project, id)
		if err != nil {
			e.t.Fatal(err)
		}
		s, err := e.op.GetService(e.ctx(), e.project, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if s.OperationID != "" {
			return false
		}
		for _, o := range ops {
			if o.Type == domain.OpServiceFailover && o.State == domain.StateFailed {
				e.t.Fatalf("failover failed: %+v", o)
			}
		}
		return primaryNode(e.t, s).ID != old
	})
}
