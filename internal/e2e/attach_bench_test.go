package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// BenchmarkAttachUnavailability measures what a client sees while a
// service moves between the internet and a VPC: a writer on a peered
// customer host commits one row per connection, following the service by
// name (private name first, then public); the unavailability of one attach
// or detach is the time from the last commit before the operation's switch
// to the first commit after it. p50 over 10 attaches and 10 detaches. The
// reference is the writer's own commit interval when nothing moves.
// Run: ./bench/attach/run.sh
// benchRounds is how many rounds an e2e benchmark measures:
// MOAT_BENCH_ROUNDS, else 10.
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("MOAT_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// haBenchService creates the 3-node service "ha" the failover benchmarks
// write to, waits until both replicas are in quorum and creates the
// writer's table w; it returns the service and its admin password.
func (e *env) haBenchService(b *testing.B) (apitype.Service, string) {
	e.newProject("bench")
	created, pw := e.createService("ha", 3)
	svc := e.waitReplicated(created.ID, domain.ReplQuorum, 2)
	if r := e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "create table w (id int primary key)"); r.code != 0 {
		b.Fatalf("create table: %v", r)
	}
	return svc, pw
}

func BenchmarkAttachUnavailability(b *testing.B) {
	e := start(b, "", "")
	e.newProject("bench")
	ctx := e.ctx()
	sc := e.seed("moving")
	vpc, svc, pw, acct, cvpc, cust := sc.vpc, sc.svc, sc.pw, sc.acct, sc.cvpc, sc.cust
	pcx, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: vpc.ID, PeerAccountID: acct.ID, PeerVPCID: cvpc.ID, PeerRegion: cvpc.Region, PeerCIDRs: []string{"172.31.0.0/16"}})
	if err != nil {
		b.Fatal(err)
	}
	pcx = e.waitPeering(pcx.ID, "pending-acceptance")
	e.stack.Sim.Accept(ctx, pcx.CloudPeeringID)
	e.waitPeering(pcx.ID, "active")
	e.stack.Sim.AddRoute(ctx, cvpc.ID, "10.0.0.0/17", pcx.CloudPeeringID)
	e.stack.Sim.AddEgress(ctx, cust.Name, "tcp", 5432, "10.0.0.0/17")
	public := svc.Connection.Host
	private := strings.Replace(public, "."+svc.ProjectID+".", "."+svc.ProjectID+".vpc.", 1)

	w := e.startWriter(cust.Name, pw, private, public)
	time.Sleep(time.Second)
	var attach, detach []time.Duration
	for range benchRounds() {
		for _, dir := range []string{"attach", "detach"} {
			before := time.Now()
			if dir == "attach" {
				e.attach(svc.ID, vpc.ID)
			} else {
				e.detach(svc.ID)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !w.after(time.Now()) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			gap := w.gapSince(before)
			if dir == "attach" {
				attach = append(attach, gap)
			} else {
				detach = append(detach, gap)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	steady := w.interval()
	acked, _ := w.stop()
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	fmt.Fprintf(os.Stderr, "\n%-34s p50 %8s  max %8s  (n=%d)\n", "attach unavailability", med(attach).Round(time.Millisecond), slices.Max(attach).Round(time.Millisecond), len(attach))
	fmt.Fprintf(os.Stderr, "%-34s p50 %8s  max %8s  (n=%d)\n", "detach unavailability", med(detach).Round(time.Millisecond), slices.Max(detach).Round(time.Millisecond), len(detach))
	fmt.Fprintf(os.Stderr, "%-34s p50 %8s\n", "reference: commit interval at rest", steady.Round(time.Millisecond))
	fmt.Fprintf(os.Stderr, "%-34s %.1fx / %.1fx (attach / detach p50)\n", "ratio", float64(med(attach))/float64(steady), float64(med(detach))/float64(steady))
	fmt.Fprintf(os.Stderr, "%-34s %d\n", "rows committed", len(acked))
	b.ReportMetric(float64(med(attach).Milliseconds()), "attach-p50-ms")
	b.ReportMetric(float64(med(detach).Milliseconds()), "detach-p50-ms")
}
