package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
)

// TestHostDesiredOutlastsTimeout checks that a long poll is not cut by the
// client's request timeout, and that reports accept 204.
func TestHostDesiredOutlastsTimeout(t *testing.T) {
	t.Parallel()
	var got apitype.HostReport
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "GET" && r.URL.Path == "/v1/hosts/h1/desired":
			if r.URL.Query().Get("after") != "7" {
				http.Error(w, "bad after", 400)
				return
			}
			time.Sleep(300 * time.Millisecond) // longer than the client's timeout
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(apitype.HostDesired{Host: "h1", Revision: 8})
		case r.Method == "POST" && r.URL.Path == "/v1/hosts/h1/report":
			json.NewDecoder(r.Body).Decode(&got)
			w.WriteHeader(204)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := New(Config{URL: srv.URL, CAPEM: ca, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 { // the second poll reuses the cached long-poll transport
		d, err := c.HostDesired(ctx, "h1", 7)
		if err != nil {
			t.Fatalf("HostDesired: %v", err)
		}
		if d.Revision != 8 {
			t.Fatalf("HostDesired revision = %d, want 8", d.Revision)
		}
	}
	want := apitype.HostReport{Nodes: []apitype.NodeReport{{NodeID: "n1", Revision: 8, State: apitype.NodeReportRunning}}}
	if err := c.ReportHost(ctx, "h1", want); err != nil {
		t.Fatalf("ReportHost: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report received (-want +got):\n%s", diff)
	}
}
