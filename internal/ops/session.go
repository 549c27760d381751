package ops

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/ops/asciicast"
)

// session serves one session channel: at most one shell or exec request,
// a terminal if the certificate permits one, nothing else.
func (s *Server) session(ctx context.Context, lc *liveConn, nch ssh.NewChannel, n int) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		term    *Terminal
		rec     *recorder
		resize  = make(chan WindowSize, 8)
		done    chan struct{}
		refuse  = func(reason, detail string) { s.audit(withReason(lc.event(ActionRefused), reason, detail)) }
		_, pty  = lc.cert.Extensions["permit-pty"]
		started bool
	)
	for req := range reqs {
		ok := false
		switch req.Type {
		case "pty-req":
			if !pty {
				refuse(ReasonPTYNotPermitted, "the certificate has no permit-pty")
				break
			}
			if t, err := parsePTYReq(req.Payload); err == nil && !started {
				term, ok = t, true
			}
		case "window-change":
			if ws, err := parseWindowChange(req.Payload); err == nil && term != nil {
				if rec != nil {
					_ = rec.w.Resize(ws.Cols, ws.Rows)
				}
				select {
				case resize <- ws:
				default: // the runner is behind; a later change follows
				}
				ok = true
			}
		case "shell", "exec":
			if started {
				break
			}
			var line string
			if req.Type == "exec" {
				var p struct{ Command string }
				if ssh.Unmarshal(req.Payload, &p) != nil {
					break
				}
				line = p.Command
			}
			var err error
			rec, err = s.startRecording(lc, n, term, line)
			if err != nil {
				refuse(ReasonRecording, err.Error())
				break
			}
			started, ok = true, true
			if line != "" {
				e := lc.event(ActionExec)
				e.Command = line
				s.audit(e)
			} else {
				s.audit(lc.event(ActionShell))
			}
			done = make(chan struct{})
			r := rec
			go func() {
				defer close(done)
				s.run(ctx, lc, ch, &Command{Line: line, Term: term, Resize: resize}, r)
			}()
		case "env":
			// Refused quietly: clients send LANG and LC_* by default.
		case "auth-agent-req@openssh.com":
			refuse(ReasonAgentForwarding, req.Type)
		case "x11-req":
			refuse(ReasonX11Forwarding, req.Type)
		case "subsystem":
			var p struct{ Name string }
			_ = ssh.Unmarshal(req.Payload, &p)
			refuse(ReasonSubsystem, p.Name)
		}
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
	}
	// The client closed the channel (or the connection is gone).
	cancel()
	if done != nil {
		<-done
	}
}

// run runs cmd on ch, reports its exit status and closes ch.
func (s *Server) run(ctx context.Context, lc *liveConn, ch ssh.Channel, cmd *Command, rec *recorder) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd.Stdin = &countingReader{r: ch, n: &lc.in}
	var out io.Writer = &countingWriter{w: ch, n: &lc.out}
	if rec != nil {
		// A recording that fails ends the command: nothing runs
		// unrecorded.
		out = io.MultiWriter(&cancelOnError{w: rec.w, cancel: cancel}, out)
		defer rec.close(s)
	}
	cmd.Stdout = out
	cmd.Stderr = &countingWriter{w: ch.Stderr(), n: &lc.out}
	status, err := s.cfg.Runner.Run(ctx, cmd)
	if err != nil {
		s.log.Warn("ops session command", "session", lc.id, "err", err)
		fmt.Fprintf(cmd.Stderr, "moat: cannot run the command\r\n")
		status = 127
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
}

// recorder is an interactive session's recording.
type recorder struct {
	w    *asciicast.Writer
	dst  io.WriteCloser
	info Recording
}

// startRecording opens the recording of a terminal session (nil without a
// terminal: commands run without one are audited, not recorded).
func (s *Server) startRecording(lc *liveConn, n int, term *Terminal, line string) (*recorder, error) {
	if term == nil {
		return nil, nil
	}
	info := Recording{Session: lc.id, Channel: n, GrantID: lc.cert.KeyId, Serial: lc.cert.Serial, Start: s.cfg.Now(), Term: *term, Command: line}
	dst, err := s.cfg.Record(info)
	if err != nil {
		return nil, fmt.Errorf("open recording: %w", err)
	}
	title := "moat ops " + lc.cert.KeyId
	w, err := asciicast.NewWriter(dst, asciicast.Header{Width: term.Cols, Height: term.Rows, Title: title, Env: map[string]string{"TERM": term.Name}}, info.Start, s.cfg.Now)
	if err != nil {
		dst.Close()
		return nil, err
	}
	return &recorder{w: w, dst: dst, info: info}, nil
}

func (r *recorder) close(s *Server) {
	err := r.w.Flush()
	if cerr := r.dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.log.Error("ops recording", "session", r.info.Session, "channel", r.info.Channel, "err", err)
	}
}

// parsePTYReq parses a pty-req payload (RFC 4254 6.2).
func parsePTYReq(b []byte) (*Terminal, error) {
	var p struct {
		Term             string
		Cols, Rows, W, H uint32
		Modes            string
	}
	if err := ssh.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("pty-req: %w", err)
	}
	t := &Terminal{Name: p.Term, WindowSize: WindowSize{Cols: int(p.Cols), Rows: int(p.Rows)}}
	if t.Cols == 0 || t.Rows == 0 { // a client without a terminal of its own
		t.WindowSize = WindowSize{Cols: 80, Rows: 24}
	}
	if t.Name == "" {
		t.Name = "dumb"
	}
	return t, nil
}

// parseWindowChange parses a window-change payload (RFC 4254 6.7).
func parseWindowChange(b []byte) (WindowSize, error) {
	var p struct{ Cols, Rows, W, H uint32 }
	if err := ssh.Unmarshal(b, &p); err != nil {
		return WindowSize{}, fmt.Errorf("window-change: %w", err)
	}
	return WindowSize{Cols: int(p.Cols), Rows: int(p.Rows)}, nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// cancelOnError calls cancel when a write fails.
type cancelOnError struct {
	w      io.Writer
	cancel func()
}

func (c *cancelOnError) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}
