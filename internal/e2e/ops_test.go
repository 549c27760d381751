package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/cli"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
	"github.com/moatdb/moat/internal/sim"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/up"
)

// TestOperatorAccess runs operator access end to end on one stack: Debian's
// ssh through `moat ops ssh` with an issued certificate runs commands in
// the node as the operator account, which can neither read the data nor
// log in to PostgreSQL; the host certificate is checked through the
// known-hosts file's @cert-authority line; a password, a plain key, a
// self-signed certificate, another principal, a revoked grant's
// certificate and one a second past its ValidBefore are refused, each in
// the tenant's audit log; the endpoint is filtered from every simulated
// internet host, a customer VPC host, another service's node and a peered
// customer host that reaches PostgreSQL; a revoked grant's session is cut
// within a second; a terminal session is recorded, stored sealed, listed
// with its duration and bytes, and replayed; `moat ops psql` is refused
// until the tenant's support grant and stops when it is revoked or
// expires; the tenant's `moat audit list` shows it all, `moat audit
// verify` passes, and the agent's spool is empty.
//
// Serial: it times promises of one and three seconds in wall time, so it
// runs alone, before the parallel tests (doc.go).
func TestOperatorAccess(t *testing.T) {
	testenv.MustHaveCommand(t, "ssh")
	// Support grants as short as a few seconds, to see one end by expiry.
	e := startWith(t, "", "", func(c *controlplane.Config) { c.SupportMinTTL = 5 * time.Second })
	e.newProject("ops")
	ctx := e.ctx()
	svc, _ := e.createService("db", 1)
	other, _ := e.createService("other", 1)
	node := svc.NodeList[0]
	admin, err := e.op.CreateToken(ctx, e.project, apitype.TokenCreate{Role: "admin", Name: "tenant"})
	if err != nil {
		t.Fatal(err)
	}
	bin, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Fatal(err)
	}
	psql := filepath.Join(strings.TrimSpace(string(bin)), "psql")

	// A command through Debian's ssh, as the operator account, inside the
	// node: no data files, no PostgreSQL.
	agentDir := up.AgentDir(e.dir, e.nodeHost(node.ID))
	dataDir := filepath.Join(agentDir, "volumes", node.ID, "pgdata")
	socketDir := filepath.Join(agentDir, "nodes", node.ID, "run")
	for _, p := range []string{dataDir, filepath.Join(dataDir, "PG_VERSION"), socketDir} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the node's files: %v", err)
		}
	}
	script := fmt.Sprintf(`id -un; ip -brief addr | grep -q %s && echo in-node; ls %s >/dev/null 2>&1 || echo no-data; `+
		`%s -X -At "host=%s port=5432 dbname=defaultdb user=moatadmin sslmode=require connect_timeout=3" -c 'select 1' </dev/null >/dev/null 2>&1 || echo no-tcp-login; `+
		`%s -X -At -h %s -U postgres -c 'select 1' </dev/null >/dev/null 2>&1 || echo no-socket-login`,
		node.Address, dataDir, psql, node.Address, psql, socketDir)
	code, out, errOut := e.moatAs("", "", "ops", "ssh", node.ID, "--reason", "INC-1: check the node", "--", script)
	if code != 0 {
		t.Fatalf("moat ops ssh = %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if got := strings.Fields(out); strings.Join(got, " ") != "moat-ops in-node no-data no-tcp-login no-socket-login" {
		t.Errorf("operator session printed %q, want the operator account inside the node, refused the data and PostgreSQL", out)
	}
	// pg_ctl status, which needs the data directory, is the agent's to run.
	if code, out, errOut := e.moatAs("", "", "ops", "ssh", node.ID, "--reason", "INC-1: check the node", "--", "moat-pg-status"); code != 0 || !strings.Contains(out, "server is running") {
		t.Errorf("moat-pg-status = %d %q %q, want the server running", code, out, errOut)
	}
	gs, err := e.op.ListOpsGrants(ctx, node.ID)
	if err != nil || len(gs) != 2 {
		t.Fatalf("grants = %+v, %v", gs, err)
	}
	// Debian's ssh: the pinned host certificate, every kind of bad
	// credential refused and in the tenant's log.
	e.checkCredentials(node.ID, admin.Secret)
	if gs, err = e.op.ListOpsGrants(ctx, node.ID); err != nil {
		t.Fatal(err)
	}
	earlier := map[string]bool{}
	for _, g := range gs {
		earlier[g.ID] = true
	}

	// Filtered from every simulated host and another service's node.
	endpoint := e.opsEndpoint(node.ID)
	_, port, _ := net.SplitHostPort(endpoint)
	acct, err := e.stack.Sim.CreateAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cvpc := e.customerVPC(acct.ID, "172.31.0.0/16")
	app, err := e.stack.Sim.CreateHost(ctx, "app", cvpc.ID)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := e.stack.Sim.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	probes := map[string]string{e.stack.Cloud.HostNS("n-" + strings.TrimPrefix(other.NodeList[0].ID, "node-")): "another service's node"}
	for _, h := range hosts {
		probes[h.NS] = "sim host " + h.Name + " (" + h.Network + ")"
	}
	for ns, who := range probes {
		for _, p := range []string{"22", port} {
			addr := net.JoinHostPort(node.Address, p)
			if err := e.probe(ns, addr); err != nil {
				t.Errorf("from %s, %s: %v", who, addr, err)
			}
		}
	}

	// A peered customer host, with its route and security group open,
	// reaches another service's PostgreSQL, never its operator endpoint.
	e.probePeered(other, cvpc, app, acct.ID)

	// Revocation cuts a live session within a second.
	done := make(chan int, 1)
	go func() {
		code, _, _ := e.moatAs("", "", "ops", "ssh", node.ID, "--reason", "INC-2: watch a long job", "--", "sleep 60")
		done <- code
	}()
	live := e.waitOpsSession(node.ID, func(s apitype.OpsSession) bool { return s.State == "active" && !earlier[s.GrantID] })
	t0 := time.Now()
	if _, err := e.op.RevokeOpsGrant(ctx, live.GrantID); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		took := time.Since(t0)
		t.Logf("revoked session ended %s after the revocation (ssh exit %d)", took, code)
		if took > time.Second || code == 0 {
			t.Errorf("revoked session ended after %s with exit %d, want within 1s and a failure", took, code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked session still runs after 10s")
	}
	e.waitOpsSession(node.ID, func(s apitype.OpsSession) bool { return s.ID == live.ID && s.CloseReason == ops.CloseRevoked })

	// A terminal session is recorded; moat ops replay prints it.
	rec := e.terminalSession(node.ID, "echo recorded-$((6*7))\nexit\n")
	e.waitOpsSession(node.ID, func(s apitype.OpsSession) bool { return s.ID == rec && s.Recordings == 1 })
	if code, out, errOut := e.moatAs("", "", "ops", "replay", rec, "--raw"); code != 0 || !strings.Contains(out, "recorded-42") || !strings.HasPrefix(out, `{"version":2`) {
		t.Errorf("moat ops replay = %d %q %q, want the asciicast v2 recording with the output", code, out, errOut)
	}

	// Data access: refused without the tenant's consent.
	query := "select current_user || ':' || pg_has_role(current_user, 'pg_read_all_data', 'member');\n"
	if code, _, errOut := e.moatAs("", query, "ops", "psql", node.ID, "--reason", "INC-3: slow queries"); code == 0 || !strings.Contains(errOut, "no active support grant") {
		t.Errorf("moat ops psql without a support grant = %d %q, want refused", code, errOut)
	}
	code, out, errOut = e.moatAs(admin.Secret, "", "support", "grant", "--ttl", "2h", "--reason", "ticket 77: slow queries", "-o", "id")
	if code != 0 {
		t.Fatalf("moat support grant = %d %q", code, errOut)
	}
	sg := strings.TrimSpace(out)
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, errOut = e.moatAs("", query, "ops", "psql", node.ID, "--reason", "INC-3: slow queries")
		if code == 0 && strings.Contains(out, "moat_support_") {
			break
		}
		last = fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
		if time.Now().After(deadline) {
			t.Fatalf("moat ops psql with a support grant: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out, ":true") {
		t.Errorf("support session %q: want a member of pg_read_all_data", out)
	}
	if code, _, errOut := e.moatAs("", "create table t (i int);\n", "ops", "psql", node.ID, "--reason", "INC-3: slow queries"); !strings.Contains(errOut, "read-only transaction") {
		t.Errorf("support session writing = %d %q, want a read-only refusal", code, errOut)
	}
	// A session open when the grant is revoked is ended, its role
	// dropped, and the next session refused.
	pg := e.nodeSuperuser(socketDir)
	go func() {
		code, _, _ := e.moatAs("", "select pg_sleep(60);\n", "ops", "psql", node.ID, "--reason", "INC-3: slow queries")
		done <- code
	}()
	e.waitSQL(pg, "select count(*) from pg_stat_activity where usename like 'moat\\_support\\_%'", "1")
	if code, _, errOut := e.moatAs(admin.Secret, "", "support", "revoke", sg); code != 0 {
		t.Fatalf("moat support revoke = %d %q", code, errOut)
	}
	select {
	case code := <-done:
		if code == 0 {
			t.Error("the support session ended well after its grant was revoked, want a failure")
		}
	case <-time.After(15 * time.Second):
		t.Error("the support session still runs 15s after its grant was revoked")
	}
	e.waitSQL(pg, "select count(*) from pg_roles where rolname like 'moat\\_support\\_%'", "0")
	if code, _, errOut := e.moatAs("", query, "ops", "psql", node.ID, "--reason", "INC-3: slow queries"); code == 0 || !strings.Contains(errOut, "no active support grant") {
		t.Errorf("moat ops psql after the support grant was revoked = %d %q, want refused", code, errOut)
	}

	// A support grant that ends by expiry ends data access the same way:
	// its session is ended, its role dropped, the next session refused.
	e.supportExpiry(node.ID, admin.Secret, pg, query)

	// Sessions are listed with how long they lasted and their bytes.
	code, out, errOut = e.moatAs("", "", "ops", "sessions", "--node", node.ID)
	if code != 0 || !strings.Contains(out, "DURATION") || !strings.Contains(out, "BYTES IN/OUT") {
		t.Errorf("moat ops sessions = %d %q %q, want DURATION and BYTES IN/OUT columns", code, out, errOut)
	}
	recorded := e.waitOpsSession(node.ID, func(s apitype.OpsSession) bool { return s.ID == rec })
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, rec+" ") {
			dur := (time.Duration(recorded.DurationMS) * time.Millisecond).String()
			bytes := fmt.Sprintf("%d/%d", recorded.BytesIn, recorded.BytesOut)
			if recorded.DurationMS <= 0 || recorded.BytesOut <= 0 || !strings.Contains(line, " "+dur+" ") || !strings.Contains(line, " "+bytes+" ") {
				t.Errorf("terminal session's row %q, want its duration %s and bytes %s (both non-zero)", line, dur, bytes)
			}
		}
	}
	// The recording is stored sealed with the control plane's key.
	if err := e.stack.CP.Store.View(ctx, func(tx store.Tx) error {
		b, err := tx.GetMeta(ctx, "ops_recording_"+rec+"_1")
		if err == nil && (bytes.Contains(b, []byte("recorded-42")) || bytes.Contains(b, []byte(`"version"`))) {
			t.Error("the recording is stored in the clear")
		}
		return err
	}); err != nil {
		t.Errorf("the stored recording: %v", err)
	}

	// The tenant sees it all; the chain is intact.
	code, out, errOut = e.moatAs(admin.Secret, "", "audit", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("moat audit list = %d %q", code, errOut)
	}
	for _, want := range []string{`"ops.grant.create"`, `INC-1: check the node`, `"ops.session.open"`, `"ops.exec"`, `id -un`, `"ops.session.close"`,
		`"ops.grant.revoke"`, `"support_grant.create"`, `"support_grant.revoke"`, `no_support_grant`, `support_grant=` + sg, `moat-psql`} {
		if !strings.Contains(out, want) {
			t.Errorf("the tenant's audit log lacks %s", want)
		}
	}
	if code, out, errOut := e.moatAs("", "", "audit", "verify"); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("moat audit verify = %d %q %q", code, out, errOut)
	}
	// Everything the agent spooled was sent, and every session closed.
	spool := filepath.Join(up.AgentDir(e.dir, e.nodeHost(node.ID)), "ops-spool")
	if _, err := os.Stat(filepath.Join(spool, "id")); err != nil {
		t.Errorf("the agent's spool: %v", err)
	}
	for _, pattern := range []string{"*.event", "open/*", "recordings/*"} {
		if left, err := filepath.Glob(filepath.Join(spool, pattern)); err != nil || len(left) != 0 {
			t.Errorf("left in the agent's spool: %v, %v", left, err)
		}
	}
}

// supportExpiry: a support grant of a few seconds lets ops psql in, and
// its end by expiry (no revocation) ends the open session, drops the role
// and refuses the next session.
func (e *env) supportExpiry(node, tenant string, pg *pgx.Conn, query string) {
	t := e.t
	t.Helper()
	code, out, errOut := e.moatAs(tenant, "", "support", "grant", "--ttl", "10s", "--reason", "ticket 78: short look", "-o", "json")
	if code != 0 {
		t.Fatalf("moat support grant --ttl 10s = %d %q", code, errOut)
	}
	var sg apitype.SupportGrant
	if err := json.Unmarshal([]byte(out), &sg); err != nil {
		t.Fatal(err)
	}
	for {
		code, out, errOut = e.moatAs("", query, "ops", "psql", node, "--reason", "INC-7: short look")
		if code == 0 && strings.Contains(out, domain.SupportRole(sg.ID)) {
			break
		}
		if time.Now().After(sg.ExpiresAt.Add(-3 * time.Second)) {
			t.Fatalf("moat ops psql with a support grant ending at %s: exit %d, stdout %q, stderr %q", sg.ExpiresAt, code, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("support role usable %s before the grant's end", time.Until(sg.ExpiresAt).Round(time.Millisecond))
	done := make(chan int, 1)
	go func() {
		code, _, _ := e.moatAs("", "select pg_sleep(60);\n", "ops", "psql", node, "--reason", "INC-7: short look")
		done <- code
	}()
	e.waitSQL(pg, "select count(*) from pg_stat_activity where usename = '"+domain.SupportRole(sg.ID)+"'", "1")
	select {
	case code := <-done:
		late := time.Since(sg.ExpiresAt)
		t.Logf("support session ended %s after the grant's expiry", late.Round(time.Millisecond))
		if code == 0 || late < 0 || late > 3*time.Second {
			t.Errorf("support session ended %s after the grant's expiry with exit %d, want within 3s and a failure", late, code)
		}
	case <-time.After(time.Until(sg.ExpiresAt) + 15*time.Second):
		t.Fatal("the support session still runs 15s after its grant expired")
	}
	e.waitSQL(pg, "select count(*) from pg_roles where rolname = '"+domain.SupportRole(sg.ID)+"'", "0")
	if code, _, errOut := e.moatAs("", query, "ops", "psql", node, "--reason", "INC-7: short look"); code == 0 || !strings.Contains(errOut, "no active support grant") {
		t.Errorf("moat ops psql after the support grant expired = %d %q, want refused", code, errOut)
	}
	code, out, errOut = e.moatAs(tenant, "", "support", "grants", "-o", "json")
	if code != 0 || !strings.Contains(out, `"id": "`+sg.ID+`"`) || !strings.Contains(out, `"state": "expired"`) {
		t.Errorf("moat support grants = %d %q %q, want %s expired", code, out, errOut, sg.ID)
	}
}

// nodeSuperuser connects to a node's PostgreSQL over its socket as the
// superuser, as the agent does (peer authentication maps root).
func (e *env) nodeSuperuser(socketDir string) *pgx.Conn {
	e.t.Helper()
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.TLSConfig, cfg.Fallbacks = socketDir, 5432, "postgres", "postgres", nil, nil
	conn, err := pgx.ConnectConfig(e.ctx(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitSQL waits until query's one value prints as want.
func (e *env) waitSQL(conn *pgx.Conn, query, want string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got any
		if err := conn.QueryRow(e.ctx(), query).Scan(&got); err != nil {
			e.t.Fatal(err)
		}
		if fmt.Sprint(got) == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s = %v, want %s", query, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// moatAs runs a moat API command with token (the operator's when "") and
// stdin.
func (e *env) moatAs(token, stdin string, args ...string) (int, string, string) {
	e.t.Helper()
	if token == "" {
		tok, err := os.ReadFile(filepath.Join(e.dir, controlplane.AdminTokenFile))
		if err != nil {
			e.t.Fatal(err)
		}
		token = strings.TrimSpace(string(tok))
	}
	// Before the command: what follows "--" is the remote command.
	args = append([]string{"--url=" + e.stack.CP.URL(), "--token=" + token,
		"--ca=" + filepath.Join(e.dir, controlplane.APICAFile), "--project=" + e.project}, args...)
	var out, errb bytes.Buffer
	code := cli.Main(e.ctx(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// opsEndpoint is the address of node's endpoint, from a grant.
func (e *env) opsEndpoint(node string) string {
	e.t.Helper()
	k, err := ops.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	g, err := e.op.CreateOpsGrant(e.ctx(), apitype.OpsGrantCreate{NodeID: node, Reason: "INC-0: endpoint address", PublicKey: k.AuthorizedKey()})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.op.RevokeOpsGrant(e.ctx(), g.Grant.ID); err != nil {
		e.t.Fatal(err)
	}
	return g.Endpoint
}

// probe checks that a TCP connection to addr from namespace ns gets no
// answer at all (filtered: neither accepted nor refused).
func (e *env) probe(ns, addr string) error {
	return e.stack.Cloud.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("connected")
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return fmt.Errorf("not filtered: %w", err)
	})
}

// probePeered attaches service svc to a new provider VPC peered with the
// customer's VPC cvpc (route and security group open to the ports), and
// probes svc's node from host: PostgreSQL connects, port 22 and the
// node's operator endpoint's port get no answer, so the node's own
// firewall is what filters them.
func (e *env) probePeered(svc apitype.Service, cvpc sim.VPC, host sim.Host, account string) {
	t := e.t
	t.Helper()
	ctx := e.ctx()
	vpc, err := e.op.CreateVPC(ctx, e.project, apitype.VPCCreate{Name: "ops-peered", Region: svc.Region, CIDR: "10.0.0.0/17"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitVPC(vpc.ID, "active")
	attached := e.attach(svc.ID, vpc.ID)
	node := attached.NodeList[0]
	pcx, err := e.op.CreatePeering(ctx, e.project, apitype.PeeringCreate{VPCID: vpc.ID, PeerAccountID: account, PeerVPCID: cvpc.ID, PeerRegion: cvpc.Region, PeerCIDRs: []string{cvpc.CIDR.String()}})
	if err != nil {
		t.Fatal(err)
	}
	pcx = e.waitPeering(pcx.ID, "pending-acceptance")
	if _, err := e.stack.Sim.Accept(ctx, pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	e.waitPeering(pcx.ID, "active")
	if _, err := e.stack.Sim.AddRoute(ctx, cvpc.ID, vpc.CIDR, pcx.CloudPeeringID); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(e.opsEndpoint(node.ID))
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	for _, open := range []int{5432, 22, p} {
		if _, err := e.stack.Sim.AddEgress(ctx, host.Name, "tcp", open, vpc.CIDR); err != nil {
			t.Fatal(err)
		}
	}
	pg := net.JoinHostPort(node.Address, "5432")
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.stack.Cloud.Do(host.NS, func() error {
			c, err := net.DialTimeout("tcp", pg, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("from peered host %s, PostgreSQL at %s: %v", host.Name, pg, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []string{"22", port} {
		addr := net.JoinHostPort(node.Address, p)
		if err := e.probe(host.NS, addr); err != nil {
			t.Errorf("from peered host %s, %s: %v", host.Name, addr, err)
		}
	}
}

// waitOpsSession waits for a session of node matching ok.
func (e *env) waitOpsSession(node string, ok func(apitype.OpsSession) bool) apitype.OpsSession {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		xs, err := e.op.ListOpsSessions(e.ctx(), node)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, x := range xs {
			if ok(x) {
				return x
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no matching operator session of %s among %+v", node, xs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// terminalSession runs input in a shell on a terminal with Go's client
// and returns the session's ID.
func (e *env) terminalSession(node, input string) string {
	e.t.Helper()
	ctx := e.ctx()
	k, err := ops.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	g, err := e.op.CreateOpsGrant(ctx, apitype.OpsGrantCreate{NodeID: node, Reason: "INC-4: look around", PublicKey: k.AuthorizedKey()})
	if err != nil {
		e.t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.Certificate))
	if err != nil {
		e.t.Fatal(err)
	}
	hostCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.HostCA))
	if err != nil {
		e.t.Fatal(err)
	}
	oc, err := ops.NewClient(k, pk.(*ssh.Certificate), hostCA, node)
	if err != nil {
		e.t.Fatal(err)
	}
	sc, err := oc.Dial(ctx, g.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer sc.Close()
	sess, err := sc.NewSession()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		e.t.Fatal(err)
	}
	var out bytes.Buffer
	sess.Stdin, sess.Stdout = strings.NewReader(input), &out
	if err := sess.Shell(); err != nil {
		e.t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			e.t.Errorf("terminal session: %v (output %q)", err, out.String())
		}
	case <-wctx.Done():
		e.t.Fatalf("terminal session did not end; output %q", out.String())
	}
	sc.Close() // the session (the connection) ends
	x := e.waitOpsSession(node, func(s apitype.OpsSession) bool { return s.GrantID == g.Grant.ID && s.State == "closed" })
	return x.ID
}

// opsUserCA is the operators' SSH CA of the stack's control plane,
// unsealed from its store: the test signs certificates the control plane
// never would, to see the node refuse them.
func (e *env) opsUserCA() *ops.CA {
	e.t.Helper()
	ctx := e.ctx()
	const name = "ops_user_ca_key"
	var sealed []byte
	if err := e.stack.CP.Store.View(ctx, func(tx store.Tx) (err error) {
		sealed, err = tx.GetMeta(ctx, name)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	key, err := e.stack.CP.Keys.Open(sealed, []byte(name))
	if err != nil {
		e.t.Fatal(err)
	}
	ca, err := ops.ParseCA(key)
	if err != nil {
		e.t.Fatal(err)
	}
	return ca
}

// opsGrant asks the control plane for a grant to node and returns the
// session's client with the issued certificate, and the answer.
func (e *env) opsGrant(node, reason string) (*ops.Client, apitype.OpsGrantIssued) {
	e.t.Helper()
	k, err := ops.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	g, err := e.op.CreateOpsGrant(e.ctx(), apitype.OpsGrantCreate{NodeID: node, Reason: reason, PublicKey: k.AuthorizedKey()})
	if err != nil {
		e.t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.Certificate))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.opsClient(k, pk.(*ssh.Certificate), g), g
}

func (e *env) opsClient(k *ops.Key, cert *ssh.Certificate, g apitype.OpsGrantIssued) *ops.Client {
	e.t.Helper()
	hostCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.HostCA))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := ops.NewClient(k, cert, hostCA, g.Grant.NodeID)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// signedFor is a client whose certificate is what the control plane
// issues for grant g, edited by edit and signed by signer (nil: the
// certificate's own key, self-signed).
func (e *env) signedFor(g apitype.OpsGrantIssued, signer ssh.Signer, edit func(*ssh.Certificate)) *ops.Client {
	e.t.Helper()
	k, err := ops.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	c := &ssh.Certificate{
		Key: k.PublicKey(), Serial: g.Grant.Serial, CertType: ssh.UserCert, KeyId: g.Grant.ID,
		ValidPrincipals: []string{domain.OpsPrincipal},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(g.Grant.ExpiresAt.Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: map[string]string{"source-address": strings.Join(g.Grant.SourceCIDRs, ",")},
			Extensions:      map[string]string{"permit-pty": ""},
		},
	}
	if edit != nil {
		edit(c)
	}
	if signer == nil {
		signer = k
	}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		e.t.Fatal(err)
	}
	return e.opsClient(k, c, g)
}

// sshRun runs Debian's ssh with c's session files (edited by edit) to
// endpoint; opts come first, so they win over OpenSSH.Args's.
func (e *env) sshRun(c *ops.Client, endpoint string, opts []string, edit func(*ops.OpenSSH), env []string, command ...string) (string, string, error) {
	e.t.Helper()
	bin, err := exec.LookPath("ssh")
	if err != nil {
		e.t.Fatal(err)
	}
	o, err := c.WriteOpenSSH(e.t.TempDir())
	if err != nil {
		e.t.Fatal(err)
	}
	defer o.Remove()
	if edit != nil {
		edit(o)
	}
	args, err := o.Args(endpoint, command...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append(opts, "-o", "BatchMode=yes"), args...)...)
	cmd.Env = append([]string{"HOME=" + o.Dir, "PATH=/usr/bin:/bin"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// tenantAudit is the tenant's `moat audit list`, as JSON.
func (e *env) tenantAudit(token string) []apitype.AuditEntry {
	e.t.Helper()
	code, out, errOut := e.moatAs(token, "", "audit", "list", "-o", "json")
	if code != 0 {
		e.t.Fatalf("moat audit list = %d %q", code, errOut)
	}
	var l struct {
		Items []apitype.AuditEntry `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		e.t.Fatalf("moat audit list -o json: %v", err)
	}
	return l.Items
}

// checkCredentials runs Debian's ssh against node's endpoint through the
// stack: the host certificate is verified through the @cert-authority line
// of the known-hosts file; an issued certificate logs in; a password, a
// plain key, a self-signed certificate, a certificate with another
// principal, one of a revoked grant and one a second past its ValidBefore
// are refused, and each refusal is in the tenant's audit log.
func (e *env) checkCredentials(node, tenant string) {
	t := e.t
	t.Helper()
	ca := e.opsUserCA()
	good, g := e.opsGrant(node, "INC-5: credential checks")
	// Valid for a few seconds: tried now, and a second after its end.
	expires := time.Now().Truncate(time.Second).Add(6 * time.Second)
	expiring := e.signedFor(g, ca, func(c *ssh.Certificate) { c.ValidBefore = uint64(expires.Unix()) })
	if out, errOut, err := e.sshRun(expiring, g.Endpoint, nil, nil, nil, "echo", "ok"); err != nil || out != "ok\n" {
		t.Fatalf("ssh with a certificate valid until %s = %q, %v; stderr %q", expires, out, err, errOut)
	}

	// The known-hosts file trusts the host CA for the node's name only,
	// and ssh checks it: another CA there and the host is refused.
	var known string
	out, errOut, err := e.sshRun(good, g.Endpoint, nil, func(o *ops.OpenSSH) {
		b, err := os.ReadFile(o.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		known = string(b)
	}, nil, "echo", "ok")
	if err != nil || out != "ok\n" {
		t.Fatalf("ssh with the issued certificate = %q, %v; stderr %q", out, err, errOut)
	}
	if want := "@cert-authority " + node + " " + g.HostCA; strings.TrimSpace(known) != want {
		t.Errorf("known hosts = %q, want only %q", known, want)
	}
	otherCA, err := ops.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, err = e.sshRun(good, g.Endpoint, nil, func(o *ops.OpenSSH) {
		if err := os.WriteFile(o.KnownHosts, []byte("@cert-authority "+node+" "+otherCA.AuthorizedKey()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, nil, "echo", "ok")
	if err == nil || !strings.Contains(errOut, "Host key verification failed") {
		t.Errorf("ssh pinning another host CA = %v %q, want Host key verification failed", err, errOut)
	}

	askpass := filepath.Join(t.TempDir(), "askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho hunter2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	refuse := func(name string, c *ops.Client, opts []string, edit func(*ops.OpenSSH), env []string) {
		t.Helper()
		out, errOut, err := e.sshRun(c, g.Endpoint, opts, edit, env, "echo", "in")
		if err == nil || out != "" || !strings.Contains(errOut, "Permission denied") {
			t.Errorf("ssh with %s = %q, %v; stderr %q; want Permission denied", name, out, err, errOut)
		}
	}
	refuse("a password", good, []string{"-o", "BatchMode=no", "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"},
		nil, []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"})
	refuse("a plain key", good, nil, func(o *ops.OpenSSH) { os.Remove(o.CertFile) }, nil)
	refuse("a self-signed certificate", e.signedFor(g, nil, nil), nil, nil, nil)
	refuse("another principal", e.signedFor(g, ca, func(c *ssh.Certificate) { c.ValidPrincipals = []string{"root"} }), nil, nil, nil)

	// A revoked grant's certificate: the revocation reaches the node with
	// its desired state, within a second.
	revoked, rg := e.opsGrant(node, "INC-6: a grant to revoke")
	if _, err := e.op.RevokeOpsGrant(e.ctx(), rg.Grant.ID); err != nil {
		t.Fatal(err)
	}
	for at, tries := time.Now(), 1; ; tries++ {
		out, errOut, err := e.sshRun(revoked, rg.Endpoint, nil, nil, nil, "echo", "in")
		if err != nil && strings.Contains(errOut, "Permission denied") {
			t.Logf("the revoked grant's certificate refused at try %d, %s after the revocation", tries, time.Since(at).Round(time.Millisecond))
			break
		}
		if time.Since(at) > time.Second {
			t.Fatalf("the revoked grant's certificate still logs in %s after the revocation: %q, %v, %q", time.Since(at), out, err, errOut)
		}
	}

	time.Sleep(time.Until(expires.Add(time.Second)))
	refuse("a certificate one second past its ValidBefore", expiring, nil, nil, nil)
	t.Logf("a certificate valid until %s: logged in before, refused %s after", expires.Format(time.TimeOnly), time.Since(expires).Round(time.Millisecond))

	// Each refusal is in the tenant's log, on the node.
	want := map[string]string{ops.ReasonPassword: "", ops.ReasonPlainKey: "", ops.ReasonUnknownCA: "", ops.ReasonWrongPrincipal: "",
		ops.ReasonRevoked: rg.Grant.ID, ops.ReasonExpired: g.Grant.ID}
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := map[string]bool{}
		for r := range want {
			missing[r] = true
		}
		for _, a := range e.tenantAudit(tenant) {
			for r, grant := range want {
				if a.Action == ops.ActionRefused && a.Outcome == domain.OutcomeDenied && a.Target == node &&
					strings.Contains(a.Detail, "reason="+strconv.Quote(r)) && strings.Contains(a.Actor, grant) {
					delete(missing, r)
				}
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tenant's audit log lacks the refusals %v", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
