package audit

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// fakeTx is an in-memory store.Tx holding only the audit log and meta; any
// other method panics (the embedded interface is nil). Tests tamper with
// entries and checkpoints directly.
type fakeTx struct {
	store.Tx
	entries     []domain.AuditEntry
	checkpoints []domain.AuditCheckpoint
	meta        map[string][]byte
}

func newFakeTx() *fakeTx { return &fakeTx{meta: map[string][]byte{}} }

func (f *fakeTx) sorted() []domain.AuditEntry {
	es := slices.Clone(f.entries)
	slices.SortStableFunc(es, func(a, b domain.AuditEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	return es
}

func (f *fakeTx) AppendAudit(_ context.Context, e domain.AuditEntry) error {
	last, _ := f.last()
	if e.Seq != last+1 {
		return fmt.Errorf("append seq %d after %d: %w", e.Seq, last, store.ErrConflict)
	}
	f.entries = append(f.entries, e)
	return nil
}

func (f *fakeTx) LastAudit(context.Context) (domain.AuditEntry, error) {
	if _, i := f.last(); i >= 0 {
		return f.entries[i], nil
	}
	return domain.AuditEntry{}, store.ErrNotFound
}

// last returns the highest seq and its index in f.entries (-1 if empty).
func (f *fakeTx) last() (seq int64, index int) {
	index = -1
	for i, e := range f.entries {
		if index < 0 || e.Seq > seq {
			seq, index = e.Seq, i
		}
	}
	return seq, index
}

func (f *fakeTx) ListAudit(_ context.Context, q store.AuditQuery) ([]domain.AuditEntry, error) {
	var out []domain.AuditEntry
	for _, e := range f.sorted() {
		if e.Seq <= q.After || q.ProjectID != "" && e.ProjectID != q.ProjectID {
			continue
		}
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeTx) PutCheckpoint(_ context.Context, c domain.AuditCheckpoint) error {
	f.checkpoints = append(f.checkpoints, c)
	return nil
}

func (f *fakeTx) ListCheckpoints(context.Context) ([]domain.AuditCheckpoint, error) {
	return slices.Clone(f.checkpoints), nil
}

func (f *fakeTx) GetMeta(_ context.Context, key string) ([]byte, error) {
	v, ok := f.meta[key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return slices.Clone(v), nil
}

func (f *fakeTx) PutMeta(_ context.Context, key string, value []byte) error {
	f.meta[key] = slices.Clone(value)
	return nil
}

// index returns the position in f.entries of the entry with seq.
func (f *fakeTx) index(seq int64) int {
	i := slices.IndexFunc(f.entries, func(e domain.AuditEntry) bool { return e.Seq == seq })
	if i < 0 {
		panic(fmt.Sprintf("no entry %d", seq))
	}
	return i
}

// deleteSeqs removes the entries with seq in [from, to].
func (f *fakeTx) deleteSeqs(from, to int64) {
	f.entries = slices.DeleteFunc(f.entries, func(e domain.AuditEntry) bool { return e.Seq >= from && e.Seq <= to })
}
