package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
)

// externalOf writes tx's checkpoints to a fresh checkpoint file and
// returns its path.
func externalOf(t *testing.T, tx *fakeTx, sg *Signer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit-checkpoints.jsonl")
	f := NewCheckpointFile(path)
	// Twice: the second append adds nothing (it catches up only).
	for range 2 {
		if err := f.Append(sg, tx.checkpoints); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint file: %v, mode %v; want 0600", err, fi.Mode())
	}
	return path
}

func readExternal(t *testing.T, path string, sg *Signer) []domain.AuditCheckpoint {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := ReadCheckpointFile(bytes.NewReader(b), sg.PublicKey())
	if err != nil {
		t.Fatalf("ReadCheckpointFile: %v", err)
	}
	return cps
}

// TestVerifyExternalDetectsRollback: with the checkpoint file, deleting
// the tail together with its checkpoints, or rewriting the whole chain
// without checkpoints, is detected; the store alone would pass.
func TestVerifyExternalDetectsRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(tx *fakeTx)
		first  int64
		want   string
	}{
		{"intact", func(*fakeTx) {}, 0, ""},
		{"tail and its checkpoints deleted", func(tx *fakeTx) {
			tx.deleteSeqs(11, 20)
			tx.checkpoints = slices.DeleteFunc(tx.checkpoints, func(c domain.AuditCheckpoint) bool { return c.Seq > 10 })
		}, 11, "tail deleted"},
		{"chain rewritten, checkpoints deleted", func(tx *fakeTx) {
			tx.entries, tx.checkpoints = nil, nil
			for i := 1; i <= 20; i++ {
				e := entry(i)
				e.Actor = "user:mallory"
				if _, err := Append(ctx, tx, e); err != nil {
					t.Fatal(err)
				}
			}
		}, 5, "chain rewritten"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tx, sg := buildLog(t, 20, 5, 10, 15, 20)
			ext := readExternal(t, externalOf(t, tx, sg), sg)
			tc.tamper(tx)
			plain, err := Verify(ctx, tx, sg.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			if !plain.OK {
				t.Fatalf("the store alone = %+v; the tampering should be invisible without the file", plain)
			}
			r, err := VerifyWith(ctx, tx, sg.PublicKey(), Options{External: ext})
			if err != nil {
				t.Fatal(err)
			}
			if r.OK != (tc.first == 0) || r.FirstBad != tc.first || !strings.Contains(r.Problem, tc.want) {
				t.Errorf("VerifyWith = %+v, want ok=%v first_bad=%d problem containing %q", r, tc.first == 0, tc.first, tc.want)
			}
		})
	}
}

// TestCheckpointFileTampered: a line removed, edited or reordered in the
// file is an error naming the line.
func TestCheckpointFileTampered(t *testing.T) {
	t.Parallel()
	tx, sg := buildLog(t, 20, 5, 10, 15, 20)
	b, err := os.ReadFile(externalOf(t, tx, sg))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
	for name, text := range map[string]string{
		"line removed":   lines[0] + lines[2] + lines[3],
		"lines swapped":  lines[1] + lines[0] + lines[2] + lines[3],
		"seq edited":     strings.Replace(string(b), `"seq":10`, `"seq":11`, 1),
		"first replaced": lines[1] + lines[2] + lines[3],
	} {
		if _, err := ReadCheckpointFile(strings.NewReader(text), sg.PublicKey()); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: ReadCheckpointFile = %v, want an error naming the line", name, err)
		}
	}
}

// TestVerifyUnsignedTailTooOld: entries past the newest checkpoint older
// than the interval allows fail verification.
func TestVerifyUnsignedTailTooOld(t *testing.T) {
	t.Parallel()
	tx, sg := buildLog(t, 20, 15)
	last := tx.sorted()[15].Time // entry 16
	for _, tc := range []struct {
		now time.Time
		ok  bool
	}{{last.Add(time.Second), true}, {last.Add(time.Hour), false}} {
		r, err := VerifyWith(context.Background(), tx, sg.PublicKey(), Options{MaxUnsigned: time.Minute, Now: tc.now})
		if err != nil {
			t.Fatal(err)
		}
		if r.OK != tc.ok || (!tc.ok && (r.FirstBad != 16 || !strings.Contains(r.Problem, "entries 16 to 20 are signed by no checkpoint"))) {
			t.Errorf("VerifyWith(now=%s) = %+v, want ok=%v", tc.now, r, tc.ok)
		}
	}
}
