// Package asciicast writes, reads and replays terminal recordings in the
// asciicast v2 format (a JSON header line, then one JSON array per event:
// [seconds, "o", "data"]), the format asciinema plays. The operator
// endpoint (internal/ops) records interactive sessions with it; the caller
// decides where the stream goes (the control plane seals it), and the CLI
// replays it. It performs no I/O of its own beyond the readers and writers
// it is given.
package asciicast

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Event types of asciicast v2.
const (
	Output = "o" // data written to the terminal
	Input  = "i" // data typed
	Resize = "r" // "COLSxROWS"
	Marker = "m"
)

// Header is the first line of a recording.
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// Event is one recorded event: its time since the start, type and data.
type Event struct {
	Time time.Duration
	Type string
	Data string
}

// Writer appends events to a recording. It is safe for concurrent use.
type Writer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	now   func() time.Time
	carry []byte // an incomplete UTF-8 sequence at the end of the last output
	err   error
}

// NewWriter writes h (Version 2, Timestamp = start) to w and returns a
// Writer that timestamps events relative to start with now.
func NewWriter(w io.Writer, h Header, start time.Time, now func() time.Time) (*Writer, error) {
	h.Version = 2
	h.Timestamp = start.Unix()
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode asciicast header: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("write asciicast header: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Writer{w: w, start: start, now: now}, nil
}

// Write records p as terminal output. A multi-byte character split between
// two writes is kept whole; invalid UTF-8 becomes U+FFFD.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data := append(w.carry, p...)
	cut := completeUTF8(data)
	w.carry = append([]byte(nil), data[cut:]...)
	if cut > 0 {
		w.event(Output, string(data[:cut]))
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Resize records a terminal size change.
func (w *Writer) Resize(cols, rows int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.event(Resize, fmt.Sprintf("%dx%d", cols, rows))
	return w.err
}

// Flush writes a pending incomplete character (as U+FFFD).
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.carry) > 0 {
		w.event(Output, string(w.carry))
		w.carry = nil
	}
	return w.err
}

// event writes one event line; the first error sticks. Callers hold mu.
func (w *Writer) event(typ, data string) {
	if w.err != nil {
		return
	}
	d, err := json.Marshal(data) // invalid UTF-8 is replaced by U+FFFD
	if err != nil {
		w.err = err
		return
	}
	t := strconv.FormatFloat(w.now().Sub(w.start).Seconds(), 'f', 6, 64)
	line := make([]byte, 0, len(t)+len(typ)+len(d)+10)
	line = append(line, '[')
	line = append(line, t...)
	line = append(line, `, "`...)
	line = append(line, typ...)
	line = append(line, `", `...)
	line = append(line, d...)
	line = append(line, "]\n"...)
	if _, err := w.w.Write(line); err != nil {
		w.err = fmt.Errorf("write asciicast event: %w", err)
	}
}

// completeUTF8 returns the length of b without a trailing incomplete (but so
// far valid) UTF-8 sequence.
func completeUTF8(b []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 { // ASCII: everything before it is complete
			return len(b)
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return len(b) - i
			}
			return len(b)
		}
	}
	return len(b)
}

// Reader reads a recording.
type Reader struct {
	Header Header
	sc     *bufio.Scanner
	line   int
}

// ErrFormat is returned for input that is not an asciicast v2 recording.
var ErrFormat = errors.New("not an asciicast v2 recording")

// NewReader reads the header of the recording in r.
func NewReader(r io.Reader) (*Reader, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read asciicast header: %w", err)
		}
		return nil, fmt.Errorf("%w: empty", ErrFormat)
	}
	rd := &Reader{sc: sc, line: 1}
	if err := json.Unmarshal(sc.Bytes(), &rd.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if rd.Header.Version != 2 {
		return nil, fmt.Errorf("%w: version %d", ErrFormat, rd.Header.Version)
	}
	return rd, nil
}

// Next returns the next event, or io.EOF after the last one.
func (r *Reader) Next() (Event, error) {
	for r.sc.Scan() {
		r.line++
		if len(r.sc.Bytes()) == 0 {
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(r.sc.Bytes(), &raw); err != nil || len(raw) != 3 {
			return Event{}, fmt.Errorf("%w: line %d is not [time, type, data]", ErrFormat, r.line)
		}
		var (
			secs float64
			ev   Event
		)
		if json.Unmarshal(raw[0], &secs) != nil || json.Unmarshal(raw[1], &ev.Type) != nil || json.Unmarshal(raw[2], &ev.Data) != nil || secs < 0 {
			return Event{}, fmt.Errorf("%w: line %d is not [time, type, data]", ErrFormat, r.line)
		}
		ev.Time = time.Duration(secs * float64(time.Second))
		return ev, nil
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, fmt.Errorf("read asciicast: %w", err)
	}
	return Event{}, io.EOF
}

// ReplayOptions control Replay.
type ReplayOptions struct {
	// Speed divides the delays (2 plays twice as fast); 0 means 1.
	Speed float64
	// MaxIdle caps a pause between two events (after Speed); 0 keeps them.
	MaxIdle time.Duration
}

// Replay writes the output events of the recording in r to dst, waiting
// between them as recorded (scaled by opt). It ends early when ctx is done.
func Replay(ctx context.Context, dst io.Writer, r io.Reader, opt ReplayOptions) error {
	rd, err := NewReader(r)
	if err != nil {
		return err
	}
	speed := opt.Speed
	if speed <= 0 {
		speed = 1
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var last time.Duration
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if ev.Type != Output {
			continue
		}
		wait := time.Duration(float64(ev.Time-last) / speed)
		last = ev.Time
		if opt.MaxIdle > 0 && wait > opt.MaxIdle {
			wait = opt.MaxIdle
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		}
		if _, err := io.WriteString(dst, ev.Data); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
}
