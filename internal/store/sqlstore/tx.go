package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// errReadOnly is a write inside View.
var errReadOnly = errors.New("write in a read-only transaction")

// timeFormat stores audit and checkpoint times as UTC text with all nine
// fraction digits: exact (a hash covers the time), sortable and readable.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

type tx struct {
	s        *Store
	tx       *sql.Tx
	readOnly bool
	// first and bumped are the first and last revisions BumpRevision or
	// BumpHosts set (one apart per bump), announced at commit.
	first, bumped int64
	// hosts are the hosts BumpHosts named (allHosts: BumpRevision), with
	// the revision each got, announced at commit.
	hosts map[string]int64
}

func (t *tx) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.s.q(query), args...)
}

func (t *tx) exec(ctx context.Context, query string, args ...any) error {
	_, err := t.tx.ExecContext(ctx, t.s.q(query), args...)
	return err
}

func (t *tx) writable(op string) error {
	if t.readOnly {
		return fmt.Errorf("%s: %w", op, errReadOnly)
	}
	return nil
}

const recordColumns = "kind, id, project_id, parent, name, state, host, revision, seq, data"

func (t *tx) scanRecord(sc interface{ Scan(...any) error }) (store.Record, error) {
	var r store.Record
	var data string
	err := sc.Scan(&r.Kind, &r.ID, &r.ProjectID, &r.Parent, &r.Name, &r.State, &r.Host, &r.Revision, &r.Seq, &data)
	r.Data = []byte(data)
	if err == nil {
		t.s.recordsRead.Add(1)
	}
	return r, err
}

func (t *tx) Get(ctx context.Context, kind, id string) (store.Record, error) {
	r, err := t.scanRecord(t.queryRow(ctx, "SELECT "+recordColumns+" FROM records WHERE id = ? AND kind = ?", id, kind))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("get %s %s: %w", kind, id, store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get %s %s: %w", kind, id, err)
	}
	return r, nil
}

func (t *tx) List(ctx context.Context, q store.Query) ([]store.Record, error) {
	var b strings.Builder
	b.WriteString("SELECT " + recordColumns + " FROM records WHERE kind = ? AND seq > ?")
	args := []any{q.Kind, q.After}
	if q.ProjectID != "" {
		b.WriteString(" AND project_id = ?")
		args = append(args, q.ProjectID)
	}
	if q.Parent != "" {
		b.WriteString(" AND parent = ?")
		args = append(args, q.Parent)
	}
	if q.Host != "" {
		b.WriteString(" AND host = ?")
		args = append(args, q.Host)
	}
	if !q.IncludeDeleted {
		b.WriteString(" AND state <> ?")
		args = append(args, domain.StateDeleted)
	}
	if len(q.States) > 0 {
		b.WriteString(" AND state IN (?" + strings.Repeat(", ?", len(q.States)-1) + ")")
		for _, st := range q.States {
			args = append(args, st)
		}
	}
	b.WriteString(" ORDER BY seq")
	if q.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, q.Limit)
	}
	rows, err := t.tx.QueryContext(ctx, t.s.q(b.String()), args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", q.Kind, err)
	}
	defer rows.Close()
	var out []store.Record
	for rows.Next() {
		r, err := t.scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", q.Kind, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", q.Kind, err)
	}
	return out, nil
}

func (t *tx) Put(ctx context.Context, rec store.Record) (int64, error) {
	op := "put " + rec.Kind + " " + rec.ID
	if err := t.writable(op); err != nil {
		return 0, err
	}
	if rec.Kind == "" || rec.ID == "" {
		return 0, fmt.Errorf("%s: a record needs a kind and an ID", op)
	}
	if !json.Valid(rec.Data) {
		return 0, fmt.Errorf("%s: data is not JSON", op)
	}
	if rec.Revision == 0 {
		var seq int64
		err := t.queryRow(ctx, `INSERT INTO records (kind, id, project_id, parent, name, state, host, revision, data)
			VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (id) DO NOTHING RETURNING seq`,
			rec.Kind, rec.ID, rec.ProjectID, rec.Parent, rec.Name, rec.State, rec.Host, string(rec.Data)).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("%s: the ID exists: %w", op, store.ErrConflict)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		return 1, nil
	}
	var rev int64
	err := t.queryRow(ctx, `UPDATE records SET project_id = ?, parent = ?, name = ?, state = ?, host = ?, data = ?, revision = revision + 1
		WHERE id = ? AND kind = ? AND revision = ? RETURNING revision`,
		rec.ProjectID, rec.Parent, rec.Name, rec.State, rec.Host, string(rec.Data), rec.ID, rec.Kind, rec.Revision).Scan(&rev)
	if err == nil {
		return rev, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	err = t.queryRow(ctx, "SELECT revision FROM records WHERE id = ? AND kind = ?", rec.ID, rec.Kind).Scan(&rev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return 0, fmt.Errorf("%s: revision is %d, not %d: %w", op, rev, rec.Revision, store.ErrConflict)
}

func (t *tx) BumpRevision(ctx context.Context) (int64, error) {
	rev, err := t.bump(ctx, allHosts)
	if err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	return rev, nil
}

func (t *tx) BumpHosts(ctx context.Context, hosts ...string) (int64, error) {
	for _, h := range hosts {
		if h == "" || h == allHosts {
			return 0, fmt.Errorf("bump hosts: %q is not a host name", h)
		}
	}
	rev, err := t.bump(ctx, hosts...)
	if err != nil {
		return 0, fmt.Errorf("bump hosts: %w", err)
	}
	return rev, nil
}

// bump increments the global revision and records it as the revision of
// each of hosts (allHosts: of every host).
func (t *tx) bump(ctx context.Context, hosts ...string) (int64, error) {
	if err := t.writable("bump"); err != nil {
		return 0, err
	}
	var v []byte
	if err := t.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", RevisionKey).Scan(&v); err != nil {
		return 0, err
	}
	rev, err := parseRevision(v)
	if err != nil {
		return 0, err
	}
	rev++
	s := strconv.FormatInt(rev, 10)
	if err := t.exec(ctx, "UPDATE meta SET value = ? WHERE key = ?", []byte(s), RevisionKey); err != nil {
		return 0, err
	}
	for _, h := range hosts {
		if err := t.exec(ctx, `INSERT INTO host_revisions (host, revision) VALUES (?, ?)
			ON CONFLICT (host) DO UPDATE SET revision = excluded.revision`, h, rev); err != nil {
			return 0, fmt.Errorf("host %s: %w", h, err)
		}
		if t.hosts == nil {
			t.hosts = map[string]int64{}
		}
		t.hosts[h] = rev
	}
	if t.s.d.NotifySQL != "" {
		if err := t.exec(ctx, t.s.d.NotifySQL, s); err != nil {
			return 0, fmt.Errorf("notify: %w", err)
		}
	}
	if t.first == 0 {
		t.first = rev
	}
	t.bumped = rev
	return rev, nil
}

const auditColumns = "seq, time, actor, project_id, action, target, request_id, source, outcome, detail, prev_hash, hash"

func scanAudit(sc interface{ Scan(...any) error }) (domain.AuditEntry, error) {
	var e domain.AuditEntry
	var ts string
	if err := sc.Scan(&e.Seq, &ts, &e.Actor, &e.ProjectID, &e.Action, &e.Target, &e.RequestID,
		&e.Source, &e.Outcome, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
		return e, err
	}
	var err error
	e.Time, err = time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return e, fmt.Errorf("audit entry %d: time %q: %w", e.Seq, ts, err)
	}
	return e, nil
}

func (t *tx) AppendAudit(ctx context.Context, e domain.AuditEntry) error {
	op := fmt.Sprintf("append audit entry %d", e.Seq)
	if err := t.writable(op); err != nil {
		return err
	}
	var last int64
	if err := t.queryRow(ctx, "SELECT COALESCE(MAX(seq), 0) FROM audit").Scan(&last); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if e.Seq != last+1 {
		return fmt.Errorf("%s: the last is %d: %w", op, last, store.ErrConflict)
	}
	err := t.exec(ctx, "INSERT INTO audit ("+auditColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		e.Seq, e.Time.UTC().Format(timeFormat), e.Actor, e.ProjectID, e.Action, e.Target, e.RequestID,
		e.Source, e.Outcome, e.Detail, e.PrevHash, e.Hash)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *tx) LastAudit(ctx context.Context) (domain.AuditEntry, error) {
	e, err := scanAudit(t.queryRow(ctx, "SELECT "+auditColumns+" FROM audit ORDER BY seq DESC LIMIT 1"))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("last audit entry: %w", store.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("last audit entry: %w", err)
	}
	return e, nil
}

func (t *tx) ListAudit(ctx context.Context, q store.AuditQuery) ([]domain.AuditEntry, error) {
	var b strings.Builder
	b.WriteString("SELECT " + auditColumns + " FROM audit WHERE seq > ?")
	args := []any{q.After}
	if q.ProjectID != "" {
		b.WriteString(" AND project_id = ?")
		args = append(args, q.ProjectID)
	}
	b.WriteString(" ORDER BY seq")
	if q.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, q.Limit)
	}
	rows, err := t.tx.QueryContext(ctx, t.s.q(b.String()), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []domain.AuditEntry
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

func (t *tx) PutCheckpoint(ctx context.Context, c domain.AuditCheckpoint) error {
	op := fmt.Sprintf("put audit checkpoint %d", c.Seq)
	if err := t.writable(op); err != nil {
		return err
	}
	var seq int64
	err := t.queryRow(ctx, `INSERT INTO checkpoints (seq, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (seq) DO NOTHING RETURNING seq`,
		c.Seq, c.Hash, c.Time.UTC().Format(timeFormat), c.KeyID, c.Signature).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: one exists: %w", op, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *tx) ListCheckpoints(ctx context.Context) ([]domain.AuditCheckpoint, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT seq, hash, time, key_id, signature FROM checkpoints ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []domain.AuditCheckpoint
	for rows.Next() {
		var c domain.AuditCheckpoint
		var ts string
		if err := rows.Scan(&c.Seq, &c.Hash, &ts, &c.KeyID, &c.Signature); err != nil {
			return nil, fmt.Errorf("list audit checkpoints: %w", err)
		}
		if c.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return nil, fmt.Errorf("audit checkpoint %d: time %q: %w", c.Seq, ts, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	return out, nil
}

func (t *tx) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := t.queryRow(ctx, "SELECT value FROM meta WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get meta %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get meta %s: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (t *tx) PutMeta(ctx context.Context, key string, value []byte) error {
	op := "put meta " + key
	if err := t.writable(op); err != nil {
		return err
	}
	if key == RevisionKey {
		return fmt.Errorf("%s: the revision changes only by BumpRevision", op)
	}
	if value == nil {
		value = []byte{}
	}
	if err := t.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *tx) GetIdempotency(ctx context.Context, key string) (store.Idempotency, error) {
	r := store.Idempotency{Key: key}
	err := t.queryRow(ctx, "SELECT request_hash, status, body, created_at FROM idempotency WHERE key = ?", key).
		Scan(&r.RequestHash, &r.Status, &r.Body, &r.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("get idempotency key: %w", store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get idempotency key: %w", err)
	}
	if r.Body == nil {
		r.Body = []byte{}
	}
	return r, nil
}

// PutIdempotency stores rec, replacing a record with the same key (an
// expired one: the caller reads before it writes).
func (t *tx) PutIdempotency(ctx context.Context, rec store.Idempotency) error {
	const op = "put idempotency key"
	if err := t.writable(op); err != nil {
		return err
	}
	body := rec.Body
	if body == nil {
		body = []byte{}
	}
	if err := t.exec(ctx, `INSERT INTO idempotency (key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
			body = excluded.body, created_at = excluded.created_at`,
		rec.Key, rec.RequestHash, rec.Status, body, rec.CreatedAt); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (t *tx) DeleteIdempotencyBefore(ctx context.Context, before int64) (int64, error) {
	const op = "delete expired idempotency keys"
	if err := t.writable(op); err != nil {
		return 0, err
	}
	res, err := t.tx.ExecContext(ctx, t.s.q("DELETE FROM idempotency WHERE created_at < ?"), before)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return n, nil
}
