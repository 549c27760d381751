package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// place puts every node of service svc on host, as the reconciler's
// placement does (the host's revision moves with it).
func (e *env) place(svc, host string) {
	e.t.Helper()
	ctx := context.Background()
	err := e.st.Update(ctx, func(tx store.Tx) error {
		nodes, err := store.List[domain.Node](ctx, tx, store.Query{Parent: svc})
		if err != nil {
			return err
		}
		for _, n := range nodes {
			n.Host = host
			if err := store.Put(ctx, tx, n); err != nil {
				return err
			}
		}
		_, err = desired.Bump(ctx, tx, desired.Affected{Services: []string{svc}})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestLongPollWakesOnlyAffectedHosts: an allowlist change answers the long
// poll of its service's host, with the change's revision, and not the
// others'; a host no change has affected answers its first poll at once.
func TestLongPollWakesOnlyAffectedHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, admin := e.project("acme")
	svcs := map[string]string{} // host → service
	for _, h := range []string{"h1", "h2"} {
		var svc apitype.Service
		e.must(201, &svc, "POST", "/v1/projects/"+p+"/services", admin, apitype.ServiceCreate{Name: "db-" + h, Region: "us-east-1"})
		setState[domain.Service](e, svc.ID, domain.StateRunning)
		e.place(svc.ID, h)
		svcs[h] = svc.ID
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel() // ends the polls still waiting
	poll := func(host, token string, after int64) <-chan apitype.HostDesired {
		out := make(chan apitype.HostDesired, 1)
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/hosts/%s/desired?after=%d", e.http.URL, host, after), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		go func() {
			res, err := e.http.Client().Do(req)
			if err != nil {
				return // canceled
			}
			defer res.Body.Close()
			var d apitype.HostDesired
			if err := json.NewDecoder(res.Body).Decode(&d); err != nil || res.StatusCode != 200 {
				t.Errorf("poll %s: %d, %v", host, res.StatusCode, err)
			}
			out <- d
		}()
		return out
	}
	tokens := map[string]string{"h1": e.addAgentToken("h1"), "h2": e.addAgentToken("h2"), "h-new": e.addAgentToken("h-new")}
	revs := map[string]int64{}
	for h, tok := range tokens {
		d := <-poll(h, tok, 0)
		if d.Revision == 0 {
			t.Errorf("first poll of %s = revision 0, want the current one", h)
		}
		revs[h] = d.Revision
	}

	allow := func(h, cidr string) {
		e.must(200, nil, "PUT", "/v1/projects/"+p+"/services/"+svcs[h]+"/allowlist", admin,
			apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: cidr}}})
	}
	h1, h2, hNew := poll("h1", tokens["h1"], revs["h1"]), poll("h2", tokens["h2"], revs["h2"]), poll("h-new", tokens["h-new"], revs["h-new"])
	allow("h2", "203.0.113.0/24")
	var d2 apitype.HostDesired
	select {
	case d2 = <-h2:
	case <-time.After(10 * time.Second):
		t.Fatal("h2's long poll still waiting 10s after its service's allowlist change")
	}
	allow("h1", "198.51.100.0/24")
	select {
	case d1 := <-h1:
		if d1.Revision <= d2.Revision {
			t.Errorf("h1's poll answered revision %d, not later than h2's change (%d): woken by another host's change", d1.Revision, d2.Revision)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("h1's long poll still waiting 10s after its service's allowlist change")
	}
	select {
	case d := <-hNew:
		t.Errorf("the poll of a host without nodes answered (revision %d) after other hosts' changes", d.Revision)
	default:
	}
}
