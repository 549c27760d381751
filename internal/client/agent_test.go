package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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
	for range 2 { // the second poll reuses the long-poll transport's connection
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

// TestLongPollerOwned: the long polls' client is made once per Client and
// owned by it (no process-wide cache): the same one on every poll, one TCP
// connection for successive polls, and its idle connections closed by
// CloseIdleConnections.
func TestLongPollerOwned(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(apitype.HostDesired{Host: "h1", Revision: 8})
	}))
	closed := make(chan struct{}, 4)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed:
			closed <- struct{}{}
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	a, err := New(Config{URL: srv.URL, CAPEM: ca, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{URL: srv.URL, CAPEM: ca, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	first, second := a.longPoller(), a.longPoller()
	if first == a || first != second {
		t.Fatalf("longPoller() = %p, %p for client %p; want one copy of its own", first, second, a)
	}
	if a.longPoller().hc.Transport == b.longPoller().hc.Transport || a.longPoller().hc.Transport == a.hc.Transport {
		t.Errorf("long-poll transports are shared between clients or with the client's own")
	}
	if lp := a.longPoller(); lp.hc.Timeout != 0 || lp.hc.Transport.(*http.Transport).ResponseHeaderTimeout != 0 {
		t.Errorf("long-poll client timeouts = %v, %v; want none", lp.hc.Timeout, lp.hc.Transport.(*http.Transport).ResponseHeaderTimeout)
	}
	for range 2 {
		if _, err := a.HostDesired(t.Context(), "h1", 7); err != nil {
			t.Fatalf("HostDesired: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("two long polls opened %d connections, want 1", n)
	}
	a.CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Errorf("CloseIdleConnections left the long poll's connection open")
	}

	// A client whose timeouts cannot cut a long poll uses itself.
	c, err := New(Config{URL: srv.URL, CAPEM: ca, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c.longPoller() != c {
		t.Errorf("longPoller() of a client with an hour's timeout is a copy")
	}
}
