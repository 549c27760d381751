package client

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/moatdb/moat/internal/apitype"
)

func TestPasswordAndCA(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls []string
	)
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		switch r.Method + " " + r.URL.EscapedPath() {
		case "POST /v1/projects/proj-a/services/svc-b/password":
			json.NewEncoder(w).Encode(apitype.PasswordReset{User: "moatadmin", Password: "pw"})
		case "GET /v1/projects/proj-a/ca":
			json.NewEncoder(w).Encode(apitype.CA{ProjectID: "proj-a", PEM: "PEM"})
		case "GET /v1/projects/proj-a/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			w.Write([]byte("pg_up{node=\"n\",role=\"primary\",service=\"s\"} 1\n"))
		default:
			http.NotFound(w, r)
		}
	})
	ctx := context.Background()
	pr, err := c.ResetPassword(ctx, "proj-a", "svc-b")
	if want := (apitype.PasswordReset{User: "moatadmin", Password: "pw"}); err != nil || pr != want {
		t.Errorf("ResetPassword = %+v, %v, want %+v", pr, err, want)
	}
	ca, err := c.GetProjectCA(ctx, "proj-a")
	if want := (apitype.CA{ProjectID: "proj-a", PEM: "PEM"}); err != nil || ca != want {
		t.Errorf("GetProjectCA = %+v, %v, want %+v", ca, err, want)
	}
	m, err := c.ProjectMetrics(ctx, "proj-a")
	if want := "pg_up{node=\"n\",role=\"primary\",service=\"s\"} 1\n"; err != nil || string(m) != want {
		t.Errorf("ProjectMetrics = %q, %v, want %q", m, err, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 {
		t.Errorf("calls = %q, want one of each (a reset is never retried)", calls)
	}
}
