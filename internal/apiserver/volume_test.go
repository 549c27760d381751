package apiserver_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// TestNodeVolumeShown: GET service shows each node's volume as its agent
// reported it, and a node whose volume is full is failed with the code
// volume_full and a message that says what to do (the agent's own text
// only to operators); one whose volume lost its key is failed with the
// code volume_lost.
func TestNodeVolumeShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	ctx := context.Background()
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
	vol := apitype.NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 10 << 30, Used: 40 << 20}
	report := func(state, msg string, v apitype.NodeVolume) {
		t.Helper()
		e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, apitype.HostReport{Nodes: []apitype.NodeReport{
			{NodeID: node.ID, Revision: 1, State: state, Message: msg, Volume: &v}}})
	}
	get := func(token string) apitype.Node {
		t.Helper()
		var got apitype.Service
		e.must(200, &got, "GET", "/v1/projects/"+p+"/services/"+svc.ID, token, nil)
		if len(got.NodeList) != 1 {
			t.Fatalf("node list = %+v, want one node", got.NodeList)
		}
		return got.NodeList[0]
	}

	report(apitype.NodeReportRunning, "", vol)
	if n := get(admin); n.State != domain.StateRunning || n.Volume == nil || *n.Volume != vol || n.StateInfo != nil {
		t.Errorf("running node = %+v (volume %+v), want running with volume %+v", n, n.Volume, vol)
	}

	full := vol
	full.Used, full.Full = 10<<30, true
	report(apitype.NodeReportFailed, "volume full", full)
	n := get(admin)
	if n.State != domain.StateFailed || n.Volume == nil || !n.Volume.Full || n.StateInfo == nil || n.StateInfo.Code != domain.CodeVolumeFull {
		t.Fatalf("full node = %+v (volume %+v, info %+v), want failed, volume_full", n, n.Volume, n.StateInfo)
	}
	if n.StateInfo.InternalCause != "" {
		t.Errorf("a project token sees the internal cause %q", n.StateInfo.InternalCause)
	}
	if op := get(e.operator); !cmp.Equal(op.StateInfo, &apitype.StateInfo{Code: domain.CodeVolumeFull, Message: n.StateInfo.Message, InternalCause: "volume full"}) {
		t.Errorf("operator sees %+v, want the agent's text as the internal cause", op.StateInfo)
	}

	report(apitype.NodeReportRunning, "", vol)
	if n := get(admin); n.State != domain.StateRunning || n.StateInfo != nil || n.Volume.Full {
		t.Errorf("node after space was freed = %+v, want running", n)
	}

	lost := vol
	lost.Lost = true
	report(apitype.NodeReportFailed, "volume key lost: the node's volume server is gone", lost)
	n = get(admin)
	if n.State != domain.StateFailed || n.Volume == nil || !n.Volume.Lost || n.StateInfo == nil || n.StateInfo.Code != domain.CodeVolumeLost ||
		!strings.Contains(n.StateInfo.Message, "replaced") {
		t.Errorf("node whose volume lost its key = %+v (volume %+v, info %+v), want failed, volume_lost, saying it is replaced", n, n.Volume, n.StateInfo)
	}
}
