// Package storetest is the conformance suite every store.Store passes, in
// the shape of testing/fstest.TestFS: an implementation's tests call Run
// with a function that makes a fresh, empty store.
//
// Only tests import it.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Run tests the store.Store implementation that newStore makes. Each
// subtest calls newStore for a fresh, empty store of its own, and closes it
// when it ends; subtests run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"CreateExisting", testCreateExisting},
		{"GetMissing", testGetMissing},
		{"CompareAndSwap", testCompareAndSwap},
		{"PutInvalid", testPutInvalid},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"Rollback", testRollback},
		{"RollbackOnPanic", testRollbackOnPanic},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ViewSnapshot", testViewSnapshot},
		{"SerializedUpdates", testSerializedUpdates},
		{"Audit", testAudit},
		{"AuditSeqGap", testAuditSeqGap},
		{"Checkpoints", testCheckpoints},
		{"Meta", testMeta},
		{"Idempotency", testIdempotency},
		{"Revision", testRevision},
		{"WaitRevisionWakes", testWaitRevisionWakes},
		{"WaitRevisionNotOnRollback", testWaitRevisionNotOnRollback},
		{"WaitRevisionContext", testWaitRevisionContext},
		{"CanceledContext", testCanceledContext},
		{"CanceledMidUpdate", testCanceledMidUpdate},
		{"TypedHelpers", testTypedHelpers},
		{"OperationProgress", testOperationProgress},
		{"NodeDeparture", testNodeDeparture},
	}
	tests = append(tests, hostTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func rec(kind, id, project, parent, state string, data any) store.Record {
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return store.Record{Kind: kind, ID: id, ProjectID: project, Parent: parent, Name: id + "-name", State: state, Data: b}
}

// jsonEqual compares JSON documents, not bytes: PostgreSQL's jsonb
// reorders keys.
var jsonEqual = cmp.Comparer(func(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	return cmp.Equal(x, y)
})

func put(t *testing.T, tx store.Tx, r store.Record) int64 {
	t.Helper()
	rev, err := tx.Put(t.Context(), r)
	if err != nil {
		t.Fatalf("Put(%s %s rev %d): %v", r.Kind, r.ID, r.Revision, err)
	}
	return rev
}

func testCreateGet(t *testing.T, s store.Store) {
	want := rec("vpc", "vpc-a", "proj-1", "", "active", map[string]any{"cidr": "10.0.0.0/16", "n": 1})
	update(t, s, func(tx store.Tx) error {
		if rev := put(t, tx, want); rev != 1 {
			t.Errorf("create returned revision %d, want 1", rev)
		}
		// A transaction reads its own writes.
		got, err := tx.Get(t.Context(), "vpc", "vpc-a")
		if err != nil {
			t.Fatalf("Get in the writing transaction: %v", err)
		}
		if got.Revision != 1 {
			t.Errorf("Get in the writing transaction: revision %d, want 1", got.Revision)
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.Get(t.Context(), "vpc", "vpc-a")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.Seq <= 0 {
			t.Errorf("Get: Seq = %d, want > 0", got.Seq)
		}
		want.Revision, want.Seq = 1, got.Seq
		if diff := cmp.Diff(want, got, jsonEqual); diff != "" {
			t.Errorf("Get mismatch (-want +got):\n%s", diff)
		}
		return nil
	})
}

func testCreateExisting(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	for _, r := range []store.Record{
		rec("vpc", "vpc-a", "proj-1", "", "active", 2),
		rec("service", "vpc-a", "proj-2", "", "running", 3), // IDs are unique across kinds
	} {
		err := s.Update(t.Context(), func(tx store.Tx) error {
			_, err := tx.Put(t.Context(), r)
			return err
		})
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("create %s %s over an existing ID: %v, want ErrConflict", r.Kind, r.ID, err)
		}
	}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.Get(t.Context(), "vpc", "vpc-a")
		if err != nil || got.Revision != 1 || string(got.Data) != "1" {
			t.Errorf("after refused creates: Get = %+v, %v; want revision 1, data 1", got, err)
		}
		return nil
	})
}

func testGetMissing(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, k := range [][2]string{{"vpc", "vpc-missing"}, {"service", "vpc-a"}, {"", "vpc-a"}} {
			if _, err := tx.Get(t.Context(), k[0], k[1]); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get(%q, %q) = %v, want ErrNotFound", k[0], k[1], err)
			}
		}
		return nil
	})
}

func testCompareAndSwap(t *testing.T, s store.Store) {
	r := rec("service", "svc-a", "proj-1", "vpc-a", "creating", map[string]int{"v": 1})
	update(t, s, func(tx store.Tx) error {
		put(t, tx, r)
		return nil
	})
	var seq int64
	view(t, s, func(tx store.Tx) error {
		got, err := tx.Get(t.Context(), "service", "svc-a")
		seq = got.Seq
		return err
	})
	r2 := rec("service", "svc-a", "proj-1", "vpc-b", "running", map[string]int{"v": 2})
	r2.Revision = 1
	update(t, s, func(tx store.Tx) error {
		if rev := put(t, tx, r2); rev != 2 {
			t.Errorf("replace returned revision %d, want 2", rev)
		}
		return nil
	})
	// The writer that read revision 1 is now stale.
	stale := rec("service", "svc-a", "proj-1", "", "failed", map[string]int{"v": 3})
	stale.Revision = 1
	err := s.Update(t.Context(), func(tx store.Tx) error {
		_, err := tx.Put(t.Context(), stale)
		return err
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale Put = %v, want ErrConflict", err)
	}
	ahead := stale
	ahead.Revision = 7
	err = s.Update(t.Context(), func(tx store.Tx) error {
		_, err := tx.Put(t.Context(), ahead)
		return err
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put expecting a future revision = %v, want ErrConflict", err)
	}
	for _, m := range []store.Record{
		{Kind: "service", ID: "svc-missing", Revision: 1, Data: []byte("{}")},
		{Kind: "vpc", ID: "svc-a", Revision: 2, Data: []byte("{}")}, // another kind
	} {
		err = s.Update(t.Context(), func(tx store.Tx) error {
			_, err := tx.Put(t.Context(), m)
			return err
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Put(%s %s rev %d) = %v, want ErrNotFound", m.Kind, m.ID, m.Revision, err)
		}
	}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.Get(t.Context(), "service", "svc-a")
		if err != nil {
			t.Fatal(err)
		}
		r2.Revision, r2.Seq = 2, seq
		if diff := cmp.Diff(r2, got, jsonEqual); diff != "" {
			t.Errorf("after replace and refused writes (-want +got):\n%s", diff)
		}
		return nil
	})
}

func testPutInvalid(t *testing.T, s store.Store) {
	for _, r := range []store.Record{
		{Kind: "vpc", ID: "vpc-a", Data: []byte("{not json")},
		{Kind: "vpc", ID: "vpc-a"},
		{Kind: "", ID: "vpc-a", Data: []byte("{}")},
		{Kind: "vpc", ID: "", Data: []byte("{}")},
	} {
		err := s.Update(t.Context(), func(tx store.Tx) error {
			_, err := tx.Put(t.Context(), r)
			return err
		})
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Put(%+v) = %v, want an error of its own", r, err)
		}
	}
}

func ids(recs []store.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func testList(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		for _, r := range []store.Record{
			rec("vpc", "vpc-3", "proj-1", "", "active", 0), // created first, sorts last by ID
			rec("peering", "pcx-1", "proj-1", "vpc-3", "active", 0),
			rec("vpc", "vpc-1", "proj-2", "", "active", 0),
			rec("vpc", "vpc-2", "proj-1", "", "deleted", 0),
			rec("peering", "pcx-2", "proj-1", "vpc-1", "active", 0),
			rec("peering", "pcx-3", "proj-1", "vpc-3", "deleted", 0),
			rec("vpc", "vpc-0", "proj-1", "", "creating", 0),
		} {
			put(t, tx, r)
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		all, err := tx.List(t.Context(), store.Query{Kind: "vpc", IncludeDeleted: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(all); i++ {
			if all[i].Seq <= all[i-1].Seq {
				t.Errorf("List: Seq %d after %d, want increasing", all[i].Seq, all[i-1].Seq)
			}
		}
		for _, tc := range []struct {
			q    store.Query
			want []string
		}{
			{store.Query{Kind: "vpc"}, []string{"vpc-3", "vpc-1", "vpc-0"}},
			{store.Query{Kind: "vpc", IncludeDeleted: true}, []string{"vpc-3", "vpc-1", "vpc-2", "vpc-0"}},
			{store.Query{Kind: "vpc", ProjectID: "proj-1"}, []string{"vpc-3", "vpc-0"}},
			{store.Query{Kind: "vpc", ProjectID: "proj-1", IncludeDeleted: true}, []string{"vpc-3", "vpc-2", "vpc-0"}},
			{store.Query{Kind: "vpc", ProjectID: "proj-9"}, []string{}},
			{store.Query{Kind: "peering", Parent: "vpc-3"}, []string{"pcx-1"}},
			{store.Query{Kind: "peering", Parent: "vpc-3", IncludeDeleted: true}, []string{"pcx-1", "pcx-3"}},
			{store.Query{Kind: "peering", ProjectID: "proj-1", Parent: "vpc-1"}, []string{"pcx-2"}},
			{store.Query{Kind: "peering", ProjectID: "proj-2", Parent: "vpc-1"}, []string{}},
			{store.Query{Kind: "vpc", Limit: 2}, []string{"vpc-3", "vpc-1"}},
			{store.Query{Kind: "vpc", After: all[1].Seq}, []string{"vpc-0"}},
			{store.Query{Kind: "vpc", After: all[1].Seq, IncludeDeleted: true, Limit: 1}, []string{"vpc-2"}},
			{store.Query{Kind: "vpc", After: all[3].Seq}, []string{}},
			{store.Query{Kind: "node"}, []string{}},
			{store.Query{Kind: "vpc", States: []string{"creating", "deleted"}}, []string{"vpc-0"}},
			{store.Query{Kind: "vpc", States: []string{"creating", "deleted"}, IncludeDeleted: true}, []string{"vpc-2", "vpc-0"}},
			{store.Query{Kind: "peering", ProjectID: "proj-1", States: []string{"active"}}, []string{"pcx-1", "pcx-2"}},
		} {
			got, err := tx.List(t.Context(), tc.q)
			if err != nil {
				t.Errorf("List(%+v): %v", tc.q, err)
				continue
			}
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("List(%+v) mismatch (-want +got):\n%s", tc.q, diff)
			}
		}
		return nil
	})
}

func testListPagination(t *testing.T, s store.Store) {
	const n = 25
	var want []string
	update(t, s, func(tx store.Tx) error {
		for i := range n {
			id := fmt.Sprintf("node-%02d", n-i)
			state := "running"
			if i%5 == 0 {
				state = "deleted"
			} else {
				want = append(want, id)
			}
			put(t, tx, rec("node", id, "proj-1", "svc-1", state, i))
		}
		return nil
	})
	var got []string
	var after int64
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("pagination does not end")
		}
		var page []store.Record
		view(t, s, func(tx store.Tx) error {
			var err error
			page, err = tx.List(t.Context(), store.Query{Kind: "node", Parent: "svc-1", After: after, Limit: 4})
			return err
		})
		if len(page) > 4 {
			t.Fatalf("page of %d records, want at most 4", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, ids(page)...)
		after = page[len(page)-1].Seq
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paginated listing mismatch (-want +got):\n%s", diff)
	}
}

var errTest = errors.New("test: fn failed")

func testRollback(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	err := s.Update(t.Context(), func(tx store.Tx) error {
		ctx := t.Context()
		r := rec("vpc", "vpc-a", "proj-1", "", "deleting", 2)
		r.Revision = 1
		put(t, tx, r)
		put(t, tx, rec("vpc", "vpc-b", "proj-1", "", "active", 1))
		if _, err := tx.BumpRevision(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.AppendAudit(ctx, auditEntry(1, "proj-1")); err != nil {
			t.Fatal(err)
		}
		if err := tx.PutCheckpoint(ctx, domain.AuditCheckpoint{Seq: 1, Hash: "h", KeyID: "k", Signature: "s"}); err != nil {
			t.Fatal(err)
		}
		if err := tx.PutMeta(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := tx.PutIdempotency(ctx, store.Idempotency{Key: "i", Status: 201}); err != nil {
			t.Fatal(err)
		}
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	checkRolledBack(t, s)
}

// checkRolledBack checks that only vpc-a at revision 1 is stored.
func checkRolledBack(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		if got, err := tx.Get(ctx, "vpc", "vpc-a"); err != nil || got.Revision != 1 || got.State != "active" {
			t.Errorf("vpc-a = %+v, %v; want revision 1, active", got, err)
		}
		if _, err := tx.Get(ctx, "vpc", "vpc-b"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(vpc-b) = %v, want ErrNotFound", err)
		}
		if _, err := tx.LastAudit(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LastAudit = %v, want ErrNotFound", err)
		}
		if cps, err := tx.ListCheckpoints(ctx); err != nil || len(cps) != 0 {
			t.Errorf("ListCheckpoints = %v, %v; want none", cps, err)
		}
		if _, err := tx.GetMeta(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMeta = %v, want ErrNotFound", err)
		}
		if _, err := tx.GetIdempotency(ctx, "i"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetIdempotency = %v, want ErrNotFound", err)
		}
		return nil
	})
	if rev, err := s.Revision(ctx); err != nil || rev != 0 {
		t.Errorf("Revision = %d, %v; want 0", rev, err)
	}
}

func testRollbackOnPanic(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want fn's panic", r)
			}
		}()
		s.Update(t.Context(), func(tx store.Tx) error {
			put(t, tx, rec("vpc", "vpc-b", "proj-1", "", "active", 1))
			tx.BumpRevision(t.Context())
			panic("boom")
		})
	}()
	checkRolledBack(t, s)
	// The store still works: the write lock was released.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Update(ctx, func(tx store.Tx) error {
		_, err := tx.Put(ctx, rec("vpc", "vpc-c", "proj-1", "", "active", 1))
		return err
	}); err != nil {
		t.Errorf("Update after a panic: %v", err)
	}
}

func testViewIsReadOnly(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	writes := map[string]func(tx store.Tx) error{
		"Put": func(tx store.Tx) error {
			_, err := tx.Put(ctx, rec("vpc", "vpc-b", "proj-1", "", "active", 1))
			return err
		},
		"BumpRevision": func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err },
		"AppendAudit":  func(tx store.Tx) error { return tx.AppendAudit(ctx, auditEntry(1, "")) },
		"PutCheckpoint": func(tx store.Tx) error {
			return tx.PutCheckpoint(ctx, domain.AuditCheckpoint{Seq: 1})
		},
		"PutMeta":        func(tx store.Tx) error { return tx.PutMeta(ctx, "k", []byte("v")) },
		"PutIdempotency": func(tx store.Tx) error { return tx.PutIdempotency(ctx, store.Idempotency{Key: "i"}) },
		"DeleteIdempotencyBefore": func(tx store.Tx) error {
			_, err := tx.DeleteIdempotencyBefore(ctx, 1<<40)
			return err
		},
	}
	for name, w := range writes {
		if err := s.View(ctx, w); err == nil {
			t.Errorf("%s in View succeeded", name)
		}
	}
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.Get(ctx, "vpc", "vpc-b"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(vpc-b) after a write in View = %v, want ErrNotFound", err)
		}
		return nil
	})
	if rev, err := s.Revision(ctx); err != nil || rev != 0 {
		t.Errorf("Revision = %d, %v; want 0", rev, err)
	}
}

// testViewSnapshot checks that a View does not see a commit made after it
// began reading.
func testViewSnapshot(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		before, err := tx.List(ctx, store.Query{Kind: "vpc"})
		if err != nil {
			t.Fatal(err)
		}
		update(t, s, func(tx store.Tx) error {
			put(t, tx, rec("vpc", "vpc-b", "proj-1", "", "active", 1))
			return nil
		})
		after, err := tx.List(ctx, store.Query{Kind: "vpc"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(before), ids(after)); diff != "" {
			t.Errorf("a View saw a later commit (-before +after):\n%s", diff)
		}
		return nil
	})
}

// testSerializedUpdates runs read-modify-write transactions from many
// goroutines on one counter: serialized, none conflicts or is lost.
func testSerializedUpdates(t *testing.T, s store.Store) {
	const workers, each = 16, 8
	type counter struct{ N int }
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("counter", "c", "", "", "active", counter{}))
		return nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- s.Update(t.Context(), func(tx store.Tx) error {
					r, err := tx.Get(t.Context(), "counter", "c")
					if err != nil {
						return err
					}
					var c counter
					if err := json.Unmarshal(r.Data, &c); err != nil {
						return err
					}
					c.N++
					r.Data, _ = json.Marshal(c)
					if _, err := tx.Put(t.Context(), r); err != nil {
						return err
					}
					_, err = tx.BumpRevision(t.Context())
					return err
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	view(t, s, func(tx store.Tx) error {
		r, err := tx.Get(t.Context(), "counter", "c")
		if err != nil {
			t.Fatal(err)
		}
		var c counter
		json.Unmarshal(r.Data, &c)
		if c.N != workers*each || r.Revision != workers*each+1 {
			t.Errorf("counter = %d at revision %d, want %d at %d", c.N, r.Revision, workers*each, workers*each+1)
		}
		return nil
	})
	if rev, err := s.Revision(t.Context()); err != nil || rev != workers*each {
		t.Errorf("Revision = %d, %v; want %d", rev, err, workers*each)
	}
}

func auditEntry(seq int64, project string) domain.AuditEntry {
	return domain.AuditEntry{
		Seq:       seq,
		Time:      time.Date(2026, 1, 2, 3, 4, 5, int(seq)*1001+7, time.FixedZone("X", 3600)),
		Actor:     "tok-" + fmt.Sprint(seq),
		ProjectID: project,
		Action:    "vpc.create",
		Target:    "vpc-x",
		RequestID: "req-1",
		Source:    "192.0.2.1",
		Outcome:   domain.OutcomeSuccess,
		Detail:    `{"cidr":"10.0.0.0/16"}`,
		PrevHash:  fmt.Sprintf("h%d", seq-1),
		Hash:      fmt.Sprintf("h%d", seq),
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.LastAudit(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LastAudit of an empty log = %v, want ErrNotFound", err)
		}
		if got, err := tx.ListAudit(ctx, store.AuditQuery{}); err != nil || len(got) != 0 {
			t.Errorf("ListAudit of an empty log = %v, %v", got, err)
		}
		return nil
	})
	var all []domain.AuditEntry
	for i := int64(1); i <= 6; i++ {
		project := "proj-1"
		if i%3 == 0 {
			project = ""
		} else if i%2 == 0 {
			project = "proj-2"
		}
		all = append(all, auditEntry(i, project))
	}
	update(t, s, func(tx store.Tx) error {
		for _, e := range all[:3] {
			if err := tx.AppendAudit(ctx, e); err != nil {
				t.Fatalf("AppendAudit(%d): %v", e.Seq, err)
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		for _, e := range all[3:] {
			if err := tx.AppendAudit(ctx, e); err != nil {
				t.Fatalf("AppendAudit(%d): %v", e.Seq, err)
			}
		}
		return nil
	})
	pick := func(seqs ...int64) []domain.AuditEntry {
		out := []domain.AuditEntry{}
		for _, s := range seqs {
			out = append(out, all[s-1])
		}
		return out
	}
	view(t, s, func(tx store.Tx) error {
		last, err := tx.LastAudit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// cmp compares times with Equal: the instant, to the nanosecond.
		if diff := cmp.Diff(all[5], last); diff != "" {
			t.Errorf("LastAudit mismatch (-want +got):\n%s", diff)
		}
		for _, tc := range []struct {
			q    store.AuditQuery
			want []domain.AuditEntry
		}{
			{store.AuditQuery{}, all},
			{store.AuditQuery{After: 2}, pick(3, 4, 5, 6)},
			{store.AuditQuery{After: 2, Limit: 2}, pick(3, 4)},
			{store.AuditQuery{Limit: 1}, pick(1)},
			{store.AuditQuery{ProjectID: "proj-1"}, pick(1, 5)},
			{store.AuditQuery{ProjectID: "proj-2", After: 2}, pick(4)},
			{store.AuditQuery{After: 6}, pick()},
		} {
			got, err := tx.ListAudit(ctx, tc.q)
			if err != nil {
				t.Errorf("ListAudit(%+v): %v", tc.q, err)
				continue
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b []domain.AuditEntry) bool {
				return len(a) == 0 && len(b) == 0 || cmp.Equal(a, b)
			})); diff != "" {
				t.Errorf("ListAudit(%+v) mismatch (-want +got):\n%s", tc.q, diff)
			}
		}
		return nil
	})
}

func testAuditSeqGap(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, seq := range []int64{0, 2, -1} {
		err := s.Update(ctx, func(tx store.Tx) error { return tx.AppendAudit(ctx, auditEntry(seq, "")) })
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("AppendAudit(%d) to an empty log = %v, want ErrConflict", seq, err)
		}
	}
	update(t, s, func(tx store.Tx) error {
		for i := int64(1); i <= 2; i++ {
			if err := tx.AppendAudit(ctx, auditEntry(i, "")); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	for _, seq := range []int64{1, 2, 4, 100} {
		err := s.Update(ctx, func(tx store.Tx) error { return tx.AppendAudit(ctx, auditEntry(seq, "")) })
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("AppendAudit(%d) after 2 = %v, want ErrConflict", seq, err)
		}
	}
	view(t, s, func(tx store.Tx) error {
		if last, err := tx.LastAudit(ctx); err != nil || last.Seq != 2 {
			t.Errorf("LastAudit = %d, %v; want 2", last.Seq, err)
		}
		return nil
	})
}

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	cp := func(seq int64) domain.AuditCheckpoint {
		return domain.AuditCheckpoint{Seq: seq, Hash: fmt.Sprintf("h%d", seq),
			Time: time.Unix(1700000000, seq*999).In(time.FixedZone("Y", -7200)), KeyID: "key-1", Signature: fmt.Sprintf("sig%d", seq)}
	}
	view(t, s, func(tx store.Tx) error {
		if got, err := tx.ListCheckpoints(ctx); err != nil || len(got) != 0 {
			t.Errorf("ListCheckpoints of none = %v, %v", got, err)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		for _, seq := range []int64{10, 3, 7} {
			if err := tx.PutCheckpoint(ctx, cp(seq)); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	dup := cp(7)
	dup.Signature = "other"
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.PutCheckpoint(ctx, dup) }); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutCheckpoint of an existing seq = %v, want ErrConflict", err)
	}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListCheckpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.AuditCheckpoint{cp(3), cp(7), cp(10)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ListCheckpoints mismatch (-want +got):\n%s", diff)
		}
		return nil
	})
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	binary := []byte{0, 1, 2, 0xff, 'x'}
	update(t, s, func(tx store.Tx) error {
		if _, err := tx.GetMeta(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMeta(missing) = %v, want ErrNotFound", err)
		}
		for _, kv := range []struct {
			k string
			v []byte
		}{{"k", []byte("one")}, {"k", binary}, {"empty", nil}} {
			if err := tx.PutMeta(ctx, kv.k, kv.v); err != nil {
				t.Fatalf("PutMeta(%q): %v", kv.k, err)
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		if got, err := tx.GetMeta(ctx, "k"); err != nil || string(got) != string(binary) {
			t.Errorf("GetMeta(k) = %q, %v; want %q", got, err, binary)
		}
		if got, err := tx.GetMeta(ctx, "empty"); err != nil || len(got) != 0 {
			t.Errorf("GetMeta(empty) = %q, %v; want empty", got, err)
		}
		return nil
	})
	// The revision is BumpRevision's alone.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.PutMeta(ctx, "revision", []byte("99")) }); err == nil {
		t.Error(`PutMeta("revision") succeeded`)
	}
	if rev, err := s.Revision(ctx); err != nil || rev != 0 {
		t.Errorf("Revision = %d, %v; want 0", rev, err)
	}
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := store.Idempotency{Key: "tok-1 POST /v1/vpcs k1", RequestHash: "rh", Status: 202, Body: []byte(`{"id":"vpc-a"}`), CreatedAt: 1700000000}
	update(t, s, func(tx store.Tx) error {
		if _, err := tx.GetIdempotency(ctx, first.Key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetIdempotency(missing) = %v, want ErrNotFound", err)
		}
		if err := tx.PutIdempotency(ctx, first); err != nil {
			t.Fatal(err)
		}
		return tx.PutIdempotency(ctx, store.Idempotency{Key: "empty", Status: 204})
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetIdempotency(ctx, first.Key)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Errorf("GetIdempotency mismatch (-want +got):\n%s", diff)
		}
		if got, err := tx.GetIdempotency(ctx, "empty"); err != nil || got.Status != 204 || len(got.Body) != 0 {
			t.Errorf("GetIdempotency(empty) = %+v, %v", got, err)
		}
		return nil
	})
	// A later Put with the key replaces it (an expired record).
	second := first
	second.RequestHash, second.Status, second.Body, second.CreatedAt = "rh2", 201, []byte("{}"), 1800000000
	update(t, s, func(tx store.Tx) error { return tx.PutIdempotency(ctx, second) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetIdempotency(ctx, first.Key)
		if diff := cmp.Diff(second, got); err != nil || diff != "" {
			t.Errorf("GetIdempotency after replacing: %v, mismatch (-want +got):\n%s", err, diff)
		}
		return nil
	})
	// Expiry deletes the records created before the cut-off, no others.
	update(t, s, func(tx store.Tx) error {
		n, err := tx.DeleteIdempotencyBefore(ctx, 1800000000)
		if err != nil || n != 1 {
			t.Errorf("DeleteIdempotencyBefore = %d, %v; want 1 (the record created at 0)", n, err)
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.GetIdempotency(ctx, "empty"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetIdempotency(expired) = %v, want ErrNotFound", err)
		}
		if _, err := tx.GetIdempotency(ctx, first.Key); err != nil {
			t.Errorf("GetIdempotency(live) = %v, want the record", err)
		}
		return nil
	})
}

func testRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	if rev, err := s.Revision(ctx); err != nil || rev != 0 {
		t.Fatalf("Revision of a new store = %d, %v; want 0", rev, err)
	}
	update(t, s, func(tx store.Tx) error {
		for want := int64(1); want <= 2; want++ {
			if rev, err := tx.BumpRevision(ctx); err != nil || rev != want {
				t.Errorf("BumpRevision = %d, %v; want %d", rev, err, want)
			}
		}
		return nil
	})
	if rev, err := s.Revision(ctx); err != nil || rev != 2 {
		t.Errorf("Revision = %d, %v; want 2", rev, err)
	}
	s.Update(ctx, func(tx store.Tx) error {
		tx.BumpRevision(ctx)
		return errTest
	})
	if rev, err := s.Revision(ctx); err != nil || rev != 2 {
		t.Errorf("Revision after a rolled-back bump = %d, %v; want 2", rev, err)
	}
	// An Update that does not bump leaves the revision alone.
	update(t, s, func(tx store.Tx) error { return tx.PutMeta(ctx, "k", nil) })
	if rev, err := s.Revision(ctx); err != nil || rev != 2 {
		t.Errorf("Revision = %d, %v; want 2", rev, err)
	}
}

// maxWake bounds how long after a commit WaitRevision returns. The stores
// wake in about a millisecond; the bound leaves room for a loaded machine
// yet stays below sqlitestore's poll interval, so it tests the wake-up.
const maxWake = 300 * time.Millisecond

func testWaitRevisionWakes(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
	// Already past: returns at once.
	if rev, err := s.WaitRevision(ctx, 0); err != nil || rev != 1 {
		t.Errorf("WaitRevision(0) = %d, %v; want 1", rev, err)
	}
	for round := range 3 {
		after := int64(round + 1)
		type result struct {
			rev int64
			err error
			at  time.Time
		}
		got := make(chan result, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			rev, err := s.WaitRevision(ctx, after)
			got <- result{rev, err, time.Now()}
		}()
		<-started
		time.Sleep(20 * time.Millisecond) // let it block
		select {
		case r := <-got:
			t.Fatalf("WaitRevision(%d) returned %d, %v before any commit", after, r.rev, r.err)
		default:
		}
		update(t, s, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
		committed := time.Now()
		select {
		case r := <-got:
			if r.err != nil || r.rev != after+1 {
				t.Errorf("WaitRevision(%d) = %d, %v; want %d", after, r.rev, r.err, after+1)
			}
			if d := r.at.Sub(committed); d > maxWake {
				t.Errorf("WaitRevision woke %v after the commit, want under %v", d, maxWake)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("WaitRevision(%d) still blocked 10s after the commit", after)
		}
	}
}

func testWaitRevisionNotOnRollback(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := s.WaitRevision(ctx, 0)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Update(ctx, func(tx store.Tx) error {
		tx.BumpRevision(ctx)
		return errTest
	})
	select {
	case err := <-got:
		t.Fatalf("WaitRevision returned (%v) after a rolled-back bump", err)
	case <-time.After(maxWake * 2):
	}
	update(t, s, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
	if err := <-got; err != nil {
		t.Errorf("WaitRevision after a committed bump: %v", err)
	}
}

func testWaitRevisionContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.WaitRevision(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRevision with a deadline = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("WaitRevision returned %v after its deadline", d)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.WaitRevision(canceled, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitRevision with a canceled context = %v, want Canceled", err)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	err := s.Update(ctx, func(tx store.Tx) error {
		ran = true
		_, err := tx.Put(ctx, rec("vpc", "vpc-a", "", "", "active", 1))
		return err
	})
	if err == nil {
		t.Errorf("Update with a canceled context succeeded (fn ran: %v)", ran)
	}
	if err := s.View(ctx, func(tx store.Tx) error {
		_, err := tx.List(ctx, store.Query{Kind: "vpc"})
		return err
	}); err == nil {
		t.Error("View with a canceled context succeeded")
	}
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.Get(t.Context(), "vpc", "vpc-a"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get after a canceled Update = %v, want ErrNotFound", err)
		}
		return nil
	})
}

// testCanceledMidUpdate cancels an Update's context after fn has written:
// nothing is kept, whether fn notices or not.
func testCanceledMidUpdate(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	for _, ignore := range []bool{false, true} {
		ctx, cancel := context.WithCancel(t.Context())
		err := s.Update(ctx, func(tx store.Tx) error {
			r := rec("vpc", "vpc-a", "proj-1", "", "deleting", 2)
			r.Revision = 1
			put(t, tx, r)
			if _, err := tx.BumpRevision(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			_, err := tx.Put(ctx, rec("vpc", "vpc-b", "proj-1", "", "active", 1))
			if ignore {
				return nil // commit must still fail
			}
			return err
		})
		if err == nil {
			t.Errorf("Update canceled midway (fn ignores errors: %v) succeeded", ignore)
		}
		checkRolledBack(t, s)
	}
}

func testTypedHelpers(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	vpc := &domain.VPC{Meta: domain.Meta{ID: "vpc-aaaaaaaaaaaaaaaa", ProjectID: "proj-1", Name: "main", State: domain.StateCreating, CreatedAt: created, UpdatedAt: created},
		Region: "eu-west-1", CIDR: "10.0.0.0/16"}
	svc := &domain.Service{Meta: domain.Meta{ID: "svc-aaaaaaaaaaaaaaaa", ProjectID: "proj-1", Name: "db", State: domain.StateRunning, CreatedAt: created},
		Region: "eu-west-1", NodeCount: 2, VPCID: vpc.ID, AllowedIPs: domain.DefaultAllowlist(), AllowlistRevision: 1,
		// A tenant's settings, one pending a restart (design 0021).
		Settings: map[string]string{"statement_timeout": "30s", "max_connections": "200"}, NodeSettings: map[string]string{"max_connections": "150"}, SettingsRevision: 7}
	node := &domain.Node{Meta: domain.Meta{ID: "node-aaaaaaaaaaaaaaaa", ProjectID: "proj-1", State: domain.StateRunning, CreatedAt: created},
		ServiceID: svc.ID, Settings: map[string]string{"max_connections": "150"}}
	update(t, s, func(tx store.Tx) error {
		if err := store.Put(ctx, tx, node); err != nil {
			t.Fatal(err)
		}
		if err := store.Put(ctx, tx, vpc); err != nil {
			t.Fatal(err)
		}
		return store.Put(ctx, tx, svc)
	})
	if vpc.Revision != 1 || svc.Revision != 1 {
		t.Errorf("after create: revisions %d, %d; want 1, 1", vpc.Revision, svc.Revision)
	}
	update(t, s, func(tx store.Tx) error {
		got, err := store.Get[domain.VPC](ctx, tx, vpc.ID)
		if err != nil {
			t.Fatal(err)
		}
		got.State = domain.StateActive
		if err := store.Put(ctx, tx, got); err != nil {
			t.Fatal(err)
		}
		if got.Revision != 2 {
			t.Errorf("after replace: revision %d, want 2", got.Revision)
		}
		// vpc is now stale.
		vpc.State = domain.StateFailed
		if err := store.Put(ctx, tx, vpc); !errors.Is(err, store.ErrConflict) {
			t.Errorf("stale store.Put = %v, want ErrConflict", err)
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := store.Get[domain.VPC](ctx, tx, vpc.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := *vpc
		want.State, want.Revision = domain.StateActive, 2
		want.Seq = got.Seq
		if got.Seq <= 0 {
			t.Errorf("Seq = %d, want > 0", got.Seq)
		}
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("store.Get mismatch (-want +got):\n%s", diff)
		}
		if _, err := store.Get[domain.Service](ctx, tx, vpc.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("store.Get[Service] of a VPC's ID = %v, want ErrNotFound", err)
		}
		svcs, err := store.List[domain.Service](ctx, tx, store.Query{Kind: "ignored", ProjectID: "proj-1", Parent: vpc.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(svcs) != 1 || svcs[0].ID != svc.ID || svcs[0].Revision != 1 || svcs[0].NodeCount != 2 {
			t.Errorf("store.List[Service] = %+v, want the one service", svcs)
		}
		if len(svcs) == 1 {
			want := *svc
			want.Seq = svcs[0].Seq
			if diff := cmp.Diff(&want, svcs[0]); diff != "" {
				t.Errorf("service read back (-want +got):\n%s", diff)
			}
		}
		gotNode, err := store.Get[domain.Node](ctx, tx, node.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(node.Settings, gotNode.Settings); diff != "" {
			t.Errorf("node settings read back (-want +got):\n%s", diff)
		}
		if vpcs, err := store.List[domain.VPC](ctx, tx, store.Query{ProjectID: "proj-2"}); err != nil || len(vpcs) != 0 {
			t.Errorf("store.List[VPC] of another project = %v, %v; want none", vpcs, err)
		}
		return nil
	})
}
