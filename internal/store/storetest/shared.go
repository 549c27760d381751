package storetest

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/store"
)

// RunShared tests two stores over the same data, as two servers sharing
// one database see it: newPair returns them, fresh and empty, and RunShared
// closes them. A commit through one must wake the other's WaitRevision
// within maxWake, and read-write transactions must be serialized across
// both.
func RunShared(t *testing.T, maxWake time.Duration, newPair func(t *testing.T) (a, b store.Store)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b store.Store, maxWake time.Duration)
	}{
		{"SharedData", testSharedData},
		{"SharedWaitRevision", testSharedWaitRevision},
		{"SharedWaitHostRevision", testSharedWaitHostRevision},
		{"SharedInterleavedHostRevisions", testSharedInterleavedHostRevisions},
		{"SharedSerializedUpdates", testSharedSerializedUpdates},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			t.Cleanup(func() {
				if err := errors.Join(a.Close(), b.Close()); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, a, b, maxWake)
		})
	}
}

func testSharedData(t *testing.T, a, b store.Store, _ time.Duration) {
	update(t, a, func(tx store.Tx) error {
		put(t, tx, rec("vpc", "vpc-a", "proj-1", "", "active", 1))
		return nil
	})
	view(t, b, func(tx store.Tx) error {
		if _, err := tx.Get(t.Context(), "vpc", "vpc-a"); err != nil {
			t.Errorf("the other store: Get = %v", err)
		}
		return nil
	})
}

func testSharedWaitRevision(t *testing.T, a, b store.Store, maxWake time.Duration) {
	ctx := t.Context()
	for round := range 2 {
		waiter, writer := a, b
		if round == 1 {
			waiter, writer = b, a
		}
		after := int64(round)
		type result struct {
			rev int64
			err error
			at  time.Time
		}
		got := make(chan result, 1)
		go func() {
			rev, err := waiter.WaitRevision(ctx, after)
			got <- result{rev, err, time.Now()}
		}()
		time.Sleep(20 * time.Millisecond)
		update(t, writer, func(tx store.Tx) error { _, err := tx.BumpRevision(ctx); return err })
		committed := time.Now()
		select {
		case r := <-got:
			if r.err != nil || r.rev != after+1 {
				t.Errorf("WaitRevision(%d) = %d, %v; want %d", after, r.rev, r.err, after+1)
			}
			d := r.at.Sub(committed)
			t.Logf("woke %v after the other store's commit", d)
			if d > maxWake {
				t.Errorf("WaitRevision woke %v after the other store's commit, want under %v", d, maxWake)
			}
		case <-time.After(maxWake + 10*time.Second):
			t.Fatalf("WaitRevision(%d) still blocked after the other store's commit", after)
		}
	}
}

func testSharedSerializedUpdates(t *testing.T, a, b store.Store, _ time.Duration) {
	const workers, each = 8, 6 // per store
	type counter struct{ N int }
	update(t, a, func(tx store.Tx) error {
		put(t, tx, rec("counter", "c", "", "", "active", counter{}))
		return nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for _, s := range []store.Store{a, b} {
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
						_, err = tx.Put(t.Context(), r)
						return err
					})
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	view(t, b, func(tx store.Tx) error {
		r, err := tx.Get(t.Context(), "counter", "c")
		if err != nil {
			t.Fatal(err)
		}
		var c counter
		json.Unmarshal(r.Data, &c)
		if c.N != 2*workers*each {
			t.Errorf("counter = %d, want %d", c.N, 2*workers*each)
		}
		return nil
	})
}

// testSharedWaitHostRevision: a change through one store wakes the other's
// waiters of the hosts it names, and only those.
func testSharedWaitHostRevision(t *testing.T, a, b store.Store, maxWake time.Duration) {
	ctx := t.Context()
	for round := range 2 {
		waiter, writer := a, b
		if round == 1 {
			waiter, writer = b, a
		}
		after := hostRevs(t, waiter, "h-x")["h-x"]
		x := waitHost(ctx, waiter, "h-x", after)
		y := waitHost(ctx, waiter, "h-y", hostRevs(t, waiter, "h-y")["h-y"])
		time.Sleep(20 * time.Millisecond) // let them block
		rev := bumpHosts(t, writer, "h-x")
		expectWake(t, "the other store's WaitHostRevision(h-x)", x, rev, time.Now(), maxWake)
		rev = bumpHosts(t, writer, "h-y")
		// h-y returns the revision of the change that named it, not h-x's.
		expectWake(t, "the other store's WaitHostRevision(h-y)", y, rev, time.Now(), maxWake)
	}
}

// testSharedInterleavedHostRevisions: a store that commits right after
// another store's commit it has not heard of yet still wakes the waiters
// of the other commit's hosts (its own commit does not hide the other).
func testSharedInterleavedHostRevisions(t *testing.T, a, b store.Store, maxWake time.Duration) {
	ctx := t.Context()
	x := waitHost(ctx, b, "h-x", 0)
	time.Sleep(20 * time.Millisecond) // let it block
	revX := bumpHosts(t, a, "h-x")
	bumpHosts(t, b, "h-y") // before b hears of a's commit, most likely
	expectWake(t, "WaitHostRevision(h-x) after another store's commit and this one's", x, revX, time.Now(), maxWake)
	if rev, err := b.WaitHostRevision(ctx, "h-y", 0); err != nil || rev != revX+1 {
		t.Errorf("WaitHostRevision(h-y, 0) = %d, %v; want %d", rev, err, revX+1)
	}
}
