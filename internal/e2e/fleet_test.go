package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// TestFleetFaults: moat up runs one agent process per host of the fleet,
// each heartbeating; the simulator's faults act on one host: a partition
// cuts its node off and its agent's heartbeats (the host goes down) while
// its processes keep running; a failure kills its agent (kept down) and
// its PostgreSQL; a whole AZ fails; recover brings every host back and the
// node answers again.
func TestFleetFaults(t *testing.T) {
	t.Parallel()
	e := startWith(t, "", "", fullFleet)
	e.newProject("acme")
	svc, pw := e.createService("db", 1)
	ok := func() result { return e.psql(up.LaptopHost, pw, e.conninfo(svc, ""), "-c", "select 1") }
	if r := ok(); r.code != 0 {
		t.Fatalf("psql before any fault: %v", r)
	}

	// The fleet: a host per AZ of each region, each its own agent process,
	// active and heartbeating; the node is on one of them.
	hosts, err := e.op.ListHosts(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var onNode apitype.Host
	for _, h := range hosts {
		names = append(names, h.Name)
		if h.State != domain.StateActive || h.LastHeartbeatAt.IsZero() || h.AgentVersion == "" {
			t.Errorf("host %+v: want active with a heartbeat and an agent version", h)
		}
		if pid := up.AgentPID(e.dir, h.Name); pid == 0 || pid == syscall.Getpid() {
			t.Errorf("host %s: agent pid %d, want a process of its own", h.Name, pid)
		}
		if h.Load == 1 {
			onNode = h
		}
	}
	if want := []string{"us-east-1a-1", "us-east-1b-1", "us-east-1c-1", "eu-west-1a-1", "eu-west-1b-1", "eu-west-1c-1"}; !slices.Equal(names, want) {
		t.Fatalf("hosts = %v, want %v", names, want)
	}
	if onNode.Name == "" {
		t.Fatal("no host runs the service's node")
	}
	host := onNode.Name
	agentPID := up.AgentPID(e.dir, host)
	postmaster := func() int {
		files, _ := filepath.Glob(filepath.Join(up.AgentDir(e.dir, host), "volumes", "*", "pgdata", "postmaster.pid"))
		for _, f := range files {
			if pid := pidOf(f); pid > 0 {
				return pid
			}
		}
		return 0
	}
	pm := postmaster()
	if pm == 0 {
		t.Fatal("no postmaster under the node's host")
	}

	// Partition: the node is unreachable, the host's heartbeats stop and
	// the control plane marks it down; its agent and PostgreSQL run on.
	if out := e.mustMoat("sim", "partition", "host", host, "-o", "json"); !strings.Contains(out, `"action": "partitioned"`) || !strings.Contains(out, svc.NodeList[0].ID) {
		t.Errorf("moat sim partition host = %s, want the node cut off", out)
	}
	if r := ok(); r.code == 0 {
		t.Errorf("psql to a partitioned host: %v, want a timeout", r)
	}
	waitFor(t, 2*domain.DefaultHostTimeout+10*time.Second, func() bool {
		h, err := e.op.GetHost(e.ctx(), host)
		return err == nil && h.State == domain.StateDown && h.StateInfo != nil && h.StateInfo.Code == domain.CodeHeartbeatLost
	})
	if up.AgentPID(e.dir, host) != agentPID || postmaster() != pm {
		t.Errorf("partition stopped processes: agent %d (was %d), postmaster %d (was %d)", up.AgentPID(e.dir, host), agentPID, postmaster(), pm)
	}
	if out := e.mustMoat("sim", "recover"); !strings.Contains(out, host) {
		t.Errorf("moat sim recover = %s, want %s recovered", out, host)
	}
	waitFor(t, 30*time.Second, func() bool {
		h, err := e.op.GetHost(e.ctx(), host)
		return err == nil && h.State == domain.StateActive
	})
	if r := ok(); r.code != 0 {
		t.Errorf("psql after the partition healed: %v", r)
	}

	// Failure: agent and PostgreSQL killed, the agent kept down.
	e.mustMoat("sim", "fail", "host", host)
	if syscall.Kill(agentPID, 0) == nil || syscall.Kill(pm, 0) == nil {
		t.Errorf("after fail host: agent %d or postmaster %d still runs", agentPID, pm)
	}
	if r := ok(); r.code == 0 {
		t.Errorf("psql to a failed host: %v", r)
	}
	time.Sleep(time.Second) // the supervisor polls the faults every 200 ms
	if pid := up.AgentPID(e.dir, host); pid != 0 {
		t.Errorf("failed host's agent restarted (pid %d) before recover", pid)
	}

	// A whole AZ: each of its hosts' agents.
	az := "eu-west-1b"
	if out := e.mustMoat("sim", "fail", "az", az, "-o", "value=hosts"); out != "[eu-west-1b-1]" {
		t.Errorf("moat sim fail az %s = %s, want its one host", az, out)
	}
	if pid := up.AgentPID(e.dir, "eu-west-1b-1"); pid != 0 {
		t.Errorf("agent of a failed AZ runs (pid %d)", pid)
	}
	if _, err := up.FailAZ(e.ctx(), e.dir, "mars-1a"); err == nil || !strings.Contains(err.Error(), "no host of this stack is in AZ") {
		t.Errorf("FailAZ(unknown) = %v", err)
	}

	// Recover: agents start again, the failed host's agent restarts
	// PostgreSQL, the node answers.
	if _, err := up.Recover(e.ctx(), e.dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return ok().code == 0 })
	// The supervisor restarts each agent on its own poll: await each.
	for _, h := range []string{host, "eu-west-1b-1"} {
		deadline := time.Now().Add(60 * time.Second)
		for up.AgentPID(e.dir, h) == 0 {
			if time.Now().After(deadline) {
				t.Errorf("host %s: no agent 60 s after recover", h)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// mustMoat runs the moat command on the stack (env.moat) and returns its
// output; it fails the test if the command fails.
func (e *env) mustMoat(args ...string) string {
	e.t.Helper()
	code, out, errb := e.moat(args...)
	if code != 0 {
		e.t.Fatalf("moat %s: exit %d: %s", strings.Join(args, " "), code, errb)
	}
	return strings.TrimSpace(out)
}

// pidOf is the live process of a pid file's first line, or 0.
func pidOf(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}
