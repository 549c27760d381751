package apiserver_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// TestRepeatedReportsNotAudited: an agent repeats its report every few
// seconds with replication facts that move with every write. Reports
// that change nothing the platform acts on store those facts but add no
// audit entry and leave the desired-state revisions alone; a report that
// changes a node's state adds exactly one entry.
func TestRepeatedReportsNotAudited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	var node *domain.Node
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		ns, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil {
			return err
		}
		node = ns[0]
		node.Host = "h1"
		return store.Put(ctx, tx, node)
	}); err != nil {
		t.Fatal(err)
	}
	report := func(state string, lsn int) {
		t.Helper()
		e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, apitype.HostReport{AgentVersion: "dev", Nodes: []apitype.NodeReport{{
			NodeID: node.ID, Revision: 1, AllowlistRevision: 1, State: state,
			Replication: &apitype.NodeReplication{Up: true, ReceivedLSN: fmt.Sprintf("0/%X", lsn)},
		}}})
	}
	reports := func() int {
		t.Helper()
		var audit apitype.List[apitype.AuditEntry]
		e.must(200, &audit, "GET", "/v1/audit?limit=1000", e.operator, nil)
		n := 0
		for _, a := range audit.Items {
			if a.Action == "host.report" {
				n++
			}
		}
		return n
	}
	revisions := func() (global, host int64) {
		t.Helper()
		var err error
		if global, err = e.st.Revision(ctx); err != nil {
			t.Fatal(err)
		}
		if host, err = e.st.HostRevision(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		return global, host
	}

	report(apitype.NodeReportRunning, 0x1000) // creating → running
	if n := reports(); n != 1 {
		t.Fatalf("audit entries after the first report = %d, want 1", n)
	}
	global, host := revisions()
	for i := range 5 {
		report(apitype.NodeReportRunning, 0x2000+i)
	}
	if n := reports(); n != 1 {
		t.Errorf("audit entries after 5 reports that change nothing = %d, want still 1", n)
	}
	if g, h := revisions(); g != global || h != host {
		t.Errorf("revisions after 5 reports that change nothing = %d (host %d), want %d (host %d)", g, h, global, host)
	}
	// The facts are stored all the same (failover reads them).
	if err := e.st.View(ctx, func(tx store.Tx) error {
		n, err := store.Get[domain.Node](ctx, tx, node.ID)
		if err != nil {
			return err
		}
		if n.Replication == nil || n.Replication.ReceivedLSN != 0x2004 {
			t.Errorf("stored replication = %+v, want the last report's LSN 0/2004", n.Replication)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	report(apitype.NodeReportFailed, 0x3000) // running → failed
	if n := reports(); n != 2 {
		t.Errorf("audit entries after a report that fails the node = %d, want 2", n)
	}
	report(apitype.NodeReportFailed, 0x3001)
	if n := reports(); n != 2 {
		t.Errorf("audit entries after the same failure again = %d, want still 2", n)
	}
}
