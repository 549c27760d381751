package e2e

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/apitype"
)

// TestDetachCutsSessions: a client in the customer's peered VPC, idle in
// an open transaction, loses its session within a second of a detach,
// although the public allowlist (0.0.0.0/0) covers its address: the
// address it connected to is no longer the node's. Attached again, a new
// session is cut within a second of the peering's deletion (its CIDR
// leaves the node's access).
//
// Serial: it times a promise of one second in wall time, so it runs
// alone, before the parallel tests (doc.go).
func TestDetachCutsSessions(t *testing.T) {
	e := start(t, "", "")
	e.newProject("cut")
	ctx := e.ctx()
	sc := e.seed("held")
	svc := e.attach(sc.svc.ID, sc.vpc.ID)
	pcx, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: sc.vpc.ID, PeerAccountID: sc.acct.ID, PeerVPCID: sc.cvpc.ID, PeerRegion: sc.cvpc.Region, PeerCIDRs: []string{"172.31.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	pcx = e.waitPeering(pcx.ID, "pending-acceptance")
	if _, err := e.stack.Sim.Accept(ctx, pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(pcx.ID, "active")
	if _, err := e.stack.Sim.AddRoute(ctx, sc.cvpc.ID, "10.0.0.0/17", pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.stack.Sim.AddEgress(ctx, sc.cust.Name, "tcp", 5432, "10.0.0.0/17"); err != nil {
		t.Fatal(err)
	}

	mgmt, pid := e.holdSession(sc, svc)
	svc = e.detach(svc.ID)
	if svc.VPCID != "" {
		t.Fatalf("after detach: attached to %s", svc.VPCID)
	}
	e.waitSessionGone(mgmt, pid, time.Now(), "the detach")

	// Attached again, the customer holds a new session; deleting the
	// peering (its CIDR leaves the node's access) cuts it as fast.
	svc = e.attach(svc.ID, sc.vpc.ID)
	mgmt, pid = e.holdSession(sc, svc)
	if _, err := e.op.DeletePeering(ctx, e.project, pcx.ID); err != nil {
		t.Fatal(err)
	}
	e.waitSessionGone(mgmt, pid, time.Now(), "the peering's deletion")
}

// holdSession starts the customer's client: psql holding a transaction
// open (its stdin stays open until the test ends); it returns a
// management connection to svc's node and the session's backend pid.
func (e *env) holdSession(sc scene, svc apitype.Service) (*pgx.Conn, int32) {
	e.t.Helper()
	ctx := e.ctx()
	// The node may enforce the peering's access a moment after the
	// customer's route and egress rule exist: wait until the customer
	// reaches it, so that the held session is not a connection refused.
	var r result
	waitFor(e.t, 20*time.Second, func() bool {
		r = e.psql(sc.cust.Name, sc.pw, e.conninfo(svc, "")+" connect_timeout=1", "-c", "select 1")
		return r.code == 0
	})
	if r.code != 0 {
		e.t.Fatalf("the customer does not reach the service: %v", r)
	}
	stdin, feed := io.Pipe()
	e.t.Cleanup(func() { feed.Close() })
	cctx, cancel := context.WithCancel(ctx)
	e.t.Cleanup(cancel)
	go e.stack.Sim.Exec(cctx, sc.cust.Name, []string{"env", "PGPASSWORD=" + sc.pw, "psql", "-X", "-At", e.conninfo(svc, "")}, stdin, io.Discard, io.Discard)
	go fmt.Fprintln(feed, "BEGIN; CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1);")

	mgmt := e.nodeConn(svc.NodeList[0].ID)
	var pid int32
	waitFor(e.t, 20*time.Second, func() bool {
		err := mgmt.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'
			AND client_addr << '172.31.0.0/16' AND state = 'idle in transaction'`).Scan(&pid)
		return err == nil
	})
	if pid == 0 {
		e.t.Fatal("the customer's session is not idle in its transaction")
	}
	return mgmt, pid
}

// waitSessionGone fails the test unless the backend pid ends within a
// second of since (when what, which removed its access, completed).
func (e *env) waitSessionGone(mgmt *pgx.Conn, pid int32, since time.Time, what string) {
	e.t.Helper()
	ctx := e.ctx()
	var gone time.Duration
	waitUntil(5*time.Second, func() bool {
		var n int
		if err := mgmt.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil || n != 0 {
			return false
		}
		gone = time.Since(since)
		return true
	})
	switch {
	case gone == 0:
		e.t.Errorf("the customer's session (pid %d) still runs 5s after %s, want it ended within 1s", pid, what)
	case gone > time.Second:
		e.t.Errorf("the customer's session (pid %d) ended %v after %s, want within 1s", pid, gone, what)
	default:
		e.t.Logf("session cut %v after %s completed", gone, what)
	}
}

// nodeConn is a superuser connection to node's PostgreSQL over its Unix
// socket (peer authentication as root), closed when the test ends.
func (e *env) nodeConn(node string) *pgx.Conn {
	e.t.Helper()
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = filepath.Join(e.nodeDir(node), "run"), 5432, "postgres", "postgres"
	conn, err := pgx.ConnectConfig(e.ctx(), cfg)
	if err != nil {
		e.t.Fatalf("management connection to %s: %v", node, err)
	}
	e.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}
