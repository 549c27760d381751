package asciicast

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// record writes a short session with a clock that advances one second per
// event, splitting "é" (0xC3 0xA9) across two writes.
func record(t *testing.T) []byte {
	t.Helper()
	start := time.Unix(1_800_000_000, 0)
	clock := start
	now := func() time.Time { clock = clock.Add(time.Second); return clock }
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm"}}, start, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := w.Write([]byte("$ ")); return err },
		func() error { _, err := w.Write([]byte("caf\xc3")); return err },
		func() error { _, err := w.Write([]byte("\xa9\r\n")); return err },
		func() error { return w.Resize(100, 30) },
		func() error { _, err := w.Write([]byte("bad \xff end")); return err },
		w.Flush,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestWriterIsAsciicastV2(t *testing.T) {
	rec := record(t)
	lines := strings.Split(strings.TrimSuffix(string(rec), "\n"), "\n")
	var h map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatalf("header %q: %v", lines[0], err)
	}
	if h["version"] != 2.0 || h["width"] != 80.0 || h["height"] != 24.0 || h["timestamp"] != 1.8e9 {
		t.Errorf("header = %v", h)
	}
	want := []string{
		`[1.000000, "o", "$ "]`,
		`[2.000000, "o", "caf"]`,
		`[3.000000, "o", "é\r\n"]`,
		`[4.000000, "r", "100x30"]`,
		`[5.000000, "o", "bad \ufffd end"]`,
	}
	if diff := cmp.Diff(want, lines[1:]); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestReader(t *testing.T) {
	rd, err := NewReader(bytes.NewReader(record(t)))
	if err != nil {
		t.Fatal(err)
	}
	var got []Event
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	want := []Event{
		{time.Second, Output, "$ "},
		{2 * time.Second, Output, "caf"},
		{3 * time.Second, Output, "é\r\n"},
		{4 * time.Second, Resize, "100x30"},
		{5 * time.Second, Output, "bad \ufffd end"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if rd.Header.Env["TERM"] != "xterm" {
		t.Errorf("header env = %v", rd.Header.Env)
	}

	for _, bad := range []string{"", "not json\n", `{"version":1}` + "\n", `{"version":2}` + "\n[1, \"o\"]\n", `{"version":2}` + "\n[-1, \"o\", \"x\"]\n"} {
		rd, err := NewReader(strings.NewReader(bad))
		if err == nil {
			_, err = rd.Next()
		}
		if !errors.Is(err, ErrFormat) {
			t.Errorf("reading %q: err = %v, want ErrFormat", bad, err)
		}
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	start := time.Now()
	// Five one-second gaps: at 1000x speed they take 5 ms, with MaxIdle
	// 1 ms at most 5 ms whatever the speed.
	if err := Replay(context.Background(), &out, bytes.NewReader(record(t)), ReplayOptions{Speed: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := Replay(context.Background(), &out, bytes.NewReader(record(t)), ReplayOptions{MaxIdle: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("replays took %v", d)
	}
	want := "$ café\r\nbad \ufffd end"
	if got := out.String(); got != want+want {
		t.Errorf("replayed %q, want %q twice", got, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Replay(ctx, io.Discard, bytes.NewReader(record(t)), ReplayOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Replay with a done context = %v, want context.Canceled", err)
	}
}
