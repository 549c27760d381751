package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// hostTests are the per-host revisions and the host index.
var hostTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"HostRevision", testHostRevision},
	{"HostRevisionRollback", testHostRevisionRollback},
	{"WaitHostRevisionWakesOnlyAffected", testWaitHostRevisionWakesOnlyAffected},
	{"WaitHostRevisionContext", testWaitHostRevisionContext},
	{"ListByHost", testListByHost},
}

func hostRevs(t *testing.T, s store.Store, hosts ...string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, h := range hosts {
		rev, err := s.HostRevision(t.Context(), h)
		if err != nil {
			t.Fatalf("HostRevision(%q): %v", h, err)
		}
		out[h] = rev
	}
	return out
}

func bumpHosts(t *testing.T, s store.Store, hosts ...string) int64 {
	t.Helper()
	var rev int64
	update(t, s, func(tx store.Tx) (err error) { rev, err = tx.BumpHosts(t.Context(), hosts...); return err })
	return rev
}

func testHostRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	steps := []struct {
		bump  func(tx store.Tx) (int64, error)
		want  map[string]int64
		wantG int64
	}{
		{func(tx store.Tx) (int64, error) { return tx.BumpHosts(ctx, "h-a") }, map[string]int64{"h-a": 1, "h-b": 0, "h-c": 0}, 1},
		{func(tx store.Tx) (int64, error) { return tx.BumpHosts(ctx) }, map[string]int64{"h-a": 1, "h-b": 0, "h-c": 0}, 2},
		{func(tx store.Tx) (int64, error) { return tx.BumpHosts(ctx, "h-b", "h-c") }, map[string]int64{"h-a": 1, "h-b": 3, "h-c": 3}, 3},
		{func(tx store.Tx) (int64, error) { return tx.BumpRevision(ctx) }, map[string]int64{"h-a": 4, "h-b": 4, "h-c": 4}, 4},
		{func(tx store.Tx) (int64, error) { return tx.BumpHosts(ctx, "h-a") }, map[string]int64{"h-a": 5, "h-b": 4, "h-c": 4}, 5},
	}
	for i, st := range steps {
		update(t, s, func(tx store.Tx) error {
			rev, err := st.bump(tx)
			if err == nil && rev != st.wantG {
				t.Errorf("step %d: bump = %d, want %d", i, rev, st.wantG)
			}
			return err
		})
		if diff := cmp.Diff(st.want, hostRevs(t, s, "h-a", "h-b", "h-c")); diff != "" {
			t.Errorf("step %d: host revisions (-want +got):\n%s", i, diff)
		}
		if rev, err := s.Revision(ctx); err != nil || rev != st.wantG {
			t.Errorf("step %d: Revision = %d, %v; want %d", i, rev, err, st.wantG)
		}
	}
	for _, bad := range []string{"", "*"} {
		err := s.Update(ctx, func(tx store.Tx) error { _, err := tx.BumpHosts(ctx, "h-a", bad); return err })
		if err == nil {
			t.Errorf("BumpHosts(%q) succeeded", bad)
		}
	}
	if err := s.View(ctx, func(tx store.Tx) error { _, err := tx.BumpHosts(ctx, "h-a"); return err }); err == nil {
		t.Error("BumpHosts in View succeeded")
	}
	if got := hostRevs(t, s, "h-a"); got["h-a"] != 5 {
		t.Errorf("after refused bumps: HostRevision(h-a) = %d, want 5", got["h-a"])
	}
}

func testHostRevisionRollback(t *testing.T, s store.Store) {
	ctx := t.Context()
	err := s.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.BumpHosts(ctx, "h-a"); err != nil {
			t.Fatal(err)
		}
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("Update = %v, want errTest", err)
	}
	if got := hostRevs(t, s, "h-a"); got["h-a"] != 0 {
		t.Errorf("after a rolled-back bump: HostRevision(h-a) = %d, want 0", got["h-a"])
	}
}

type waitResult struct {
	rev int64
	err error
	at  time.Time
}

func waitHost(ctx context.Context, s store.Store, host string, after int64) <-chan waitResult {
	got := make(chan waitResult, 1)
	go func() {
		rev, err := s.WaitHostRevision(ctx, host, after)
		got <- waitResult{rev, err, time.Now()}
	}()
	return got
}

// expectWake checks that got delivers want within maxWake of committed.
func expectWake(t *testing.T, what string, got <-chan waitResult, want int64, committed time.Time, maxWake time.Duration) {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil || r.rev != want {
			t.Errorf("%s = %d, %v; want %d", what, r.rev, r.err, want)
		}
		if d := r.at.Sub(committed); d > maxWake {
			t.Errorf("%s woke %v after the commit, want under %v", what, d, maxWake)
		}
	case <-time.After(maxWake + 10*time.Second):
		t.Fatalf("%s still blocked after the commit", what)
	}
}

// testWaitHostRevisionWakesOnlyAffected: a host's waiter returns at the
// first change that names it (or every host), with that revision; changes
// to other hosts leave it waiting.
func testWaitHostRevisionWakesOnlyAffected(t *testing.T, s store.Store) {
	ctx := t.Context()
	bumpHosts(t, s, "h-a")
	if rev, err := s.WaitHostRevision(ctx, "h-a", 0); err != nil || rev != 1 {
		t.Errorf("WaitHostRevision(h-a, 0) = %d, %v; want 1 at once", rev, err)
	}
	a := waitHost(ctx, s, "h-a", 1)
	b := waitHost(ctx, s, "h-b", 0)
	bumpHosts(t, s, "h-c") // 2
	bumpHosts(t, s)        // 3
	bumpHosts(t, s, "h-a") // 4
	expectWake(t, "WaitHostRevision(h-a, 1)", a, 4, time.Now(), maxWake)
	select {
	case r := <-b:
		t.Fatalf("WaitHostRevision(h-b, 0) = %d, %v after changes to other hosts", r.rev, r.err)
	default:
	}
	bumpHosts(t, s, "h-b", "h-c") // 5
	expectWake(t, "WaitHostRevision(h-b, 0)", b, 5, time.Now(), maxWake)

	// BumpRevision wakes every host.
	waiters := map[string]<-chan waitResult{}
	for _, h := range []string{"h-a", "h-b", "h-new"} {
		after := hostRevs(t, s, h)[h]
		waiters[h] = waitHost(ctx, s, h, after)
	}
	update(t, s, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
	committed := time.Now()
	for h, w := range waiters {
		expectWake(t, "WaitHostRevision("+h+") after BumpRevision", w, 6, committed, maxWake)
	}
	// WaitRevision follows every bump.
	if rev, err := s.WaitRevision(ctx, 5); err != nil || rev != 6 {
		t.Errorf("WaitRevision(5) = %d, %v; want 6", rev, err)
	}
}

func testWaitHostRevisionContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	bumpHosts(t, s, "h-b")
	if _, err := s.WaitHostRevision(ctx, "h-a", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitHostRevision with a deadline = %v, want DeadlineExceeded", err)
	}
}

func testListByHost(t *testing.T, s store.Store) {
	ctx := t.Context()
	nodes := []*domain.Node{
		{Meta: domain.Meta{ID: "node-1", ProjectID: "proj-1"}, ServiceID: "svc-1", Host: "h-a"},
		{Meta: domain.Meta{ID: "node-2", ProjectID: "proj-1"}, ServiceID: "svc-1", Host: "h-b"},
		{Meta: domain.Meta{ID: "node-3", ProjectID: "proj-1"}, ServiceID: "svc-2"},
	}
	update(t, s, func(tx store.Tx) error {
		for _, n := range nodes {
			if err := store.Put(ctx, tx, n); err != nil {
				return err
			}
		}
		return nil
	})
	list := func(host string) []string {
		var out []string
		view(t, s, func(tx store.Tx) error {
			got, err := store.List[domain.Node](ctx, tx, store.Query{Host: host})
			for _, n := range got {
				out = append(out, n.ID)
			}
			return err
		})
		return out
	}
	if diff := cmp.Diff([]string{"node-1"}, list("h-a")); diff != "" {
		t.Errorf("List(host h-a) (-want +got):\n%s", diff)
	}
	// Placement moves node-3 onto h-a: the index follows the object.
	update(t, s, func(tx store.Tx) error {
		n, err := store.Get[domain.Node](ctx, tx, "node-3")
		if err != nil {
			return err
		}
		n.Host = "h-a"
		return store.Put(ctx, tx, n)
	})
	if diff := cmp.Diff([]string{"node-1", "node-3"}, list("h-a")); diff != "" {
		t.Errorf("List(host h-a) after placement (-want +got):\n%s", diff)
	}
	view(t, s, func(tx store.Tx) error {
		r, err := tx.Get(ctx, "node", "node-2")
		if err != nil || r.Host != "h-b" {
			t.Errorf("Get(node-2) = host %q, %v; want h-b", r.Host, err)
		}
		return nil
	})
}

// CheckHostsMigrated checks a store opened on a database made before
// per-host revisions, holding one node on host h1 (and a service), whose
// global revision was 5: the migration filled the host index from the
// node and started every host at the global revision.
func CheckHostsMigrated(ctx context.Context, t *testing.T, s store.Store) {
	t.Helper()
	err := s.View(ctx, func(tx store.Tx) error {
		for kind, want := range map[string]int{"node": 1, "service": 0} {
			recs, err := tx.List(ctx, store.Query{Kind: kind, Host: "h1"})
			if err != nil {
				return err
			}
			if len(recs) != want {
				t.Errorf("List(%s on h1) = %d records, want %d", kind, len(recs), want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h-other"} {
		if rev, err := s.HostRevision(ctx, h); err != nil || rev != 5 {
			t.Errorf("HostRevision(%s) = %d, %v; want 5 (the global revision at migration)", h, rev, err)
		}
	}
}
