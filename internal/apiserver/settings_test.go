package apiserver_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
)

// TestSettingsRequests: PATCH {"settings": ...} stores a service's
// PostgreSQL settings and answers the service (200): reload-only ones
// are in force, those that need a restart pending until an upgrade;
// null removes one; values may be strings or numbers. Bad input is 400
// naming settings.<name> and the fix; a change during another operation
// is 409; with "nodes" the answer is the resize (202).
func TestSettingsRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("alpha")
	var svc apitype.Service
	e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db", Region: "us-east-1"})
	path := "/v1/projects/" + p + "/services/" + svc.ID
	setState[domain.Service](e, svc.ID, domain.StateRunning)

	var got apitype.Service
	e.must(200, &got, "PATCH", path, admin, `{"settings": {"statement_timeout": "30s", "work_mem": "8MB"}}`)
	if got.Settings["statement_timeout"] != "30s" || got.Settings["work_mem"] != "8MB" || len(got.PendingRestart) != 0 {
		t.Errorf("reload-only change: settings %v pending %v, want both set, none pending", got.Settings, got.PendingRestart)
	}
	got = apitype.Service{} // a map decoded into is merged
	e.must(200, &got, "PATCH", path, admin, `{"settings": {"max_connections": 200, "work_mem": null}}`)
	if got.Settings["max_connections"] != "200" || got.Settings["work_mem"] != "" || !slices.Equal(got.PendingRestart, []string{"max_connections"}) {
		t.Errorf("restart change: settings %v pending %v, want max_connections 200 pending, work_mem removed", got.Settings, got.PendingRestart)
	}
	e.must(200, &got, "GET", path, admin, nil)
	if got.Settings["statement_timeout"] != "30s" || !slices.Equal(got.PendingRestart, []string{"max_connections"}) {
		t.Errorf("GET: settings %v pending %v", got.Settings, got.PendingRestart)
	}

	for _, tc := range []struct {
		body, code, field, hint string
	}{
		{`{"settings": {"statment_timeout": "1s"}}`, domain.CodeInvalidSetting, "settings.statment_timeout", "did you mean statement_timeout"},
		{`{"settings": {"max_connections": 10}}`, domain.CodeInvalidSetting, "settings.max_connections", "20 to 5000"},
		{`{"settings": {"ssl_ciphers": "ALL"}}`, domain.CodeMoatSetting, "settings.ssl_ciphers", "Moat sets it"},
		{`{"settings": {"timezone": "Nowhere/Atlantis"}}`, domain.CodeInvalidSetting, "settings.timezone", "IANA"},
		{`{"settings": {"timezone": "Local"}}`, domain.CodeInvalidSetting, "settings.timezone", "IANA"},
		{`{"settings": {"work_mem": true}}`, "invalid_json", "settings", "openapi"},
		{`{"settings": {}}`, domain.CodeRequired, "settings", "null removes"},
		{`{}`, domain.CodeRequired, "nodes", "settings"},
	} {
		r := e.do("PATCH", path, admin, tc.body)
		if r.Status != 400 || r.Problem.Code != tc.code || r.Problem.Field != tc.field || !strings.Contains(r.Problem.Hint, tc.hint) {
			t.Errorf("PATCH %s = %d %s field %q hint %q, want 400 %s naming %s, hint ~%q", tc.body, r.Status, r.Problem.Code, r.Problem.Field, r.Problem.Hint, tc.code, tc.field, tc.hint)
		}
	}
	got = apitype.Service{}
	e.must(200, &got, "GET", path, admin, nil)
	if len(got.Settings) != 2 {
		t.Errorf("refused changes left settings %v, want statement_timeout and max_connections", got.Settings)
	}

	// Settings with a resize: one request, the resize's operation.
	var op apitype.Operation
	e.must(202, &op, "PATCH", path, admin, `{"nodes": 2, "settings": {"work_mem": "16MB"}}`)
	if op.Type != domain.OpServiceResize {
		t.Fatalf("settings with nodes: %+v, want a resize", op)
	}
	e.must(200, &got, "GET", path, admin, nil)
	if got.Settings["work_mem"] != "16MB" || got.Nodes != 2 {
		t.Errorf("after settings with nodes: %v, %d nodes", got.Settings, got.Nodes)
	}
	// During the resize: 409, nothing stored.
	if r := e.do("PATCH", path, admin, `{"settings": {"work_mem": "32MB"}}`); r.Status != 409 || r.Problem.Code != domain.CodeOperationInProgress {
		t.Errorf("settings during a resize = %d %s, want 409 %s", r.Status, r.Problem.Code, domain.CodeOperationInProgress)
	}
	e.must(200, &got, "GET", path, admin, nil)
	if got.Settings["work_mem"] != "16MB" {
		t.Errorf("refused change stored work_mem %q", got.Settings["work_mem"])
	}
}
