package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/moatdb/moat/internal/domain"
)

// The checkpoint file keeps every checkpoint outside the store too, so
// that whoever can write the store — a compromised PostgreSQL, a restored
// old copy of the database — cannot roll the log back: deleting the tail
// and its checkpoints, or rewriting the whole chain, leaves the file
// ahead of, or disagreeing with, the database. It is append-only: one JSON
// line per checkpoint, each naming the SHA-256 of the line before it
// (GenesisHash for the first) and signed, with that link, by the
// checkpoint key, so lines cannot be removed or reordered either without
// the key.

// linkTag separates link signatures from the other uses of the key.
const linkTag = "moat audit checkpoint file v1"

// FileLine is one line of the checkpoint file.
type FileLine struct {
	domain.AuditCheckpoint
	// Prev is the hex SHA-256 of the previous line (without its newline).
	Prev string `json:"prev"`
	// LinkSignature signs Prev and the checkpoint's signature.
	LinkSignature string `json:"link_signature"`
}

func linkMessage(prev, cpSig string) []byte {
	h := sha256.New()
	writeFields(h, linkTag, prev, cpSig)
	return h.Sum(nil)
}

// CheckpointFile appends checkpoints to a file; safe for concurrent use.
type CheckpointFile struct {
	path string
	mu   sync.Mutex
	// The last line, once read: appends do not reread the file.
	loaded  bool
	lastSeq int64
	prev    string
}

// NewCheckpointFile returns the checkpoint file at path (created, mode
// 0600, on the first Append).
func NewCheckpointFile(path string) *CheckpointFile { return &CheckpointFile{path: path} }

// Path returns the file's path.
func (f *CheckpointFile) Path() string { return f.path }

// Append appends the checkpoints of cps newer than the file's last line,
// in order, signed by s, and syncs the file. Older ones are skipped: the
// caller passes every checkpoint of the store and the file catches up.
func (f *CheckpointFile) Append(s *Signer, cps []domain.AuditCheckpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		var err error
		if f.lastSeq, f.prev, err = lastLine(f.path); err != nil {
			return err
		}
		f.loaded = true
	}
	lastSeq, prev := f.lastSeq, f.prev
	var buf bytes.Buffer
	for _, cp := range cps {
		if cp.Seq <= lastSeq {
			continue
		}
		l := FileLine{AuditCheckpoint: cp, Prev: prev}
		l.LinkSignature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, linkMessage(prev, cp.Signature)))
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("checkpoint file: %w", err)
		}
		sum := sha256.Sum256(b)
		prev, lastSeq = hex.EncodeToString(sum[:]), cp.Seq
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if buf.Len() == 0 {
		return nil
	}
	fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	if _, err := fh.Write(buf.Bytes()); err != nil {
		fh.Close()
		f.loaded = false
		return fmt.Errorf("checkpoint file: append: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		f.loaded = false // reread: a partial write may have landed
		return fmt.Errorf("checkpoint file: sync: %w", err)
	}
	f.lastSeq, f.prev = lastSeq, prev
	return fh.Close()
}

// lastLine returns the seq and the hash of the file's last line (0 and
// GenesisHash for a missing or empty file).
func lastLine(path string) (int64, string, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, GenesisHash, nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("checkpoint file: %w", err)
	}
	defer fh.Close()
	var last []byte
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			last = append(last[:0], sc.Bytes()...)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("checkpoint file: read: %w", err)
	}
	if last == nil {
		return 0, GenesisHash, nil
	}
	var l FileLine
	if err := json.Unmarshal(last, &l); err != nil {
		return 0, "", fmt.Errorf("checkpoint file: last line: %w", err)
	}
	sum := sha256.Sum256(last)
	return l.Seq, hex.EncodeToString(sum[:]), nil
}

// ReadCheckpointFile reads and checks a checkpoint file against the pinned
// key pub: every line's checkpoint signature, its link to the line before
// and its link signature, and that seqs increase. A problem is returned as
// an error naming the line; a missing file returns an error matching
// os.ErrNotExist.
func ReadCheckpointFile(r io.Reader, pub ed25519.PublicKey) ([]domain.AuditCheckpoint, error) {
	var out []domain.AuditCheckpoint
	prev := GenesisHash
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		raw := sc.Bytes()
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		var l FileLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return out, fmt.Errorf("line %d: not a checkpoint: %v", n, err)
		}
		if l.Prev != prev {
			return out, fmt.Errorf("line %d (seq %d): does not follow line %d (lines removed, reordered or edited)", n, l.Seq, n-1)
		}
		sig, err := base64.StdEncoding.DecodeString(l.LinkSignature)
		if err != nil || !ed25519.Verify(pub, linkMessage(l.Prev, l.Signature), sig) {
			return out, fmt.Errorf("line %d (seq %d): bad link signature (forged or altered)", n, l.Seq)
		}
		if err := VerifyCheckpoint(pub, l.AuditCheckpoint); err != nil {
			return out, fmt.Errorf("line %d (seq %d): %v", n, l.Seq, err)
		}
		if len(out) > 0 && l.Seq <= out[len(out)-1].Seq {
			return out, fmt.Errorf("line %d: seq %d does not follow seq %d", n, l.Seq, out[len(out)-1].Seq)
		}
		sum := sha256.Sum256(raw)
		prev = hex.EncodeToString(sum[:])
		out = append(out, l.AuditCheckpoint)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read checkpoint file: %w", err)
	}
	return out, nil
}
