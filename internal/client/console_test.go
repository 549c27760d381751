package client

import (
	"context"
	"net/http"
	"testing"
)

func TestMayRead(t *testing.T) {
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/ok":
			if r.URL.Query().Get("limit") != "1" {
				t.Errorf("query %q, want limit=1", r.URL.RawQuery)
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"items":[]}`))
		case "/v1/forbidden":
			http.Error(w, "no", http.StatusForbidden)
		case "/v1/missing":
			http.Error(w, "no", http.StatusNotFound)
		default:
			http.Error(w, "broken", http.StatusInternalServerError)
		}
	})
	ctx := context.Background()
	for path, want := range map[string]bool{"/v1/ok": true, "/v1/forbidden": false, "/v1/missing": false} {
		got, err := c.MayRead(ctx, path, map[string][]string{"limit": {"1"}})
		if err != nil || got != want {
			t.Errorf("MayRead(%s) = %v, %v, want %v, nil", path, got, err, want)
		}
	}
	if _, err := c.MayRead(ctx, "/v1/broken", map[string][]string{"limit": {"1"}}); err == nil {
		t.Error("MayRead of a 500 returned no error")
	}
}

func TestWhoami(t *testing.T) {
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/whoami" || r.Method != http.MethodGet {
			t.Errorf("%s %s, want GET /v1/whoami", r.Method, r.URL.Path)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"token_id":"tok-abc","role":"member","project_id":"proj-x"}`))
	})
	id, err := c.Whoami(context.Background())
	if err != nil || id != (Identity{TokenID: "tok-abc", Role: "member", ProjectID: "proj-x"}) {
		t.Errorf("Whoami() = %+v, %v", id, err)
	}
}
