package apiserver_test

import (
	"testing"

	"github.com/moatdb/moat/internal/apitype"
)

// TestFailoverRequest: a 1-node service has nothing to fail over to
// (409 single_node, with a hint to add a replica); a 3-node service whose
// replicas never reported refuses too, rather than promote a replica
// that may lack acknowledged commits.
func TestFailoverRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("alpha")
	for _, tc := range []struct {
		nodes int
		code  string
	}{{1, "single_node"}, {3, "invalid_state"}} {
		var svc apitype.Service
		e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db" + string(rune('0'+tc.nodes)), Region: "us-east-1", Nodes: tc.nodes})
		r := e.do("POST", "/v1/projects/"+p+"/services/"+svc.ID+"/failover", admin, nil)
		if r.Status != 409 || r.Problem.Code != tc.code {
			t.Errorf("failover of a %d-node service = %d %s, want 409 %s", tc.nodes, r.Status, r.Problem.Code, tc.code)
		}
		if tc.nodes == 1 && r.Problem.Hint == "" {
			t.Errorf("failover of a 1-node service: no hint")
		}
	}
}
