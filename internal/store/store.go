// Package store defines how Moat's control plane persists its state: one
// Store interface with serialized read-write transactions, the records it
// holds, and typed generic helpers over domain objects. Implementations live
// in sqlitestore (embedded default) and pgstore (several server replicas);
// storetest is the conformance suite both pass.
//
// Imported by the API server, reconcilers and CLI wiring; it imports only
// domain.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/moatdb/moat/internal/domain"
)

var (
	// ErrNotFound: no record has that kind and ID (or that key).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the record's revision is not the one the write expected
	// (a stale write, or a create of an existing ID).
	ErrConflict = errors.New("store: revision conflict")
)

// Store is the control plane's state.
type Store interface {
	// Update runs fn in one read-write transaction. Read-write transactions
	// are serialized across every server sharing the store, so a check
	// followed by a write inside fn cannot race another writer. If fn
	// returns an error nothing it wrote is kept.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction with a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Revision returns the current desired-state revision.
	Revision(ctx context.Context) (int64, error)
	// WaitRevision blocks until the desired-state revision is greater than
	// after, and returns it; or returns ctx's error. A change committed by
	// any server sharing the store wakes it.
	WaitRevision(ctx context.Context, after int64) (int64, error)
	// HostRevision returns host's desired-state revision: the revision of
	// the last change that affected host (Tx.BumpHosts naming it, or
	// Tx.BumpRevision). Host revisions are values of the global revision,
	// so they compare with it.
	HostRevision(ctx context.Context, host string) (int64, error)
	// WaitHostRevision blocks until host's desired-state revision is
	// greater than after, and returns it; or returns ctx's error. Only a
	// change that affects host wakes it, committed by any server sharing
	// the store.
	WaitHostRevision(ctx context.Context, host string, after int64) (int64, error)
	Close() error
}

// Record is one stored object: the domain object as JSON in Data, with the
// fields the store indexes.
type Record struct {
	Kind      string
	ID        string
	ProjectID string
	Parent    string
	Name      string
	State     string
	// Host is the agent host a node is placed on ("" for other kinds): an
	// index, so that a host's desired state is read by host.
	Host string
	// Revision is the stored revision on read. On Put it is the revision
	// the writer read (0 to create).
	Revision int64
	// Seq orders records of a kind by creation; it is the pagination cursor.
	Seq  int64
	Data []byte
}

// Query selects records of one kind, in creation order.
type Query struct {
	Kind      string
	ProjectID string // "" for all projects
	Parent    string // "" for any parent
	Host      string // "" for any host (see Record.Host)
	// IncludeDeleted also returns records in state "deleted".
	IncludeDeleted bool
	// States, when set, returns only records in one of these states
	// (the live operations among a growing history, say).
	States []string
	// After is a Seq: only records created after it are returned.
	After int64
	// Limit caps the result; 0 means no limit.
	Limit int
}

// AuditQuery selects audit entries in sequence order.
type AuditQuery struct {
	ProjectID string // "" for all projects
	After     int64  // entries with Seq > After
	Limit     int    // 0 means no limit
}

// Idempotency is a remembered response to a create with an Idempotency-Key.
type Idempotency struct {
	Key         string // scoped by the caller (token and route)
	RequestHash string
	Status      int
	Body        []byte
	CreatedAt   int64 // unix seconds
}

// Tx is a transaction.
type Tx interface {
	Get(ctx context.Context, kind, id string) (Record, error)
	List(ctx context.Context, q Query) ([]Record, error)
	// Put creates (rec.Revision == 0) or replaces (rec.Revision == the
	// stored revision) a record, and returns its new revision. Otherwise
	// it returns ErrConflict and writes nothing.
	Put(ctx context.Context, rec Record) (int64, error)

	// BumpRevision increments the desired-state revision and makes it
	// every host's: every WaitRevision and WaitHostRevision wakes when the
	// transaction commits. It is for changes whose affected hosts are not
	// known; BumpHosts wakes only those named.
	BumpRevision(ctx context.Context) (int64, error)
	// BumpHosts increments the desired-state revision and makes it the
	// revision of each of hosts: at commit WaitRevision wakes, and
	// WaitHostRevision of those hosts only. With no hosts only the global
	// revision moves (a change no host's desired state reads: DNS, the
	// reconcilers' work).
	BumpHosts(ctx context.Context, hosts ...string) (int64, error)

	// AppendAudit stores e, whose Seq must be one more than the last.
	AppendAudit(ctx context.Context, e domain.AuditEntry) error
	// LastAudit returns the newest entry, or ErrNotFound for an empty log.
	LastAudit(ctx context.Context) (domain.AuditEntry, error)
	ListAudit(ctx context.Context, q AuditQuery) ([]domain.AuditEntry, error)
	PutCheckpoint(ctx context.Context, c domain.AuditCheckpoint) error
	ListCheckpoints(ctx context.Context) ([]domain.AuditCheckpoint, error)

	// GetMeta and PutMeta hold small server-wide values (keys, settings).
	GetMeta(ctx context.Context, key string) ([]byte, error)
	PutMeta(ctx context.Context, key string, value []byte) error

	GetIdempotency(ctx context.Context, key string) (Idempotency, error)
	PutIdempotency(ctx context.Context, rec Idempotency) error
	// DeleteIdempotencyBefore deletes the records created before the unix
	// second before and returns how many it deleted (expiry).
	DeleteIdempotencyBefore(ctx context.Context, before int64) (int64, error)
}

// Ptr constrains a pointer to a domain object type.
type Ptr[T any] interface {
	*T
	domain.Object
}

// Get reads the object of type T with id. A record of another kind is
// ErrNotFound.
func Get[T any, P Ptr[T]](ctx context.Context, tx Tx, id string) (P, error) {
	var zero P
	rec, err := tx.Get(ctx, zero.Kind(), id)
	if err != nil {
		return nil, err
	}
	return decode[T, P](rec)
}

// List reads the objects of type T matching q (q.Kind is set from T).
func List[T any, P Ptr[T]](ctx context.Context, tx Tx, q Query) ([]P, error) {
	var zero P
	q.Kind = zero.Kind()
	recs, err := tx.List(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]P, 0, len(recs))
	for _, r := range recs {
		o, err := decode[T, P](r)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// Put writes obj, expecting its current Revision, and updates obj's
// Revision to the stored one.
func Put(ctx context.Context, tx Tx, obj domain.Object) error {
	m := obj.Base()
	data, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", obj.Kind(), m.ID, err)
	}
	var host string
	if n, ok := obj.(*domain.Node); ok {
		host = n.Host
	}
	rev, err := tx.Put(ctx, Record{
		Kind: obj.Kind(), ID: m.ID, ProjectID: m.ProjectID, Parent: obj.Parent(),
		Name: m.Name, State: m.State, Host: host, Revision: m.Revision, Data: data,
	})
	if err != nil {
		return err
	}
	m.Revision = rev
	return nil
}

func decode[T any, P Ptr[T]](rec Record) (P, error) {
	p := P(new(T))
	if err := json.Unmarshal(rec.Data, p); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", rec.Kind, rec.ID, err)
	}
	p.Base().Revision = rec.Revision
	p.Base().Seq = rec.Seq
	return p, nil
}
