package audit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Report is the result of Verify.
type Report struct {
	OK          bool
	Entries     int64 // entries read
	Checkpoints int64 // checkpoints read
	// LastSeq is the Seq of the newest entry (0 for an empty log).
	LastSeq int64
	// CheckedSeq is the highest Seq covered by a checkpoint that verified,
	// and matched the chain (0 if none). Entries after it are protected by
	// the chain alone: deleting them goes unnoticed.
	CheckedSeq int64
	// FirstBad is the Seq of the first tampered entry (or of the first bad
	// checkpoint), 0 when OK.
	FirstBad int64
	// Problem says what is wrong at FirstBad, e.g.
	// "entry 17: hash mismatch (row edited)"; "" when OK.
	Problem string
}

// String summarizes the report in one line.
func (r Report) String() string {
	if !r.OK {
		return "audit log tampered: " + r.Problem
	}
	return "audit log intact: " + r.Coverage()
}

// Coverage says how much of the log checkpoints sign: "12 entries, 3
// checkpoints, signed through entry 12 of 12".
func (r Report) Coverage() string {
	return fmt.Sprintf("%d entries, %d checkpoints, signed through entry %d of %d",
		r.Entries, r.Checkpoints, r.CheckedSeq, r.LastSeq)
}

// Options adds the checks that need more than the store.
type Options struct {
	// External are checkpoints kept outside the store (the checkpoint
	// file, already checked by ReadCheckpointFile). Each must be in the
	// store, and the chain must match it: a store rolled back (tail and
	// its checkpoints deleted) or rewritten disagrees with them.
	External []domain.AuditCheckpoint
	// MaxUnsigned, when set, is how old the oldest entry after the newest
	// checkpoint may be at Now: the signer checkpoints every interval, so
	// an older unsigned tail means checkpoints were deleted.
	MaxUnsigned time.Duration
	Now         time.Time
}

// pageSize is how many entries Verify reads at a time.
const pageSize = 1000

// Verify checks the whole audit log in tx against the checkpoint key pub,
// which should be pinned (read from the exported audit.pub, not the store).
// It finds:
//
//   - an edited entry: its hash does not match its contents;
//   - a deleted entry: a gap in Seq, or a PrevHash that does not match;
//   - reordered entries: a PrevHash that does not match;
//   - a rewritten chain: an entry whose hash differs from a checkpoint's;
//   - a deleted tail: a checkpoint names an entry that no longer exists;
//   - a forged or altered checkpoint: its signature does not verify.
//
// The report names the problem with the lowest Seq. Verify returns an error
// only if the store cannot be read; tampering is reported in Report.
func Verify(ctx context.Context, tx store.Tx, pub ed25519.PublicKey) (Report, error) {
	return VerifyWith(ctx, tx, pub, Options{})
}

// VerifyWith is Verify with the checks of opt.
func VerifyWith(ctx context.Context, tx store.Tx, pub ed25519.PublicKey, opt Options) (Report, error) {
	var r Report
	cps, err := tx.ListCheckpoints(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("verify audit log: list checkpoints: %w", err)
	}
	r.Checkpoints = int64(len(cps))

	var p, cpProblem problems
	// Checkpoints whose signatures verify, by seq, to compare with the chain.
	var valid []domain.AuditCheckpoint
	for _, cp := range cps {
		if cp.Seq < 1 {
			cpProblem.add(cp.Seq, fmt.Sprintf("checkpoint at seq %d: no such entry can exist", cp.Seq))
			continue
		}
		if err := VerifyCheckpoint(pub, cp); err != nil {
			cpProblem.add(cp.Seq, fmt.Sprintf("checkpoint at seq %d: %v", cp.Seq, err))
			continue
		}
		valid = append(valid, cp)
	}
	stored := map[int64]string{}
	for _, cp := range cps {
		stored[cp.Seq] = cp.Hash
	}
	for _, cp := range opt.External {
		if err := VerifyCheckpoint(pub, cp); err != nil {
			cpProblem.add(cp.Seq, fmt.Sprintf("external checkpoint at seq %d: %v", cp.Seq, err))
			continue
		}
		h, ok := stored[cp.Seq]
		if !ok || h != cp.Hash {
			cpProblem.add(cp.Seq, fmt.Sprintf("entry %d: the checkpoint file signs it (at %s) but the database has no such checkpoint (checkpoints deleted or the log rolled back)",
				cp.Seq, cp.Time.Format(time.RFC3339)))
		}
		if !ok {
			valid = append(valid, cp)
		}
	}
	slices.SortStableFunc(valid, func(a, b domain.AuditCheckpoint) int { return cmp.Compare(a.Seq, b.Seq) })

	// Walk the chain, stopping the checks (not the count) at the first break.
	var (
		next     = int64(1)
		prevHash = GenesisHash
		broken   bool
		vi       int // next checkpoint in valid to compare
	)
	for after := int64(0); ; {
		page, err := tx.ListAudit(ctx, store.AuditQuery{After: after, Limit: pageSize})
		if err != nil {
			return Report{}, fmt.Errorf("verify audit log: list entries after %d: %w", after, err)
		}
		for _, e := range page {
			r.Entries++
			r.LastSeq = max(r.LastSeq, e.Seq)
			if broken {
				continue
			}
			if msg, bad := checkEntry(e, next, prevHash); bad {
				seq := min(e.Seq, next)
				p.add(seq, msg)
				broken = true
				continue
			}
			for vi < len(valid) && valid[vi].Seq <= e.Seq {
				cp := valid[vi]
				vi++
				if cp.Hash != e.Hash {
					p.add(e.Seq, fmt.Sprintf("entry %d: hash differs from the checkpoint signed at %s (chain rewritten)",
						e.Seq, cp.Time.Format(time.RFC3339)))
					broken = true
					break
				}
				r.CheckedSeq = cp.Seq
			}
			next, prevHash = e.Seq+1, e.Hash
		}
		if len(page) < pageSize {
			break
		}
		after = page[len(page)-1].Seq
	}
	// Valid checkpoints beyond the end of the chain: its tail is gone.
	if !broken && vi < len(valid) {
		cp := valid[len(valid)-1]
		p.add(next, fmt.Sprintf("entry %d: missing (log ends at seq %d, but a checkpoint signed at %s covers seq %d: tail deleted)",
			next, next-1, cp.Time.Format(time.RFC3339), cp.Seq))
	}

	if !broken && opt.MaxUnsigned > 0 && r.LastSeq > r.CheckedSeq {
		page, err := tx.ListAudit(ctx, store.AuditQuery{After: r.CheckedSeq, Limit: 1})
		if err != nil {
			return Report{}, fmt.Errorf("verify audit log: read the unsigned tail: %w", err)
		}
		if len(page) == 1 {
			if age := opt.Now.Sub(page[0].Time); age > opt.MaxUnsigned {
				p.add(page[0].Seq, fmt.Sprintf("entry %d: entries %d to %d are signed by no checkpoint, and the oldest is %s old, more than the checkpoint interval allows (%s): checkpoints deleted, or the signer stopped",
					page[0].Seq, page[0].Seq, r.LastSeq, age.Round(time.Second), opt.MaxUnsigned))
			}
		}
	}

	// A chain problem wins a tie with a checkpoint problem at the same seq.
	if cpProblem.msg != "" {
		p.add(cpProblem.seq, cpProblem.msg)
	}
	if p.msg == "" {
		r.OK = true
		return r, nil
	}
	r.FirstBad, r.Problem = p.seq, p.msg
	return r, nil
}

// checkEntry checks e, expected at seq want after an entry whose hash is
// prevHash.
func checkEntry(e domain.AuditEntry, want int64, prevHash string) (msg string, bad bool) {
	switch {
	case e.Seq > want:
		if e.Seq == want+1 {
			return fmt.Sprintf("entry %d: missing (row deleted)", want), true
		}
		return fmt.Sprintf("entry %d: missing, and %d more up to %d (rows deleted)", want, e.Seq-want-1, e.Seq-1), true
	case e.Seq < want:
		return fmt.Sprintf("entry %d: out of order (expected entry %d)", e.Seq, want), true
	case Hash(e) != e.Hash:
		return fmt.Sprintf("entry %d: hash mismatch (row edited)", e.Seq), true
	case e.PrevHash != prevHash:
		if e.Seq == 1 {
			return "entry 1: prev_hash is not the genesis hash (rows deleted or reordered)", true
		}
		return fmt.Sprintf("entry %d: prev_hash does not match entry %d (rows deleted, reordered or rewritten)", e.Seq, e.Seq-1), true
	}
	return "", false
}

// problems keeps the problem with the lowest seq; on a tie, the first found.
type problems struct {
	seq int64
	msg string
}

func (p *problems) add(seq int64, msg string) {
	if p.msg == "" || seq < p.seq {
		p.seq, p.msg = seq, msg
	}
}
