package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/sim"
	"github.com/moatdb/moat/internal/up"
)

// TestFourStages is the seed's private-networking story end to end, on real
// namespaces and real psql: a VPC, a service attached to it, a peering the
// customer accepts, the customer's route and security group, the refusals
// from everywhere else, and a detach back to public — with a writer that
// loses no committed row through the detach and the re-attach, and a
// peering deletion that cuts the customer at once.
func TestFourStages(t *testing.T) {
	t.Parallel()
	e := start(t, "", "")
	e.newProject("acme")
	ctx := e.ctx()
	laptop := up.LaptopHost

	// Stage 1: a VPC 10.0.0.0/17, a service on the internet, and the
	// customer: a VPC 172.31.0.0/16 with a host.
	sc := e.seed("orders")
	vpc, svc, pw, acct, cvpc, cust := sc.vpc, sc.svc, sc.pw, sc.acct, sc.cvpc, sc.cust
	publicName, publicAddr := svc.Connection.Host, svc.Connection.Address

	// Stage 3 (first half): attach. The laptop is refused, the public name
	// is gone, the private name resolves into the VPC.
	svc = e.attach(svc.ID, vpc.ID)
	privateName, privateAddr := svc.Connection.Host, svc.Connection.Address
	if !strings.Contains(privateName, ".vpc.") || !netip.MustParsePrefix("10.0.0.0/17").Contains(netip.MustParseAddr(privateAddr)) {
		t.Fatalf("attached connection = %+v, want a .vpc. name on 10.0.0.0/17", svc.Connection)
	}
	// The old public address answers, with an error naming the new host.
	if r := e.psql(laptop, pw, e.conninfo(svc, publicAddr), "-c", "select 1"); r.code == 0 || !strings.Contains(r.stderr, "moved: connect to "+privateName) {
		t.Errorf("laptop to the old public address after attach: %v, want an error naming %s", r, privateName)
	}
	if r := e.psql(laptop, pw, byName(e, publicName), "-c", "select 1"); r.code == 0 || !strings.Contains(r.stderr, "could not translate host name") {
		t.Errorf("public name after attach: %v, want it not to resolve", r)
	}
	if r := e.psql(laptop, pw, byName(e, privateName)+" connect_timeout=1", "-c", "select inet_server_addr()"); r.code == 0 {
		t.Errorf("laptop by the private name: %v, want no path", r)
	}

	// Stage 2: the peering. Pending: unreachable. Accepted: still
	// unreachable until the customer's route and egress rule exist.
	pcx, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: vpc.ID, PeerAccountID: acct.ID, PeerVPCID: cvpc.ID, PeerRegion: cvpc.Region, PeerCIDRs: []string{"172.31.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	pcx = e.waitPeering(pcx.ID, "pending-acceptance")
	custPSQL := func() result { return e.psql(cust.Name, pw, byName(e, privateName), "-c", "select inet_server_addr()") }
	if r := custPSQL(); r.code == 0 {
		t.Errorf("customer before acceptance: %v", r)
	}
	if _, err := e.stack.Sim.Accept(ctx, pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(pcx.ID, "active")
	if r := custPSQL(); r.code == 0 {
		t.Errorf("customer after acceptance, without a route: %v", r)
	}
	if _, err := e.stack.Sim.AddRoute(ctx, cvpc.ID, "10.0.0.0/17", pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	if r := custPSQL(); r.code == 0 {
		t.Errorf("customer with a route but no egress rule: %v", r)
	}
	if _, err := e.stack.Sim.AddEgress(ctx, cust.Name, "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}
	var r result
	waitFor(t, 5*time.Second, func() bool { r = custPSQL(); return r.code == 0 })
	if r.code != 0 || r.stdout != privateAddr {
		t.Fatalf("customer over the accepted peering: %v, want the server at %s", r, privateAddr)
	}

	// Stage 3 (second half): a second customer VPC that is not peered, and
	// the peered customer over the internet through its NAT, are refused.
	acct2, _ := e.stack.Sim.CreateAccount(ctx)
	cvpc2 := e.customerVPC(acct2.ID, "172.30.0.0/16")
	other, err := e.stack.Sim.CreateHost(ctx, "other", cvpc2.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.stack.Sim.AddEgress(ctx, other.Name, "tcp", 5432, "10.0.0.0/17")
	if r := e.psql(other.Name, pw, e.conninfo(svc, privateAddr)+" connect_timeout=1", "-c", "select 1"); r.code == 0 {
		t.Errorf("an unpeered customer VPC reached the service: %v", r)
	}
	if r := e.psql(cust.Name, pw, e.conninfo(svc, publicAddr)+" connect_timeout=1", "-c", "select 1"); r.code == 0 {
		t.Errorf("the customer reached the service over the internet: %v", r)
	}

	// Stage 4: detach, with a writer on the customer host that follows the
	// service by name; then attach again under the same writer.
	w := e.startWriter(cust.Name, pw, privateName, publicName)
	time.Sleep(300 * time.Millisecond)
	svc = e.detach(svc.ID)
	if svc.VPCID != "" || svc.Connection.Host != publicName {
		t.Errorf("after detach: %+v, want public %s", svc.Connection, publicName)
	}
	waitFor(t, 10*time.Second, func() bool { return w.after(time.Now().Add(-50 * time.Millisecond)) })
	if t.Failed() {
		t.Logf("customer to the public name after detach: %v", e.psql(cust.Name, pw, byName(e, publicName), "-c", "select inet_server_addr()"))
		t.Logf("laptop to the public name after detach: %v", e.psql(laptop, pw, byName(e, publicName), "-c", "select inet_server_addr()"))
	}
	svc = e.attach(svc.ID, vpc.ID)
	waitFor(t, 10*time.Second, func() bool { return w.after(time.Now().Add(-50 * time.Millisecond)) })
	acked, gap := w.stop()
	t.Logf("writer: %d rows acknowledged through the detach and the attach; longest gap between commits %v", len(acked), gap)
	count := e.psql(cust.Name, pw, byName(e, privateName), "-c", "select count(*) from w where v = any('{"+joinInts(acked)+"}')")
	if count.code != 0 || count.stdout != fmt.Sprint(len(acked)) {
		t.Errorf("rows kept = %v, want all %d acknowledged", count, len(acked))
	}

	// After detach the laptop worked again (public); attached again it does not.
	if r := e.psql(laptop, pw, byName(e, publicName)+" connect_timeout=1", "-c", "select 1"); r.code == 0 {
		t.Errorf("laptop after re-attach: %v", r)
	}

	// Deleting the peering cuts the customer at once.
	if _, err := e.op.DeletePeering(ctx, e.project, pcx.ID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(pcx.ID, "deleted")
	if r := e.psql(cust.Name, pw, e.conninfo(svc, privateAddr)+" connect_timeout=1", "-c", "select 1"); r.code == 0 {
		t.Errorf("customer after the peering's deletion: %v", r)
	}
}

// scene is the seed's starting point: a provider VPC, a public service and
// a customer account with a VPC and a host in it.
type scene struct {
	vpc  apitype.VPC
	svc  apitype.Service
	pw   string
	acct sim.Account
	cvpc sim.VPC
	cust sim.Host
}

// seed builds the scene: VPC 10.0.0.0/17 (active), a running 1-node
// service named name, and customer VPC 172.31.0.0/16 with host "cust"
// (which resolves through the platform's DNS over its NAT).
func (e *env) seed(name string) scene {
	e.t.Helper()
	ctx := e.ctx()
	var sc scene
	vpc, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "main", Region: "us-east-1", CIDR: "10.0.0.0/17"})
	if err != nil {
		e.t.Fatal(err)
	}
	sc.vpc = e.waitVPC(vpc.ID, "active")
	sc.svc, sc.pw = e.createService(name, 1)
	if sc.acct, err = e.stack.Sim.CreateAccount(ctx); err != nil {
		e.t.Fatal(err)
	}
	sc.cvpc = e.customerVPC(sc.acct.ID, "172.31.0.0/16")
	if sc.cust, err = e.stack.Sim.CreateHost(ctx, "cust", sc.cvpc.ID); err != nil {
		e.t.Fatal(err)
	}
	return sc
}

// byName is a verify-full conninfo to name, resolved by the client's DNS.
func byName(e *env, name string) string {
	return fmt.Sprintf("host=%s port=5432 dbname=defaultdb user=moatadmin sslmode=verify-full sslrootcert=%s", name, e.caFile)
}

func (e *env) attach(svc, vpc string) apitype.Service {
	e.t.Helper()
	op, err := e.op.AttachService(e.ctx(), e.project, svc, apitype.AttachRequest{VPCID: vpc})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.finish(op)
}

func (e *env) detach(svc string) apitype.Service {
	e.t.Helper()
	op, err := e.op.DetachService(e.ctx(), e.project, svc)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.finish(op)
}

func (e *env) finish(op apitype.Operation) apitype.Service {
	e.t.Helper()
	done, err := e.op.WaitOperation(e.ctx(), e.project, op.ID, 10*time.Millisecond)
	if err != nil || done.State != "succeeded" {
		e.t.Fatalf("operation %s: %+v, %v", op.ID, done, err)
	}
	svc, err := e.op.GetService(e.ctx(), e.project, op.TargetID)
	if err != nil {
		e.t.Fatal(err)
	}
	if svc.State != "running" {
		e.t.Fatalf("service after %s: %s", op.Type, svc.State)
	}
	return svc
}

// writer commits one row per transaction from a sim host, reconnecting
// each time to whichever of the names answers.
type writer struct {
	mu    sync.Mutex
	acked []int
	times []time.Time
	last  time.Time
	gap   time.Duration
	quit  chan struct{}
	done  chan struct{}
}

func (e *env) startWriter(host, pw string, names ...string) *writer {
	e.t.Helper()
	conninfo := fmt.Sprintf("host=%s port=5432 dbname=defaultdb user=moatadmin sslmode=verify-full sslrootcert=%s connect_timeout=1", strings.Join(names, ","), e.caFile)
	// The first lookup through the customer's NAT has been seen to fail
	// with EAI_AGAIN now and then (under investigation, see issue 4's
	// notes); retry it so the test measures the writer, not that.
	var r result
	for try := 0; try < 5; try++ {
		if r = e.psql(host, pw, conninfo, "-c", "create table if not exists w (v int primary key)"); r.code == 0 {
			break
		}
		e.t.Logf("create table (try %d): %v", try+1, r)
	}
	if r.code != 0 {
		e.t.Fatalf("create table: %v", r)
	}
	w := &writer{quit: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.quit:
				return
			default:
			}
			var out bytes.Buffer
			code, err := e.stack.Sim.Exec(e.ctx(), host, []string{"env", "PGPASSWORD=" + pw, "psql", "-X", "-At", conninfo, "-c", fmt.Sprintf("insert into w values (%d)", i)}, nil, &out, nil)
			if err == nil && code == 0 {
				now := time.Now()
				w.mu.Lock()
				w.acked = append(w.acked, i)
				w.times = append(w.times, now)
				w.gap = max(w.gap, now.Sub(w.last))
				w.last = now
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// after reports whether a row was committed after t.
func (w *writer) after(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last.After(t)
}

// gapSince returns the longest time between consecutive commits from the
// last commit before t on.
func (w *writer) gapSince(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.times); i++ {
		if w.times[i].After(t) {
			gap = max(gap, w.times[i].Sub(w.times[i-1]))
		}
	}
	return gap
}

// interval returns the median time between consecutive commits.
func (w *writer) interval() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d []time.Duration
	for i := 1; i < len(w.times); i++ {
		d = append(d, w.times[i].Sub(w.times[i-1]))
	}
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

func (w *writer) stop() ([]int, time.Duration) {
	close(w.quit)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.gap
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
