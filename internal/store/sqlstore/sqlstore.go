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
// decimal number. Only BumpRevision and BumpHosts write it.
const RevisionKey = "revision"

// allHosts is the row of host_revisions that BumpRevision writes: a
// change every host's desired state may read. No host has this name.
const allHosts = "*"

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
	// fed is the revision through which every host's revision is known:
	// the change feed (host_revisions rows with a revision above it) is
	// read from there.
	fed   int64
	hosts map[string]*hostRev // by host; allHosts for BumpRevision's
	// waiters counts WaitRevision and WaitHostRevision callers.
	waiters atomic.Int64
	// recordsRead counts the records Get and List returned.
	recordsRead atomic.Int64

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
		hosts:    map[string]*hostRev{},
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

// hostRev is what a store knows of one host's revision.
type hostRev struct {
	rev     int64
	changed chan struct{} // closed and replaced when rev grows
}

// host returns h's entry, adding it. s.mu must be held.
func (s *Store) host(h string) *hostRev {
	e := s.hosts[h]
	if e == nil {
		e = &hostRev{changed: make(chan struct{})}
		s.hosts[h] = e
	}
	return e
}

// observe records that the global revision is at least rev and each host
// of hosts at least its value, waking the waiters of what grew. When fed
// is set, hosts are every change through rev (the feed was read); when
// first is, they are this process's commit of the revisions first to rev.
func (s *Store) observe(rev int64, hosts map[string]int64, fed bool, first int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, r := range hosts {
		if e := s.host(h); r > e.rev {
			e.rev = r
			close(e.changed)
			e.changed = make(chan struct{})
		}
	}
	if fed || first > 0 && first == s.fed+1 {
		// The feed was read, or this commit follows every change known:
		// every host's revision is known through rev.
		s.fed = max(s.fed, rev)
	}
	if rev > s.rev {
		s.rev = rev
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// Observe records that the revision is now at least rev, waking
// WaitRevision callers. pgstore calls it on each notification.
func (s *Store) Observe(rev int64) {
	s.observe(rev, nil, false, 0)
}

// Recheck reads the revision and the hosts' revisions changed since the
// last it read, and observes them: pgstore calls it on each notification
// and when its notifications may have been missed (after reconnecting).
func (s *Store) Recheck(ctx context.Context) error {
	s.mu.Lock()
	from := s.fed
	s.mu.Unlock()
	opts := s.d.View
	sqlTx, err := s.read.BeginTx(ctx, &opts)
	if err != nil {
		return fmt.Errorf("read revision: %w", err)
	}
	defer sqlTx.Rollback()
	var v []byte
	if err := sqlTx.QueryRowContext(ctx, s.q("SELECT value FROM meta WHERE key = ?"), RevisionKey).Scan(&v); err != nil {
		return fmt.Errorf("read revision: %w", err)
	}
	rev, err := parseRevision(v)
	if err != nil {
		return err
	}
	if rev <= from {
		return nil
	}
	rows, err := sqlTx.QueryContext(ctx, s.q("SELECT host, revision FROM host_revisions WHERE revision > ?"), from)
	if err != nil {
		return fmt.Errorf("read host revisions: %w", err)
	}
	defer rows.Close()
	hosts := map[string]int64{}
	for rows.Next() {
		var h string
		var r int64
		if err := rows.Scan(&h, &r); err != nil {
			return fmt.Errorf("read host revisions: %w", err)
		}
		hosts[h] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read host revisions: %w", err)
	}
	s.observe(rev, hosts, true, 0)
	return nil
}

// RecordsRead returns how many records Get and List have returned: the
// store's read work, which benchmarks measure per change.
func (s *Store) RecordsRead() int64 { return s.recordsRead.Load() }

func (s *Store) seen() (int64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, s.changed
}

// seenHost returns host's revision as far as this store has seen it, and
// the channels closed when that may change.
func (s *Store) seenHost(host string) (rev int64, mine, all <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, a := s.host(host), s.host(allHosts)
	return max(e.rev, a.rev), e.changed, a.changed
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
		s.observe(t.bumped, t.hosts, false, t.first)
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

// HostRevision implements store.Store.
func (s *Store) HostRevision(ctx context.Context, host string) (int64, error) {
	var rev int64
	err := s.read.QueryRowContext(ctx, s.q("SELECT COALESCE(MAX(revision), 0) FROM host_revisions WHERE host IN (?, ?)"), host, allHosts).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("read revision of host %s: %w", host, err)
	}
	return rev, nil
}

// WaitHostRevision implements store.Store. Like WaitRevision it reads the
// database once, then waits for this process's commits, the dialect's
// notifications and its poll; each of those reads the change feed, and
// wakes only the waiters of the hosts in it.
func (s *Store) WaitHostRevision(ctx context.Context, host string, after int64) (int64, error) {
	rev, mine, all := s.seenHost(host)
	if rev > after {
		return rev, nil
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	// The channels were taken before this read, so a commit after it is
	// not missed.
	if err := s.Recheck(ctx); err != nil {
		return 0, err
	}
	for {
		rev, nextMine, nextAll := s.seenHost(host)
		if rev > after {
			return rev, nil
		}
		if nextMine != mine || nextAll != all {
			mine, all = nextMine, nextAll
			continue
		}
		select {
		case <-mine:
		case <-all:
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
