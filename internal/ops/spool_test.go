package ops

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pendingData(t *testing.T, s *Spool) (seqs []uint64, data []string) {
	t.Helper()
	es, err := s.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		seqs = append(seqs, e.Seq)
		data = append(data, string(e.Data))
	}
	return seqs, data
}

// TestSpoolSurvivesCrash: what Append wrote is found by a spool opened
// again on the directory without the first being closed (a crash), in
// order; Ack removes it for good; sequence numbers never repeat, even
// when everything was acknowledged; the ID stays.
func TestSpoolSurvivesCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if seq, err := s.Append([]byte(fmt.Sprintf("event %d", i))); err != nil || seq != uint64(i) {
			t.Fatalf("Append = %d, %v; want %d", seq, err, i)
		}
	}
	// A crash while writing the fourth leaves a temporary file.
	if err := os.WriteFile(filepath.Join(dir, ".00000000000000000004.event.tmp123"), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}

	again, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != s.ID() || len(s.ID()) != 16 {
		t.Errorf("ID after reopening = %q, was %q", again.ID(), s.ID())
	}
	seqs, data := pendingData(t, again)
	if fmt.Sprint(seqs) != "[1 2 3]" || strings.Join(data, ",") != "event 1,event 2,event 3" {
		t.Fatalf("pending after a crash = %v %q, want the three events in order", seqs, data)
	}
	if es, err := again.Pending(2); err != nil || len(es) != 2 {
		t.Errorf("Pending(2) = %d entries, %v", len(es), err)
	}
	if err := again.Ack(2); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := pendingData(t, again); fmt.Sprint(seqs) != "[3]" {
		t.Errorf("pending after Ack(2) = %v, want [3]", seqs)
	}
	if err := again.Ack(3); err != nil {
		t.Fatal(err)
	}
	// Everything acknowledged: a new process goes on from 4, not 1.
	third, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	if seqs, _ := pendingData(t, third); len(seqs) != 0 {
		t.Errorf("pending after Ack = %v, want none", seqs)
	}
	if seq, err := third.Append([]byte("event 4")); err != nil || seq != 4 {
		t.Errorf("Append after reopening = %d, %v; want 4", seq, err)
	}

	// Another directory is another spool.
	other, err := OpenSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other.ID() == s.ID() {
		t.Error("two spools share an ID")
	}
}

// TestSpoolRecordings: a closed recording is ready to send; one a crash
// cut is made ready on reopening, up to its last whole line; Remove
// deletes it.
func TestSpoolRecordings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	done, err := s.CreateRecording("node-a", "ses-0123456789abcdef", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := done.Write([]byte("{\"version\":2}\n[0.1,\"o\",\"done\"]\n")); err != nil {
		t.Fatal(err)
	}
	cut, err := s.CreateRecording("node-b", "ses-fedcba9876543210", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cut.Write([]byte("{\"version\":2}\n[0.1,\"o\",\"before the crash\"]\n[0.2,\"o\",\"tor")); err != nil {
		t.Fatal(err)
	}
	if rs, err := s.Recordings(); err != nil || len(rs) != 0 {
		t.Errorf("recordings still being written are ready: %+v, %v", rs, err)
	}
	if err := done.Close(); err != nil {
		t.Fatal(err)
	}
	if rs, err := s.Recordings(); err != nil || len(rs) != 1 || rs[0].Node != "node-a" || rs[0].Session != "ses-0123456789abcdef" || rs[0].Channel != 1 {
		t.Errorf("recordings after Close = %+v, %v", rs, err)
	}
	if _, err := s.CreateRecording("node-a", "../x", 1); err == nil {
		t.Error("a recording name with a path was accepted")
	}

	again, err := OpenSpool(dir) // the crash: cut was never closed
	if err != nil {
		t.Fatal(err)
	}
	rs, err := again.Recordings()
	if err != nil || len(rs) != 2 {
		t.Fatalf("recordings after a crash = %+v, %v; want 2", rs, err)
	}
	for _, r := range rs {
		b, err := r.Data()
		if err != nil {
			t.Fatal(err)
		}
		if r.Session == "ses-fedcba9876543210" {
			if r.Node != "node-b" || r.Channel != 2 || string(b) != "{\"version\":2}\n[0.1,\"o\",\"before the crash\"]\n" {
				t.Errorf("cut recording = %d %q, want channel 2 up to its last whole line", r.Channel, b)
			}
		}
		if err := r.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if rs, err := again.Recordings(); err != nil || len(rs) != 0 {
		t.Errorf("recordings after Remove = %+v, %v", rs, err)
	}
}

// TestSpoolSessionMarks: a session marked open and never closed is found
// by the next spool on the directory; a closed one is not.
func TestSpoolSessionMarks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ses := range []string{"ses-0123456789abcdef", "ses-fedcba9876543210"} {
		if err := s.MarkOpen(ses, []byte("opened "+ses)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkClosed("ses-fedcba9876543210"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkOpen("../x", nil); err == nil {
		t.Error("a session name with a path was accepted")
	}
	again, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	marks, err := again.OpenMarks()
	if err != nil || len(marks) != 1 || string(marks["ses-0123456789abcdef"]) != "opened ses-0123456789abcdef" {
		t.Errorf("open marks after a crash = %q, %v; want the session never closed", marks, err)
	}
}
