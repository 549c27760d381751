package apiserver_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moatdb/moat/internal/apiserver"
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/testenv"
)

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalCauseOnlyForOperators: a node task that fails with
// pg_basebackup's stderr (naming a path on the node) fails its operation
// with a message written for the tenant; the stderr is in the server's log
// and in what an operator token reads, never in what a tenant token reads
// (the operation, the list of operations, the service). It also checks
// that the server and a long poll leave no goroutine behind.
func TestInternalCauseOnlyForOperators(t *testing.T) {
	testenv.CheckGoroutines(t)
	const stderr = "pg_basebackup: error: could not create directory \"/var/lib/moat/nodes/node-x/pgdata/base\": No space left on device"
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	e := newEnvWith(t, func(c *apiserver.Config) {
		c.Backups, c.BackupDir = dir, "/backups"
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	p, admin := e.project("acme")
	agent := e.addAgentToken("h1")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	setState[domain.Service](e, svc.ID, domain.StateRunning)
	var op apitype.Operation
	e.must(202, &op, "POST", "/v1/projects/"+p+"/services/"+svc.ID+"/backups", admin, nil)

	ctx := context.Background()
	var node *domain.Node
	if err := e.st.Update(ctx, func(tx store.Tx) error {
		ns, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc.ID})
		if err != nil {
			return err
		}
		node = ns[0]
		node.Host = "h1" // no address: the desired state leaves it out, and needs no keys
		return store.Put(ctx, tx, node)
	}); err != nil {
		t.Fatal(err)
	}
	// A long poll that the report ends (the revision moves on).
	var desired apitype.HostDesired
	e.must(200, &desired, "GET", "/v1/hosts/h1/desired", agent, nil)
	polled := make(chan resp, 1)
	go func() {
		polled <- e.do("GET", "/v1/hosts/h1/desired?after="+strconv.FormatInt(desired.Revision, 10), agent, nil)
	}()

	report := apitype.HostReport{Nodes: []apitype.NodeReport{{NodeID: node.ID, Revision: desired.Revision, State: apitype.NodeReportFailed,
		Message: "start: " + stderr, Tasks: []apitype.TaskReport{{ID: op.ID, State: apitype.TaskFailed, Message: stderr}}}}}
	e.must(204, nil, "POST", "/v1/hosts/h1/report", agent, report)
	if r := <-polled; r.Status != 200 {
		t.Errorf("long poll = %d %s", r.Status, r.Body)
	}

	opPath := "/v1/projects/" + p + "/operations/" + op.ID
	listPath := "/v1/projects/" + p + "/operations?target_id=" + svc.ID
	svcPath := "/v1/projects/" + p + "/services/" + svc.ID
	for _, path := range []string{opPath, listPath, svcPath} {
		if r := e.must(200, nil, "GET", path, admin, nil); strings.Contains(string(r.Body), "pg_basebackup") || strings.Contains(string(r.Body), "/var/lib/moat") {
			t.Errorf("tenant GET %s shows the internal cause: %s", path, r.Body)
		}
	}
	var got apitype.Operation
	e.must(200, &got, "GET", opPath, admin, nil)
	if got.State != "failed" || got.Error == nil || got.Error.Code != "task_failed" || got.Error.Message == "" || got.Error.InternalCause != "" {
		t.Errorf("tenant's failed operation = %+v %+v, want task_failed with a public message only", got, got.Error)
	}
	e.must(200, &got, "GET", opPath, e.operator, nil)
	if got.Error == nil || got.Error.InternalCause != stderr {
		t.Errorf("operator's failed operation error = %+v, want the internal cause %q", got.Error, stderr)
	}
	var ops apitype.List[apitype.Operation]
	e.must(200, &ops, "GET", listPath, e.operator, nil)
	if len(ops.Items) != 1 || ops.Items[0].Error == nil || ops.Items[0].Error.InternalCause != stderr {
		t.Errorf("operator's operations = %+v, want the internal cause", ops.Items)
	}
	if !strings.Contains(logs.String(), "No space left on device") {
		t.Errorf("server log has no internal cause:\n%s", logs.String())
	}
}
