package e2e

import (
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/metrics/promtest"
	"github.com/moatdb/moat/internal/up"
)

// TestPrometheus: a real Prometheus scrapes a moat up stack's platform
// listeners (control plane and agent, plain HTTP on loopback) and a
// project's tenant endpoint (HTTPS with the API's CA, a viewer token),
// and finds the service's pg_up, read by the agent as moat_monitor, and
// the allowlist change's enforcement in the latency histogram. Every
// exposition passes promtool check metrics. The service's node shows its
// encrypted volume.
func TestPrometheus(t *testing.T) {
	t.Parallel()
	e := startStack(t, "", "", func(c *up.Config) {
		c.ControlPlane.MetricsListen, c.AgentMetricsListen = "127.0.0.1:0", "127.0.0.1:0"
		c.StatsInterval = time.Second
	})
	e.newProject("metrics")
	svc, _ := e.createService("db", 1)
	if v := svc.NodeList[0].Volume; v == nil || v.Format != "LUKS2" || v.Cipher != "aes-xts-plain64" || v.Size < 10<<30-(64<<20) || v.Used <= 0 || v.Full {
		t.Errorf("the running node's volume = %+v, want a LUKS2 aes-xts-plain64 volume of about 10 GiB, partly used", v)
	}
	e.setAllowlist(svc.ID, "203.0.113.0/24")
	viewer, err := e.op.CreateToken(e.ctx(), e.project, apitype.TokenCreate{Role: "viewer", Name: "prometheus"})
	if err != nil {
		t.Fatal(err)
	}

	caPEM, err := os.ReadFile(filepath.Join(e.dir, controlplane.APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := pem.Decode(caPEM)
	if ca == nil {
		t.Fatalf("%s holds no PEM certificate", controlplane.APICAFile)
	}
	// The agent of the node's host (each host of the fleet serves its own).
	cpURL, agentURL := e.stack.CP.MetricsURL(), e.stack.AgentMetricsURL(e.nodeHost(svc.NodeList[0].ID))
	if agentURL == "" {
		t.Fatalf("no host of the fleet %v serves agent metrics for node %s", e.stack.Hosts(), svc.NodeList[0].ID)
	}
	prom := promtest.Start(t,
		promtest.Job{Name: "moat", Target: hostOf(t, cpURL)},
		promtest.Job{Name: "agent", Target: hostOf(t, agentURL)},
		promtest.Job{Name: "tenant", Target: hostOf(t, e.stack.CP.URL()), Path: "/v1/projects/" + e.project + "/metrics", CA: ca.Bytes, Token: viewer.Secret},
	)
	wait := 30 * time.Second
	for _, q := range []struct{ query, want string }{
		{`up{job="moat"}`, "1"},
		{`up{job="agent"}`, "1"},
		{`up{job="tenant"}`, "1"},
		{`pg_up{job="tenant",service="` + svc.ID + `",role="primary"}`, "1"},
		{`count(pg_stat_database_xact_commit{job="tenant",service="` + svc.ID + `",datname="defaultdb"})`, "1"},
		{`sum(moat_allowlist_enforce_duration_seconds_count{job="moat",service="` + svc.ID + `"}) > bool 0`, "1"},
		{`moat_allowlist_enforce_duration_seconds_bucket{job="moat",service="` + svc.ID + `",le="+Inf"} > bool 0`, "1"},
		{`moat_firewall_set_elements{job="agent",node="` + svc.NodeList[0].ID + `"}`, "1"},
		{`moat_node_state{job="moat",node="` + svc.NodeList[0].ID + `",state="running"}`, "1"},
	} {
		prom.WaitFor(t, q.query, q.want, wait)
	}

	for name, url := range map[string]string{"control plane": cpURL, "agent": agentURL} {
		body := httpGet(t, url)
		if !strings.Contains(string(body), "moat_") {
			t.Errorf("%s metrics hold no moat_ series", name)
		}
		promtest.CheckMetrics(t, body)
	}
	tenant, err := e.op.ProjectMetrics(e.ctx(), e.project)
	if err != nil {
		t.Fatal(err)
	}
	promtest.CheckMetrics(t, tenant)
}

// hostOf is the host:port of an http(s) URL.
func hostOf(t *testing.T, url string) string {
	t.Helper()
	_, rest, ok := strings.Cut(url, "://")
	if !ok || url == "" {
		t.Fatalf("URL %q has no scheme", url)
	}
	host, _, _ := strings.Cut(rest, "/")
	return host
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return body
}

// nodeHost is the name of the fleet host that runs node id.
func (e *env) nodeHost(id string) string {
	e.t.Helper()
	for _, h := range e.stack.Hosts() {
		got, err := e.op.GetHost(e.ctx(), h.Name)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, n := range got.Nodes {
			if n.ID == id {
				return h.Name
			}
		}
	}
	e.t.Fatalf("no host of the fleet %v runs node %s", e.stack.Hosts(), id)
	return ""
}
