package apiserver_test

import (
	"testing"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
)

// TestResizeAndUpgradeRequests: PATCH nodes and POST upgrade start a
// roll-forward operation (202); bad input names the field and the fix
// (nodes missing, outside 1..3, unchanged: 400), and a request during
// another operation or one the region cannot place is 409.
func TestResizeAndUpgradeRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("alpha")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	path := "/v1/projects/" + p + "/services/" + svc.ID
	nodes := func(n int) apitype.ServiceUpdate { return apitype.ServiceUpdate{Nodes: &n} }

	if r := e.do("PATCH", path, admin, nodes(2)); r.Status != 409 || r.Problem.Code != domain.CodeInvalidState {
		t.Errorf("resize of a service still creating = %d %s, want 409 invalid_state", r.Status, r.Problem.Code)
	}
	setState[domain.Service](e, svc.ID, domain.StateRunning)
	for _, tc := range []struct {
		name string
		body any
		code string
	}{
		{"nodes missing", apitype.ServiceUpdate{}, domain.CodeRequired},
		{"0 nodes", nodes(0), domain.CodeInvalidNodes},
		{"4 nodes", nodes(4), domain.CodeInvalidNodes},
		{"unchanged", nodes(1), domain.CodeInvalidNodes},
	} {
		r := e.do("PATCH", path, admin, tc.body)
		if r.Status != 400 || r.Problem.Code != tc.code || r.Problem.Field != "nodes" || r.Problem.Hint == "" {
			t.Errorf("%s: %d %s field %q hint %q, want 400 %s naming nodes with a hint", tc.name, r.Status, r.Problem.Code, r.Problem.Field, r.Problem.Hint, tc.code)
		}
	}

	// Drain a host of an AZ the service does not use: us-east-1 has 2
	// schedulable AZs left, a 3-node service needs 3.
	var got apitype.Service
	e.must(200, &got, "GET", path, admin, nil)
	var other string
	for _, az := range []string{"us-east-1a", "us-east-1b", "us-east-1c"} {
		if az != got.NodeList[0].AZ {
			other = fleettest.Name(az)
		}
	}
	e.must(200, nil, "POST", "/v1/hosts/"+other+"/drain", e.operator, nil)
	if r := e.do("PATCH", path, admin, nodes(3)); r.Status != 409 || r.Problem.Code != domain.CodeNotEnoughAZs || r.Problem.Field != "nodes" {
		t.Errorf("resize the region cannot place = %d %s field %q, want 409 not_enough_azs naming nodes", r.Status, r.Problem.Code, r.Problem.Field)
	}
	e.must(200, nil, "POST", "/v1/hosts/"+other+"/activate", e.operator, nil)

	var op apitype.Operation
	r := e.must(202, &op, "PATCH", path, admin, nodes(3))
	if op.Type != domain.OpServiceResize || op.TargetID != svc.ID || r.Header.Get("Location") == "" {
		t.Fatalf("resize: %+v (Location %q)", op, r.Header.Get("Location"))
	}
	e.must(200, &got, "GET", path, admin, nil)
	if got.Nodes != 3 || got.OperationID != op.ID {
		t.Errorf("service under resize: %d nodes, operation %q; want 3, %s", got.Nodes, got.OperationID, op.ID)
	}
	for _, req := range []struct{ method, path string }{{"PATCH", path}, {"POST", path + "/upgrade"}, {"POST", path + "/failover"}} {
		if r := e.do(req.method, req.path, admin, nodes(2)); r.Status != 409 {
			t.Errorf("%s %s during the resize = %d %s, want 409", req.method, req.path, r.Status, r.Problem.Code)
		}
	}

	// An upgrade of another service: 202, its own operation.
	var svc2 apitype.Service
	e.must(201, &svc2, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db2", Region: "us-east-1", Nodes: 2})
	setState[domain.Service](e, svc2.ID, domain.StateRunning)
	e.must(202, &op, "POST", "/v1/projects/"+p+"/services/"+svc2.ID+"/upgrade", admin, nil)
	if op.Type != domain.OpServiceUpgrade || op.TargetID != svc2.ID {
		t.Errorf("upgrade: %+v", op)
	}
}
