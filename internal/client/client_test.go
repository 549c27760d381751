package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
)

// testServer serves h over TLS and returns a client trusting its CA.
func testServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := New(Config{URL: srv.URL, Token: "moat_tok-a_s", CAPEM: ca, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  Config
		ok   bool
		base string
	}{
		{Config{URL: "https://h:8443"}, true, "https://h:8443"},
		{Config{URL: "https://h:8443/v1/"}, true, "https://h:8443"},
		{Config{URL: "http://h:8443"}, false, ""},
		{Config{URL: ""}, false, ""},
		{Config{URL: "h:8443"}, false, ""},
		{Config{URL: "https://h", CAPEM: []byte("not pem")}, false, ""},
		{Config{URL: "https://h", CAFile: "/nonexistent/ca.pem"}, false, ""},
	} {
		c, err := New(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("New(%+v) error = %v, want ok %v", tt.cfg, err, tt.ok)
			continue
		}
		if err == nil && c.URL() != tt.base {
			t.Errorf("New(%+v).URL() = %q, want %q", tt.cfg, c.URL(), tt.base)
		}
	}
}

func TestUntrustedServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListRegions(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("ListRegions against an untrusted server = %v, want a certificate error", err)
	}
}

func TestProblem(t *testing.T) {
	t.Parallel()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer moat_tok-a_s" {
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(400)
		json.NewEncoder(w).Encode(apitype.Problem{Status: 400, Code: "non_canonical_cidr", Field: "cidr", Detail: `"10.0.0.7/17" is not written canonically`, Hint: "use 10.0.0.0/17"})
	})
	_, err := c.CreateVPC(context.Background(), "proj-a", apitype.VPCCreate{CIDR: "10.0.0.7/17"})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("CreateVPC error = %T %v, want *Error", err, err)
	}
	if e.Status != 400 || e.Code != "non_canonical_cidr" || e.Hint != "use 10.0.0.0/17" || e.Field != "cidr" {
		t.Errorf("problem = %+v", e.Problem)
	}
	if got, want := e.Error(), `cidr: "10.0.0.7/17" is not written canonically`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !HasCode(fmt.Errorf("wrapped: %w", err), "non_canonical_cidr") {
		t.Errorf("HasCode(wrapped) = false")
	}
}

func TestNonProblemError(t *testing.T) {
	t.Parallel()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		w.Write([]byte("<html>bad gateway</html>"))
	})
	_, err := c.GetProject(context.Background(), "proj-a")
	var e *Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "http_502" || strings.Contains(e.Error(), "html") {
		t.Errorf("GetProject error = %v, want a 502 *Error without the body", err)
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/projects/proj-a/peerings" || r.URL.Query().Get("vpc_id") != "vpc-1" {
			t.Errorf("request %s", r.URL)
		}
		var out apitype.List[apitype.Peering]
		switch r.URL.Query().Get("page_token") {
		case "":
			out = apitype.List[apitype.Peering]{Items: []apitype.Peering{{ID: "pcx-1"}, {ID: "pcx-2"}}, NextPageToken: "t2"}
		case "t2":
			out = apitype.List[apitype.Peering]{Items: []apitype.Peering{{ID: "pcx-3"}}}
		}
		json.NewEncoder(w).Encode(out)
	})
	got, err := c.ListPeerings(context.Background(), "proj-a", "vpc-1", WithPageSize(2))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range got {
		ids = append(ids, p.ID)
	}
	if want := []string{"pcx-1", "pcx-2", "pcx-3"}; !cmp.Equal(ids, want) {
		t.Errorf("ListPeerings = %v, want %v", ids, want)
	}
}

// TestIdempotentRetry drops the connection of a create's first attempt: the
// client retries once with the same Idempotency-Key.
func TestIdempotentRetry(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		keys []string
	)
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
			return
		}
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(apitype.VPC{ID: "vpc-1"})
	})
	v, err := c.CreateVPC(context.Background(), "proj-a", apitype.VPCCreate{Name: "x"})
	if err != nil || v.ID != "vpc-1" {
		t.Fatalf("CreateVPC = %v, %v", v, err)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] || len(keys[0]) != 36 {
		t.Errorf("Idempotency-Keys = %q, want one UUID twice", keys)
	}
	if _, err := c.CreateVPC(context.Background(), "proj-a", apitype.VPCCreate{}); err != nil {
		t.Fatal(err)
	}
	if keys[2] == keys[0] {
		t.Errorf("a second create reused the key %q", keys[0])
	}
}

func TestEditAllowlistRetriesStale(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		rev  int64 = 1
		list       = []apitype.AllowEntry{{CIDR: "10.0.0.0/8"}}
		puts int
	)
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPut {
			puts++
			if puts == 1 {
				// Someone else wrote in between.
				rev++
				list = append(list, apitype.AllowEntry{CIDR: "192.0.2.0/24"})
			}
			if r.Header.Get("If-Match") != fmt.Sprintf(`"%d"`, rev) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(412)
				json.NewEncoder(w).Encode(apitype.Problem{Status: 412, Code: "stale_revision"})
				return
			}
			var in apitype.AllowlistUpdate
			json.NewDecoder(r.Body).Decode(&in)
			list = in.AllowedIPs
			rev++
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
		json.NewEncoder(w).Encode(apitype.Allowlist{AllowedIPs: list, Revision: rev})
	})
	got, err := c.EditAllowlist(context.Background(), "p", "svc", false, 0, func(cur []apitype.AllowEntry) ([]apitype.AllowEntry, error) {
		return append(cur, apitype.AllowEntry{CIDR: "198.51.100.0/24"}), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []apitype.AllowEntry{{CIDR: "10.0.0.0/8"}, {CIDR: "192.0.2.0/24"}, {CIDR: "198.51.100.0/24"}}
	if !cmp.Equal(got.AllowedIPs, want) || puts != 2 {
		t.Errorf("EditAllowlist = %v after %d PUTs, want %v after 2", got.AllowedIPs, puts, want)
	}
}

func TestWaitOperation(t *testing.T) {
	t.Parallel()
	var (
		mu sync.Mutex
		n  int
	)
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		state := []string{"pending", "running", "failed"}[min(n-1, 2)]
		mu.Unlock()
		op := apitype.Operation{ID: "op-1", State: state}
		if state == "failed" {
			op.Error = &apitype.StateInfo{Code: "boom", Message: "it broke"}
		}
		json.NewEncoder(w).Encode(op)
	})
	op, err := c.WaitOperation(context.Background(), "p", "op-1", time.Millisecond)
	var fe *OperationFailedError
	if !errors.As(err, &fe) || op.State != "failed" {
		t.Errorf("WaitOperation = %v, %v, want failed", op, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	c2 := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.Operation{ID: "op-1", State: "running"})
	})
	if _, err := c2.WaitOperation(ctx, "p", "op-1", time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitOperation past the deadline = %v, want DeadlineExceeded", err)
	}
}

// TestWaitServiceDegraded: a service that turned degraded ends the wait
// with its reason instead of polling until the deadline.
func TestWaitServiceDegraded(t *testing.T) {
	t.Parallel()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.Service{ID: "svc-1", State: "degraded", StateInfo: &apitype.StateInfo{Code: "node_failed", Message: "node node-2 failed"}})
	})
	_, err := c.WaitService(context.Background(), "p", "svc-1", time.Millisecond)
	var fe *ServiceFailedError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "is degraded: node node-2 failed") {
		t.Fatalf("WaitService = %v, want a ServiceFailedError saying degraded and why", err)
	}
}

// TestWaitAllowlistFailedNode checks that waiting for a revision stops
// with the failed node and its reason instead of waiting forever.
func TestWaitAllowlistFailedNode(t *testing.T) {
	t.Parallel()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.Allowlist{Revision: 3, AppliedRevision: 2,
			Failed: []apitype.NodeFailure{{NodeID: "node-1", Reason: &apitype.StateInfo{Code: "node_failed", Message: "the node cannot apply changes"}}}})
	})
	_, err := c.WaitAllowlist(context.Background(), "p", "svc-1", 3, time.Millisecond)
	var fe *AllowlistFailedError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "node-1: the node cannot apply changes (node_failed)") {
		t.Fatalf("WaitAllowlist = %v, want an AllowlistFailedError naming node-1 and its reason", err)
	}
}

// TestWaitBacksOff checks that a wait with no interval sees a change made
// 60 ms in within about that time (not a one-second tick), and that a
// failed VPC ends it.
func TestWaitBacksOff(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		state := "creating"
		if time.Since(start) > 60*time.Millisecond {
			state = "active"
		}
		json.NewEncoder(w).Encode(apitype.VPC{ID: "vpc-1", State: state})
	})
	v, err := c.WaitVPC(context.Background(), "p", "vpc-1", 0)
	if err != nil || v.State != "active" {
		t.Fatalf("WaitVPC = %v, %v", v, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("WaitVPC took %s for a change made after 60ms", d)
	}
	c2 := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.VPC{ID: "vpc-1", State: "failed", StateInfo: &apitype.StateInfo{Code: "x", Message: "no"}})
	})
	var fe *VPCFailedError
	if _, err := c2.WaitVPC(context.Background(), "p", "vpc-1", 0); !errors.As(err, &fe) {
		t.Errorf("WaitVPC of a failed VPC = %v, want *VPCFailedError", err)
	}
}
