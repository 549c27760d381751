package ops

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moatdb/moat/internal/atomicfile"
)

// Spool is the durable outbox of a host's operator endpoints: audit events
// and terminal recordings are on disk before anything is sent, and leave
// it only when the control plane has them, so an agent that crashes or
// loses the control plane loses none.
//
// An event is one file, seq-numbered, written atomically by Append before
// it returns; Ack removes the events the control plane took. Sequence
// numbers increase across restarts (the last acknowledged one is kept in
// a file), and the spool has an ID made when its directory was: the pair
// lets the receiver drop a batch it already has (a send whose answer was
// lost), and a new spool (a reinstalled host) is never mistaken for an old
// one. A recording is written to a file as the session runs; Close makes it
// ready to send, and a recording whose session a crash cut is made ready
// when the spool is opened again, up to its last whole line. A mark per
// open session (MarkOpen, MarkClosed) tells the next process which
// sessions a crash ended without a close event.
//
// The directory holds terminal output until it is sent: it is the agent's
// (0700), like the nodes' keys.
type Spool struct {
	dir string
	id  string

	mu   sync.Mutex
	next uint64 // the next event's sequence number
}

// SpoolEntry is one event in the spool.
type SpoolEntry struct {
	Seq  uint64
	Data []byte
}

const (
	spoolIDFile    = "id"
	spoolAckedFile = "acked"
	spoolEventExt  = ".event"
	spoolRecDir    = "recordings"
	spoolOpenDir   = "open"
	spoolRecPart   = ".part"
	spoolRecReady  = ".cast"
)

// OpenSpool opens the spool in dir, creating it (0700, in an existing
// parent) and its ID when missing. Recordings left unfinished by a crash
// become ready to send.
func OpenSpool(dir string) (*Spool, error) {
	for _, d := range []string{dir, filepath.Join(dir, spoolRecDir), filepath.Join(dir, spoolOpenDir)} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("operator spool: %w", err)
		}
	}
	s := &Spool{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, spoolIDFile))
	switch {
	case err == nil:
		s.id = strings.TrimSpace(string(b))
	case errors.Is(err, os.ErrNotExist):
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, err
		}
		s.id = hex.EncodeToString(r[:])
		if err := atomicfile.WriteFile(filepath.Join(dir, spoolIDFile), []byte(s.id+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("operator spool: %w", err)
		}
	default:
		return nil, fmt.Errorf("operator spool: %w", err)
	}
	if s.id == "" {
		return nil, fmt.Errorf("operator spool: %s is empty", filepath.Join(dir, spoolIDFile))
	}
	acked, err := s.acked()
	if err != nil {
		return nil, err
	}
	seqs, err := s.seqs()
	if err != nil {
		return nil, err
	}
	s.next = acked + 1
	if n := len(seqs); n > 0 && seqs[n-1] >= s.next {
		s.next = seqs[n-1] + 1
	}
	if err := s.recoverRecordings(); err != nil {
		return nil, err
	}
	return s, nil
}

// ID identifies the spool (a new one per directory).
func (s *Spool) ID() string { return s.id }

func (s *Spool) acked() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, spoolAckedFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("operator spool: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("operator spool: acked: %w", err)
	}
	return n, nil
}

// seqs are the spooled events' sequence numbers, in order.
func (s *Spool) seqs() ([]uint64, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("operator spool: %w", err)
	}
	var out []uint64
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), spoolEventExt)
		if !ok || strings.HasPrefix(name, ".") {
			continue // a temporary file a crash left: never renamed, never acknowledged
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func (s *Spool) eventPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolEventExt))
}

// Append writes an event to the spool and returns its sequence number;
// the event is on disk (synced) when it returns.
func (s *Spool) Append(data []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.next
	if err := atomicfile.WriteFile(s.eventPath(seq), data, 0o600); err != nil {
		return 0, fmt.Errorf("operator spool: %w", err)
	}
	s.next++
	return seq, nil
}

// Pending returns up to max spooled events, oldest first.
func (s *Spool) Pending(max int) ([]SpoolEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs, err := s.seqs()
	if err != nil {
		return nil, err
	}
	var out []SpoolEntry
	for _, seq := range seqs {
		if len(out) == max {
			break
		}
		b, err := os.ReadFile(s.eventPath(seq))
		if err != nil {
			return nil, fmt.Errorf("operator spool: %w", err)
		}
		out = append(out, SpoolEntry{Seq: seq, Data: b})
	}
	return out, nil
}

// Ack removes the events up to seq: the control plane has them. The
// acknowledged sequence number is written first, so that numbers are
// never reused.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	acked, err := s.acked()
	if err != nil {
		return err
	}
	if seq > acked {
		if err := atomicfile.WriteFile(filepath.Join(s.dir, spoolAckedFile), []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
			return fmt.Errorf("operator spool: %w", err)
		}
	}
	seqs, err := s.seqs()
	if err != nil {
		return err
	}
	for _, n := range seqs {
		if n > seq {
			break
		}
		if err := os.Remove(s.eventPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("operator spool: %w", err)
		}
	}
	return nil
}

// MarkOpen records that session is open, with data (its opening event):
// a mark a crash leaves behind tells the next process which sessions
// ended without a close event.
func (s *Spool) MarkOpen(session string, data []byte) error {
	if session == "" || strings.ContainsAny(session, "/\\.") {
		return fmt.Errorf("operator spool: session %q: bad name", session)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, spoolOpenDir, session), data, 0o600); err != nil {
		return fmt.Errorf("operator spool: %w", err)
	}
	return nil
}

// MarkClosed removes session's mark.
func (s *Spool) MarkClosed(session string) error {
	if session == "" || strings.ContainsAny(session, "/\\.") {
		return fmt.Errorf("operator spool: session %q: bad name", session)
	}
	if err := os.Remove(filepath.Join(s.dir, spoolOpenDir, session)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("operator spool: %w", err)
	}
	return nil
}

// OpenMarks returns the marks of sessions not marked closed, by session.
func (s *Spool) OpenMarks() (map[string][]byte, error) {
	des, err := os.ReadDir(filepath.Join(s.dir, spoolOpenDir))
	if err != nil {
		return nil, fmt.Errorf("operator spool: %w", err)
	}
	out := map[string][]byte{}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".") {
			continue // a temporary file a crash left
		}
		b, err := os.ReadFile(filepath.Join(s.dir, spoolOpenDir, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("operator spool: %w", err)
		}
		out[de.Name()] = b
	}
	return out, nil
}

// SpoolRecording is a recording being written to the spool.
type SpoolRecording struct {
	f    *os.File
	part string
}

// recordingName is the file name of the recording of a node's session's
// channel.
func recordingName(node, session string, channel int) (string, error) {
	for _, v := range []string{node, session} {
		if v == "" || strings.ContainsAny(v, "/\\._") {
			return "", fmt.Errorf("operator spool: recording %q/%q/%d: bad name", node, session, channel)
		}
	}
	if channel < 1 {
		return "", fmt.Errorf("operator spool: recording %q/%q/%d: bad channel", node, session, channel)
	}
	return node + "_" + session + "_" + strconv.Itoa(channel), nil
}

// CreateRecording starts the recording of a node's session's channel.
func (s *Spool) CreateRecording(node, session string, channel int) (*SpoolRecording, error) {
	name, err := recordingName(node, session, channel)
	if err != nil {
		return nil, err
	}
	part := filepath.Join(s.dir, spoolRecDir, name+spoolRecPart)
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("operator spool: %w", err)
	}
	return &SpoolRecording{f: f, part: part}, nil
}

func (r *SpoolRecording) Write(p []byte) (int, error) { return r.f.Write(p) }

// Close finishes the recording: it is synced and ready to send.
func (r *SpoolRecording) Close() error {
	err := r.f.Sync()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("operator spool: %w", err)
	}
	if err := os.Rename(r.part, strings.TrimSuffix(r.part, spoolRecPart)+spoolRecReady); err != nil {
		return fmt.Errorf("operator spool: %w", err)
	}
	return nil
}

// recoverRecordings makes the recordings a crash left unfinished ready,
// cut after their last whole line (asciicast is one JSON value a line).
func (s *Spool) recoverRecordings() error {
	dir := filepath.Join(s.dir, spoolRecDir)
	parts, err := filepath.Glob(filepath.Join(dir, "*"+spoolRecPart))
	if err != nil {
		return err
	}
	for _, p := range parts {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("operator spool: %w", err)
		}
		b = b[:bytes.LastIndexByte(b, '\n')+1]
		if err := atomicfile.WriteFile(strings.TrimSuffix(p, spoolRecPart)+spoolRecReady, b, 0o600); err != nil {
			return fmt.Errorf("operator spool: %w", err)
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("operator spool: %w", err)
		}
	}
	return nil
}

// ReadyRecording is a finished recording in the spool.
type ReadyRecording struct {
	Node    string
	Session string
	Channel int
	path    string
}

// Recordings returns the finished recordings.
func (s *Spool) Recordings() ([]ReadyRecording, error) {
	ps, err := filepath.Glob(filepath.Join(s.dir, spoolRecDir, "*"+spoolRecReady))
	if err != nil {
		return nil, err
	}
	var out []ReadyRecording
	for _, p := range ps {
		f := strings.Split(strings.TrimSuffix(filepath.Base(p), spoolRecReady), "_")
		if len(f) != 3 {
			continue
		}
		ch, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		out = append(out, ReadyRecording{Node: f[0], Session: f[1], Channel: ch, path: p})
	}
	return out, nil
}

// Data returns the recording's content.
func (r ReadyRecording) Data() ([]byte, error) {
	b, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("operator spool: %w", err)
	}
	return b, nil
}

// Remove deletes the recording: the control plane has it.
func (r ReadyRecording) Remove() error {
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("operator spool: %w", err)
	}
	return nil
}
