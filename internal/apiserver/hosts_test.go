package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// TestHosts: an operator registers a host and gets its agent token once;
// its agent's heartbeat records the version; bad input names the field;
// a report from an unregistered host is refused; a host with nodes cannot
// be removed; a removed host's token no longer works.
func TestHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var created, again apitype.HostCreated
	e.must(201, &created, "POST", "/v1/hosts", e.operator, apitype.HostCreate{Name: "m1", Region: "eu-west-1", AZ: "eu-west-1b", Capacity: 2}, "Idempotency-Key", "h")
	h := created.Host
	if h.Name != "m1" || h.State != domain.StateActive || h.Capacity != 2 || !h.LastHeartbeatAt.IsZero() || created.AgentToken.Host != "m1" || created.AgentToken.Secret == "" {
		t.Fatalf("created = %+v", created)
	}
	e.must(201, &again, "POST", "/v1/hosts", e.operator, apitype.HostCreate{Name: "m1", Region: "eu-west-1", AZ: "eu-west-1b", Capacity: 2}, "Idempotency-Key", "h")
	if again.AgentToken.Secret != "" || again.AgentToken.SecretShownOnce == "" || again.Host.ID != h.ID {
		t.Errorf("replayed host create = %+v, want the same host without the secret", again)
	}
	for _, tc := range []struct {
		in          apitype.HostCreate
		status      int
		code, field string
	}{
		{apitype.HostCreate{Name: "m1", Region: "eu-west-1", AZ: "eu-west-1b"}, 409, domain.CodeDuplicateEntry, "name"},
		{apitype.HostCreate{Name: "m2", Region: "eu-west-1", AZ: "us-east-1a"}, 400, domain.CodeInvalidAZ, "az"},
		{apitype.HostCreate{Name: "m2", Region: "eu-west-1", AZ: "eu-west-1a", Capacity: 5000}, 400, domain.CodeInvalidCapacity, "capacity"},
		{apitype.HostCreate{Name: "m2", Region: "mars-1", AZ: "a"}, 400, "", "region"},
	} {
		r := e.do("POST", "/v1/hosts", e.operator, tc.in)
		if r.Status != tc.status || (tc.code != "" && r.Problem.Code != tc.code) || r.Problem.Field != tc.field || r.Problem.Hint == "" {
			t.Errorf("create %+v = %d %s, want %d %s on %s with a hint", tc.in, r.Status, r.Body, tc.status, tc.code, tc.field)
		}
	}

	// Capacity.
	var updated apitype.Host
	e.must(200, &updated, "PATCH", "/v1/hosts/m1", e.operator, apitype.HostUpdate{Capacity: 3})
	if updated.Capacity != 3 {
		t.Errorf("updated = %+v, want capacity 3", updated)
	}
	if r := e.do("PATCH", "/v1/hosts/"+h.ID, e.operator, apitype.HostUpdate{}); r.Status != 400 || r.Problem.Field != "capacity" {
		t.Errorf("capacity 0 = %d %s, want 400 on capacity", r.Status, r.Body)
	}

	// Heartbeats.
	tok := created.AgentToken.Secret
	e.must(204, nil, "POST", "/v1/hosts/m1/report", tok, apitype.HostReport{AgentVersion: "v1.2.3"})
	var got apitype.Host
	e.must(200, &got, "GET", "/v1/hosts/m1", e.operator, nil)
	if got.AgentVersion != "v1.2.3" || got.LastHeartbeatAt.IsZero() || got.State != domain.StateActive || got.Load != 0 {
		t.Errorf("after a heartbeat = %+v", got)
	}
	if r := e.do("POST", "/v1/hosts/m1/report", tok, apitype.HostReport{AgentVersion: "has space"}); r.Status != 400 || r.Problem.Field != "agent_version" {
		t.Errorf("heartbeat with a bad version = %d %s", r.Status, r.Body)
	}
	ghost := addBoundToken(t, e, "ghost")
	if r := e.do("POST", "/v1/hosts/ghost/report", ghost, apitype.HostReport{}); r.Status != 409 || r.Problem.Code != "host_not_registered" || !strings.Contains(r.Problem.Hint, "moat host add ghost") {
		t.Errorf("report of an unregistered host = %d %s", r.Status, r.Body)
	}

	// Placement: a 3-node service in eu-west-1 lands on three hosts in
	// three AZs; m1 (the least loaded in eu-west-1b, a tie broken by name
	// after the registered fleet) may take one.
	p, admin := e.project("acme")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "eu-west-1", Nodes: 3})
	var hosts apitype.List[apitype.Host]
	e.must(200, &hosts, "GET", "/v1/hosts", e.operator, nil)
	azs := map[string]int{}
	for _, x := range hosts.Items {
		if x.Region == "eu-west-1" {
			azs[x.AZ] += x.Load
		}
	}
	if azs["eu-west-1a"] != 1 || azs["eu-west-1b"] != 1 || azs["eu-west-1c"] != 1 {
		t.Errorf("load per AZ of eu-west-1 = %v, want one node in each", azs)
	}
	var busy string
	for _, x := range hosts.Items {
		if x.Region == "eu-west-1" && x.Load == 1 {
			busy = x.Name
		}
	}
	var withNodes apitype.Host
	e.must(200, &withNodes, "GET", "/v1/hosts/"+busy, e.operator, nil)
	if len(withNodes.Nodes) != 1 || withNodes.Nodes[0].ServiceID != svc.ID {
		t.Errorf("host %s nodes = %+v, want one node of %s", busy, withNodes.Nodes, svc.ID)
	}
	// A host's node list shows each node's role in its service as it is
	// now (the primary moved off index 0 by a failover) and its volume.
	var moved string
	if err := e.st.Update(context.Background(), func(tx store.Tx) error {
		s, err := store.Get[domain.Service](context.Background(), tx, svc.ID)
		if err != nil {
			return err
		}
		nodes, err := store.List[domain.Node](context.Background(), tx, store.Query{})
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.ServiceID != svc.ID || n.Index != 2 {
				continue
			}
			moved, s.PrimaryID = n.ID, n.ID
			n.Volume = &domain.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 10 << 30, Used: 1 << 30}
			if err := store.Put(context.Background(), tx, n); err != nil {
				return err
			}
		}
		return store.Put(context.Background(), tx, s)
	}); err != nil {
		t.Fatal(err)
	}
	for _, x := range hosts.Items {
		if x.Region != "eu-west-1" || x.Load != 1 {
			continue
		}
		var got apitype.Host
		e.must(200, &got, "GET", "/v1/hosts/"+x.Name, e.operator, nil)
		for _, n := range got.Nodes {
			want := apitype.RoleReplica
			if n.ID == moved {
				want = apitype.RolePrimary
				if v := n.Volume; v == nil || v.Format != "LUKS2" || v.Used != 1<<30 {
					t.Errorf("host %s node %s volume = %+v, want the reported LUKS2 volume", x.Name, n.ID, v)
				}
			}
			if n.Role != want {
				t.Errorf("host %s node %s role = %s, want %s (the service's primary is %s)", x.Name, n.ID, n.Role, want, moved)
			}
		}
	}

	r := e.do("DELETE", "/v1/hosts/"+busy, e.operator, nil)
	if r.Status != 409 || r.Problem.Code != domain.CodeInUse || !strings.Contains(r.Problem.Detail, withNodes.Nodes[0].ID) || !strings.Contains(r.Problem.Hint, "moat host drain "+busy) {
		t.Errorf("remove a host with nodes = %d %s, want 409 naming the node", r.Status, r.Body)
	}

	// Draining one us-east-1 host leaves two healthy AZs: a 3-node service
	// there is refused with the reason, never doubled up.
	var drained apitype.Host
	e.must(200, &drained, "POST", "/v1/hosts/us-east-1c-1/drain", e.operator, nil)
	if drained.State != domain.StateDraining || !drained.Cordoned {
		t.Errorf("drained = %+v", drained)
	}
	r = e.do("POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "big", Region: "us-east-1", Nodes: 3})
	if r.Status != 409 || r.Problem.Code != domain.CodeNotEnoughAZs || r.Problem.Field != "nodes" || !strings.Contains(r.Problem.Detail, "us-east-1 has 2 healthy AZs; a 3-node service needs 3") {
		t.Errorf("3 nodes over 2 healthy AZs = %d %s", r.Status, r.Body)
	}
	e.must(200, &drained, "POST", "/v1/hosts/us-east-1c-1/activate", e.operator, nil)
	e.must(201, nil, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "big", Region: "us-east-1", Nodes: 3})

	// An empty host goes, and its agent token with it.
	var removed apitype.Host
	e.must(200, &removed, "DELETE", "/v1/hosts/m1", e.operator, nil)
	if removed.State != domain.StateDeleted {
		t.Errorf("removed = %+v", removed)
	}
	if r := e.do("POST", "/v1/hosts/m1/report", tok, apitype.HostReport{}); r.Status != 401 {
		t.Errorf("report with a removed host's token = %d, want 401", r.Status)
	}
	if r := e.do("GET", "/v1/hosts/m1", e.operator, nil); r.Status != 404 {
		t.Errorf("get a removed host = %d, want 404", r.Status)
	}
}

// TestHeartbeatBringsHostBack: a down host's heartbeat makes it active
// (draining when cordoned), with an audit entry.
func TestHeartbeatBringsHostBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tok := e.addAgentToken("h9")
	e.must(204, nil, "POST", "/v1/hosts/h9/report", tok, apitype.HostReport{AgentVersion: "dev"})
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		hs, err := store.List[domain.Host](ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.Name == "h9" {
				if err := h.MarkDown(time.Now()); err != nil {
					return err
				}
				return store.Put(ctx, tx, h)
			}
		}
		t.Fatal("h9 not registered")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var h apitype.Host
	e.must(200, &h, "GET", "/v1/hosts/h9", e.operator, nil)
	if h.State != domain.StateDown || h.StateInfo == nil || h.StateInfo.Code != domain.CodeHeartbeatLost {
		t.Fatalf("marked down = %+v", h)
	}
	e.must(204, nil, "POST", "/v1/hosts/h9/report", tok, apitype.HostReport{AgentVersion: "dev"})
	var back apitype.Host
	e.must(200, &back, "GET", "/v1/hosts/h9", e.operator, nil)
	if back.State != domain.StateActive || back.StateInfo != nil {
		t.Errorf("after its heartbeat = %+v, want active", back)
	}
	var audit apitype.List[apitype.AuditEntry]
	e.must(200, &audit, "GET", "/v1/audit", e.operator, nil)
	n := 0
	for _, a := range audit.Items {
		if a.Action == "host.report" && strings.Contains(a.Detail, "back up") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("audit entries of the host coming back = %d, want 1 (plain heartbeats are not audited)", n)
	}
	// A heartbeat wakes nobody: no revision moves, the platform's nor
	// the host's.
	rev, err := e.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hrev, err := e.st.HostRevision(ctx, "h9")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.must(204, nil, "POST", "/v1/hosts/h9/report", tok, apitype.HostReport{AgentVersion: "dev"})
	}
	rev2, _ := e.st.Revision(ctx)
	hrev2, _ := e.st.HostRevision(ctx, "h9")
	if rev2 != rev || hrev2 != hrev {
		t.Errorf("3 heartbeats moved the revision %d → %d, the host's %d → %d; want neither", rev, rev2, hrev, hrev2)
	}
}

// addBoundToken stores an agent token bound to host without registering
// the host.
func addBoundToken(t *testing.T, e *env, host string) string {
	t.Helper()
	secretStr := apiserver.NewSecret()
	tok := domain.NewToken("", "agent-"+host, domain.RoleAgent, apiserver.HashSecret(secretStr), host, time.Now())
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx store.Tx) error { return store.Put(ctx, tx, tok) }); err != nil {
		t.Fatal(err)
	}
	return apiserver.FormatToken(tok.ID, secretStr)
}
