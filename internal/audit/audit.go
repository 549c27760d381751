// Package audit keeps Moat's tamper-evident audit log on top of store.Tx: it
// appends entries to a SHA-256 hash chain (Append), signs the chain head
// with an Ed25519 key held sealed in the store (Signer.Checkpoint), and
// proves the log intact or names the first tampered entry (Verify).
//
// Imported by the API server (every mutation and security event), the
// server's checkpoint loop and `moat audit verify`. It imports domain and
// store; the signing key is sealed through any Sealer (a *secret.Keyring).
//
// What the chain proves: an edited, deleted, inserted or reordered entry
// breaks it. What checkpoints add: a rewrite of the whole chain, or the
// deletion of its tail, cannot be hidden below the newest checkpoint,
// because the signature names the head's seq and hash and only the signing
// key (sealed with the server's master key) can sign another. Entries after
// the newest checkpoint can still be truncated undetected; checkpoint often.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// GenesisHash is the PrevHash of the first entry.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimePrecision is the precision entry and checkpoint times are kept at, so
// that every store (PostgreSQL's timestamptz keeps microseconds) returns the
// exact time that was hashed.
const TimePrecision = time.Microsecond

// entryTag separates entry hashes from any other use of SHA-256 and
// versions the encoding.
const entryTag = "moat audit entry v1"

// Hash returns the hash of e: hex SHA-256 over a length-prefixed encoding of
// every field but Hash itself (Seq, Time in UTC RFC 3339 with nanoseconds,
// Actor, ProjectID, Action, Target, RequestID, Source, Outcome, Detail,
// PrevHash), so no two different entries encode alike.
func Hash(e domain.AuditEntry) string {
	h := sha256.New()
	writeFields(h,
		entryTag,
		strconv.FormatInt(e.Seq, 10),
		e.Time.UTC().Format(time.RFC3339Nano),
		e.Actor,
		e.ProjectID,
		e.Action,
		e.Target,
		e.RequestID,
		e.Source,
		e.Outcome,
		e.Detail,
		e.PrevHash,
	)
	return hex.EncodeToString(h.Sum(nil))
}

// writeFields writes each field as its length (8 bytes, big-endian) followed
// by its bytes.
func writeFields(h hash.Hash, fields ...string) {
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
}

// Append adds e to the log in tx, which must be a read-write transaction
// (so appends are serialized), and returns the entry as stored. It assigns
// Seq (one more than the last), PrevHash (the last entry's Hash, or
// GenesisHash) and Hash, ignoring any values e has for them; it keeps Time in UTC at TimePrecision; and it
// replaces invalid UTF-8 and NUL bytes in text fields (which some stores
// cannot hold) with U+FFFD, so that what is hashed is what is stored.
// Every text field is bounded (MaxField bytes, Detail MaxDetail), cut on a
// rune boundary and marked with "…": a caller cannot flood the log with one
// request.
//
// e needs a Time, an Action and one of the domain.Outcome* values.
func Append(ctx context.Context, tx store.Tx, e domain.AuditEntry) (domain.AuditEntry, error) {
	if e.Time.IsZero() {
		return domain.AuditEntry{}, errors.New("append audit entry: no time")
	}
	if e.Action == "" {
		return domain.AuditEntry{}, errors.New("append audit entry: no action")
	}
	switch e.Outcome {
	case domain.OutcomeSuccess, domain.OutcomeDenied, domain.OutcomeInvalid, domain.OutcomeError:
	default:
		return domain.AuditEntry{}, fmt.Errorf("append audit entry: unknown outcome %q", e.Outcome)
	}
	e.Time = e.Time.UTC().Truncate(TimePrecision)
	for _, f := range []*string{&e.Actor, &e.ProjectID, &e.Action, &e.Target, &e.RequestID, &e.Source, &e.Outcome} {
		*f = bound(clean(*f), MaxField)
	}
	e.Detail = bound(clean(e.Detail), MaxDetail)

	last, err := tx.LastAudit(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		e.Seq, e.PrevHash = 1, GenesisHash
	case err != nil:
		return domain.AuditEntry{}, fmt.Errorf("append audit entry: read head: %w", err)
	default:
		e.Seq, e.PrevHash = last.Seq+1, last.Hash
	}
	e.Hash = Hash(e)
	if err := tx.AppendAudit(ctx, e); err != nil {
		return domain.AuditEntry{}, fmt.Errorf("append audit entry %d: %w", e.Seq, err)
	}
	return e, nil
}

// Bounds of an entry's text fields, in bytes.
const (
	MaxField  = 256
	MaxDetail = 4096
)

// bound cuts s to at most n bytes on a rune boundary, ending it with "…"
// when cut.
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
