package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// BenchmarkSwitchover measures planned switchovers (docs/design/0014):
// a writer commits one row per transaction through the service's
// multi-host string (re-read as nodes come and go) while, each round,
// the host of a 3-node service's primary is drained: a new node in the
// primary's AZ catches up, the primary switches over to it (the old one
// demoted by a fast shutdown, the new one promoted once it received all
// of the old one's WAL), the old node is wiped. Per round: the writer's
// unavailability (its longest gap between two commits from the drain
// on); the writer's median commit interval is the reference; rows lost
// at the end (must be 0). us-east-1 with two hosts per AZ. Run:
// MOAT_BENCH_ROUNDS=10 go test -run '^$' -bench Switchover -benchtime=1x ./internal/e2e.
func BenchmarkSwitchover(b *testing.B) {
	rounds := benchRounds()
	e := startHostFleet(b)
	svc, pw := e.haBenchService(b)
	conninfo, stop := e.followConninfo(svc.ID)
	w := e.startHAWriter(pw, conninfo)
	waitFor(b, 30*time.Second, func() bool { return w.count() >= 20 })
	var gaps []time.Duration
	for i := range rounds {
		svc = e.waitReplicated(svc.ID, domain.ReplQuorum, 2)
		old := primaryNode(b, svc)
		n := w.count()
		t0 := time.Now()
		if code, out, errb := e.moatAPI("host", "drain", old.Host); code != 0 {
			b.Fatalf("round %d: moat host drain %s: exit %d: %s%s", i+1, old.Host, code, out, errb)
		}
		svc = e.waitService(svc.ID, 3*time.Minute, func(s apitype.Service) bool {
			return left(s, old) && s.OperationID == "" && s.State == domain.StateRunning && streaming(s) == 2
		})
		waitFor(b, time.Minute, func() bool { return w.count() > n+5 })
		gaps = append(gaps, w.longestGapSince(t0))
		e.waitWiped(old)
		if code, out, errb := e.moatAPI("host", "activate", old.Host); code != 0 {
			b.Fatalf("round %d: moat host activate %s: exit %d: %s%s", i+1, old.Host, code, out, errb)
		}
		b.Logf("round %d: unavailable %v (primary %s on %s → %s on %s)", i+1, gaps[i], old.ID, old.Host, primaryNode(b, svc).ID, primaryNode(b, svc).Host)
	}
	stop()
	acked, _, normal := w.halt()
	lost := e.lostRows(svc, pw, "w", acked)
	fmt.Printf("| planned switchover (primary's host drained), n=%d | %v | %v | %v | %.1f× |\n", len(gaps), median(gaps).Round(time.Millisecond), slices.Max(gaps).Round(time.Millisecond), normal.Round(time.Millisecond), float64(median(gaps))/float64(normal))
	fmt.Printf("rows acknowledged %d, lost %d\n", len(acked), lost)
	if lost > 0 {
		b.Errorf("%d acknowledged rows lost", lost)
	}
}
