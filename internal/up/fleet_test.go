package up

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// TestMain lets this test binary stand in for an agent process: called
// as "moat agent ...", it waits to be killed; and for a DNS server: called
// as "moat dns serve ...", it serves as that command does (see
// serveDNSForTest).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if len(os.Args) > 2 && os.Args[1] == "dns" && os.Args[2] == "serve" {
		os.Exit(serveDNSForTest(os.Args[3:]))
	}
	os.Exit(m.Run())
}

// TestFleet: one host per AZ of every region, named <az>-<i>.
func TestFleet(t *testing.T) {
	var got []string
	for _, h := range Fleet(domain.Catalog{}, 2) {
		got = append(got, h.Name+"@"+h.Region+"/"+h.AZ)
	}
	want := []string{"us-east-1a-1@us-east-1/us-east-1a", "us-east-1a-2@us-east-1/us-east-1a", "us-east-1b-1@us-east-1/us-east-1b", "us-east-1b-2@us-east-1/us-east-1b",
		"us-east-1c-1@us-east-1/us-east-1c", "us-east-1c-2@us-east-1/us-east-1c", "eu-west-1a-1@eu-west-1/eu-west-1a", "eu-west-1a-2@eu-west-1/eu-west-1a",
		"eu-west-1b-1@eu-west-1/eu-west-1b", "eu-west-1b-2@eu-west-1/eu-west-1b", "eu-west-1c-1@eu-west-1/eu-west-1c", "eu-west-1c-2@eu-west-1/eu-west-1c"}
	if !slices.Equal(got, want) {
		t.Errorf("Fleet(default, 2) = %v, want %v", got, want)
	}
}

// TestNotReady: a stack is ready once every host of its fleet heartbeat
// since it started, but the hosts the simulator failed or partitioned
// (their agents are kept down or cut off): a stack restarted with a
// failed host does not wait for it.
func TestNotReady(t *testing.T) {
	since := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fleet := Fleet(domain.Catalog{Regions: domain.DefaultCatalog().Regions[:1]}, 1)
	hosts := []apitype.Host{
		{Name: "us-east-1a-1", State: domain.StateActive, LastHeartbeatAt: since.Add(time.Second)},
		{Name: "us-east-1b-1", State: domain.StateActive, LastHeartbeatAt: since.Add(-time.Second)},
		{Name: "us-east-1c-1", State: domain.StateDown, LastHeartbeatAt: since.Add(time.Second)},
	}
	for _, tc := range []struct {
		name   string
		faults Faults
		want   []string
	}{
		{"no fault", Faults{}, []string{"us-east-1b-1", "us-east-1c-1"}},
		{"one failed", Faults{Failed: []string{"us-east-1b-1"}}, []string{"us-east-1c-1"}},
		{"failed and partitioned", Faults{Failed: []string{"us-east-1b-1"}, Partitioned: []string{"us-east-1c-1"}}, nil},
	} {
		if got := notReady(fleet, hosts, tc.faults, since); !slices.Equal(got, tc.want) {
			t.Errorf("%s: notReady = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLegacyHost: a data directory with the agent of a moat up before
// the fleet keeps that host, "local", beside the fleet.
func TestLegacyHost(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fleet := Fleet(domain.Catalog{}, 1)
	if got := withLegacy(dir, domain.Catalog{}, fleet); len(got) != len(fleet) {
		t.Errorf("withLegacy without a legacy agent = %d hosts, want %d", len(got), len(fleet))
	}
	if err := os.MkdirAll(AgentDir(dir, LegacyHost), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent", "agent-state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := withLegacy(dir, domain.Catalog{}, fleet)
	if len(got) != len(fleet)+1 || got[len(fleet)] != (FleetHost{Name: "local", Region: "us-east-1", AZ: "us-east-1a"}) {
		t.Errorf("withLegacy = %+v, want the fleet and local in us-east-1a", got)
	}
}

// TestStopAgents: the agents a data directory's record names are stopped
// (a moat up killed before it could stop them); a recorded pid now used by
// another process is left alone.
func TestStopAgents(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	agent := &exec.Cmd{Path: exe, Args: []string{"moat", "agent", "--server", "https://x", "--host", "h1"}}
	other := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{agent, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	exited := make(chan struct{})
	go func() { agent.Wait(); close(exited) }()
	dir := t.TempDir()
	if err := putRecord(dir, Record{Prefix: "moat-x-", Agents: map[string]int{"h1": agent.Process.Pid, "h2": other.Process.Pid}}); err != nil {
		t.Fatal(err)
	}
	if AgentPID(dir, "h1") != agent.Process.Pid || AgentPID(dir, "h2") != 0 {
		t.Errorf("AgentPID = %d, %d; want the agent's and 0 for a process that is not h2's agent", AgentPID(dir, "h1"), AgentPID(dir, "h2"))
	}
	if n := stopAgents(context.Background(), dir, 5*time.Second); n != 1 {
		t.Errorf("stopAgents = %d, want 1", n)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the recorded agent still runs")
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Errorf("a process that reused a recorded pid was stopped: %v", err)
	}
}

// TestHostLink: the relay passes the API through until the host is
// partitioned (or failed), then drops its connections and refuses new
// ones; recovered, it passes again.
func TestHostLink(t *testing.T) {
	t.Parallel()
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	l, err := listenHostLink(dir, "h1", api.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	cl := api.Client()
	cl.Timeout = 2 * time.Second
	get := func() error {
		resp, err := cl.Get(l.URL())
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("through the relay: %v", err)
	}
	// An open connection, then the partition.
	conn, err := net.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := WriteFaults(dir, Faults{Partitioned: []string{"h1"}}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("read on a connection of a partitioned host = %v, want it closed", err)
	}
	if err := get(); err == nil {
		t.Error("a partitioned host reached the API")
	}
	if err := WriteFaults(dir, Faults{}); err != nil {
		t.Fatal(err)
	}
	cl.CloseIdleConnections()
	if err := get(); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}
