// Package sqlstore is the SQL both of Moat's stores run: store.Store over
// database/sql, with a small Dialect for what differs between SQLite and
// PostgreSQL (placeholders, transaction options, the write lock, change
// notification). The schema itself is each store's own migrations.
//
// Only sqlitestore and pgstore import it.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatdb/moat/internal/store"
)

// RevisionKey is the meta key holding the desired-state revision, as a
// decimal number. Only BumpRevision writes it.
const RevisionKey = "revision"

// Dialect is what differs between the SQL databases.
type Dialect struct {
	// Numbered placeholders: $1, $2, … instead of ?.
	Numbered bool
	// Update and View are the options of read-write and read-only
	// transactions.
	Update, View sql.TxOptions
	// LockSQL, if set, runs first in every read-write transaction and
	// holds the lock that serializes them across processes.
	LockSQL string
	// NotifySQL, if set, runs in BumpRevision with the new revision as its
	// one argument, to tell other processes at commit.
	NotifySQL string
	// PollInterval is how often WaitRevision reads the revision while
	// someone waits, to notice commits it is not told about.
	PollInterval time.Duration
}

// Config configures a Store.
type Config struct {
	Dialect Dialect
	// Write runs read-write transactions; Read runs read-only ones and
	// may be the same pool.
	Write, Read *sql.DB
}

// Store implements store.Store. Its zero value is not usable: use New.
type Store struct {
	d           Dialect
	write, read *sql.DB
	// writeSem serializes this process's read-write transactions in
	// arrival order before they reach the database, which serializes
	// them across processes.
	writeSem chan struct{}
	queries  sync.Map // query text → rebound text

	mu      sync.Mutex
	rev     int64         // highest revision seen
	changed chan struct{} // closed and replaced when rev grows
	waiters atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

var _ store.Store = (*Store)(nil)

// New returns a Store over cfg's pools, which must hold the schema. Close
// closes the pools.
func New(cfg Config) *Store {
	s := &Store{
		d: cfg.Dialect, write: cfg.Write, read: cfg.Read,
		writeSem: make(chan struct{}, 1),
		changed:  make(chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.read == nil {
		s.read = s.write
	}
	go s.poll()
	return s
}

// Close stops the store and closes its pools.
func (s *Store) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	err := s.write.Close()
	if s.read != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

// Observe records that the revision is now at least rev, waking
// WaitRevision callers. pgstore calls it on each notification.
func (s *Store) Observe(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.rev {
		s.rev = rev
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// Recheck reads the revision and observes it: pgstore calls it when its
// notifications may have been missed (after reconnecting).
func (s *Store) Recheck(ctx context.Context) error {
	rev, err := s.Revision(ctx)
	if err == nil {
		s.Observe(rev)
	}
	return err
}

func (s *Store) seen() (int64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, s.changed
}

// poll reads the revision every PollInterval while WaitRevision has
// callers, for commits that no notification reports.
func (s *Store) poll() {
	defer close(s.done)
	if s.d.PollInterval <= 0 {
		<-s.stop
		return
	}
	t := time.NewTicker(s.d.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.waiters.Load() == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.Recheck(ctx) // an error is retried at the next tick
		cancel()
	}
}

// Update implements store.Store. It returns fn's error as it is. fn must
// not call Update: it would wait for itself until ctx ends.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) (err error) {
	select {
	case s.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writeSem }()
	opts := s.d.Update
	sqlTx, err := s.write.BeginTx(ctx, &opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			sqlTx.Rollback()
		}
	}()
	t := &tx{s: s, tx: sqlTx}
	if s.d.LockSQL != "" {
		if _, err := sqlTx.ExecContext(ctx, s.q(s.d.LockSQL)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
	}
	if err := fn(t); err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	if t.bumped > 0 {
		s.Observe(t.bumped)
	}
	return nil
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	opts := s.d.View
	sqlTx, err := s.read.BeginTx(ctx, &opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer sqlTx.Rollback()
	return fn(&tx{s: s, tx: sqlTx, readOnly: true})
}

// Revision implements store.Store.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var v []byte
	if err := s.read.QueryRowContext(ctx, s.q("SELECT value FROM meta WHERE key = ?"), RevisionKey).Scan(&v); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return parseRevision(v)
}

// WaitRevision implements store.Store. It reads the database once, then
// waits for this process's commits, the dialect's notifications and its
// poll.
func (s *Store) WaitRevision(ctx context.Context, after int64) (int64, error) {
	rev, changed := s.seen()
	if rev > after {
		return rev, nil
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	// changed was taken before this read, so a commit after it is not
	// missed.
	if err := s.Recheck(ctx); err != nil {
		return 0, err
	}
	for {
		rev, next := s.seen()
		if rev > after {
			return rev, nil
		}
		if next != changed {
			changed = next
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func parseRevision(v []byte) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read revision: %q is not a number", v)
	}
	return n, nil
}

// q returns query with the dialect's placeholders.
func (s *Store) q(query string) string {
	if !s.d.Numbered {
		return query
	}
	if r, ok := s.queries.Load(query); ok {
		return r.(string)
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	r := b.String()
	s.queries.Store(query, r)
	return r
}
