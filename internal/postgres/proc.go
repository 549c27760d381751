package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Shutdown timing: a fast shutdown (SIGINT: roll back sessions, checkpoint)
// gets fastTimeout, then an immediate one (SIGQUIT: no checkpoint, crash
// recovery at the next start), then SIGKILL.
const (
	fastTimeout      = 10 * time.Second
	immediateTimeout = 5 * time.Second
)

// command returns a command running the PostgreSQL program name as the
// postgres user, under Config.Exec. Its environment is minimal and its
// working directory is "/".
func (in *Instance) command(name string, args ...string) (*exec.Cmd, error) {
	argv := append([]string{filepath.Join(in.cfg.BinDir, name)}, args...)
	attr := &syscall.SysProcAttr{Setpgid: true}
	if len(in.cfg.Exec) > 0 {
		prefix := in.cfg.Exec
		if in.cred != nil {
			// The prefix (ip netns exec) needs root; drop after it.
			setpriv, err := exec.LookPath("setpriv")
			if err != nil {
				return nil, fmt.Errorf("find setpriv (util-linux), needed to drop to the postgres user under Config.Exec: %w", err)
			}
			prefix = append(slices.Clone(prefix), setpriv,
				"--reuid="+strconv.FormatUint(uint64(in.cred.Uid), 10),
				"--regid="+strconv.FormatUint(uint64(in.cred.Gid), 10))
			if len(in.cred.Groups) == 0 {
				prefix = append(prefix, "--clear-groups")
			} else {
				var gs []string
				for _, g := range in.cred.Groups {
					gs = append(gs, strconv.FormatUint(uint64(g), 10))
				}
				prefix = append(prefix, "--groups="+strings.Join(gs, ","))
			}
			prefix = append(prefix, "--")
		}
		argv = append(slices.Clone(prefix), argv...)
	} else if in.cred != nil {
		attr.Credential = in.cred
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "TZ=UTC"}
	cmd.Dir = "/"
	cmd.SysProcAttr = attr
	return cmd, nil
}

// run runs a short-lived PostgreSQL program and returns its output in the
// error when it fails. Cancelling ctx kills it.
func (in *Instance) run(ctx context.Context, name string, args ...string) error {
	_, err := in.output(ctx, name, args...)
	return err
}

// output runs a short-lived PostgreSQL program and returns its output
// (in the error when it fails). Cancelling ctx kills it.
func (in *Instance) output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd, err := in.command(name, args...)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		case <-done:
		}
	}()
	err = cmd.Wait()
	close(done)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w\n%s", name, err, tail(out.Bytes(), 4000))
	}
	return out.Bytes(), nil
}

// Start starts the postmaster and waits until it accepts connections on
// the Unix socket (for a replica: until it is consistent). The postmaster
// runs in its own session and outlives this process; a later Instance for
// the same data directory finds it. If it is already running, Start only
// waits for it to be ready. If ctx ends first, Start returns an error and
// leaves the postmaster running (crash recovery may be long); call Stop to
// give up on it.
func (in *Instance) Start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.start(ctx)
}

func (in *Instance) start(ctx context.Context) error {
	select {
	case <-in.closed:
		return fmt.Errorf("start postgres: %w", ErrClosed)
	default:
	}
	if _, ok := in.pid(); ok {
		return in.waitReady(ctx, nil)
	}
	if !in.initialized() {
		return fmt.Errorf("start postgres: %s: %w", in.cfg.DataDir, ErrNotInitialized)
	}
	if err := in.ensureDir(in.cfg.SocketDir); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	// The log is the caller's (root's under an agent) alone: the server
	// writes it through the descriptor it inherits.
	logf, err := os.OpenFile(in.cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("start postgres: open log: %w", err)
	}
	defer logf.Close()
	if err := logf.Chmod(0o600); err != nil {
		return fmt.Errorf("start postgres: log: %w", err)
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd, err := in.command("postgres", "-D", in.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: no terminal signal of the agent's reaches it, and it
	// keeps running when the agent exits.
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Setsid = true
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	ch := &child{pid: cmd.Process.Pid, done: make(chan struct{})}
	in.childMu.Lock()
	in.child = ch
	in.childMu.Unlock()
	in.reapers.Add(1)
	go in.reap(cmd.Process, ch)
	if err := in.waitReady(ctx, ch); err != nil {
		return fmt.Errorf("start postgres: %w\n%s", err, in.logSince(logStart))
	}
	in.log.Info("postgres started", "data_dir", in.cfg.DataDir, "pid", ch.pid, "duration", time.Since(t0))
	return nil
}

// reapEvery is how often reap looks for its postmaster's exit.
const reapEvery = 100 * time.Millisecond

// orphans are the postmasters this process started whose Instance was
// closed while they ran: the process must still reap them, and whichever
// Instance sees one gone does (alive). A package variable because the
// parent-child relation is the process's, not an Instance's. A pid in it
// stays this process's child until reaped, so it is never another's.
var orphans = struct {
	sync.Mutex
	m map[int]*child
}{m: map[int]*child{}}

// reapOrphan reaps pid if it is an orphan that exited.
func reapOrphan(pid int) {
	orphans.Lock()
	defer orphans.Unlock()
	if ch := orphans.m[pid]; ch != nil && ch.reap() {
		delete(orphans.m, pid)
	}
}

// reap reaps ch's postmaster once it exits, then closes ch.done. It polls
// (a blocking wait could not end) so that Close ends it while the
// postmaster runs on, an orphan.
func (in *Instance) reap(p *os.Process, ch *child) {
	defer in.reapers.Done()
	defer p.Release()
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		if ch.reap() {
			return
		}
		select {
		case <-in.closed:
			in.childMu.Lock()
			if in.child == ch {
				in.child = nil
			}
			in.childMu.Unlock()
			orphans.Lock()
			orphans.m[ch.pid] = ch
			orphans.Unlock()
			reapOrphan(ch.pid) // it may have exited since the last look
			return
		case <-t.C:
		}
	}
}

// reaped reaps pid if it is an exited child of this process, and reports
// whether it is gone for this process: reaped now, or not (any more) its
// child.
func reaped(pid int) bool {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return got == pid || err != nil // ECHILD: not a child (any more)
	}
}

// Close ends the Instance's watch over the postmaster it started, waiting
// for a Start in progress: the postmaster keeps running (fail-static), and
// an Instance of this process that later finds it exited reaps it. Start fails after
// Close; the other methods still work. Closing twice is allowed.
func (in *Instance) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closeOnce.Do(func() { close(in.closed) })
	in.reapers.Wait()
	return nil
}

// waitReady waits until a management connection succeeds. ch, when not
// nil, is the postmaster this process started: its exit ends the wait.
func (in *Instance) waitReady(ctx context.Context, ch *child) error {
	var lastErr error
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := in.connect(actx, "postgres")
		if err == nil {
			_, err = conn.Exec(actx, "SELECT 1")
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		var exited <-chan struct{}
		if ch != nil {
			exited = ch.done
		} else if _, ok := in.pid(); !ok {
			return errors.New("postmaster exited")
		}
		select {
		case <-exited:
			return errors.New("postmaster exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Running reports whether the data directory's postmaster is running.
func (in *Instance) Running() bool {
	_, ok := in.pid()
	return ok
}

// pid returns the postmaster's pid from postmaster.pid, if that process is
// alive and is a postmaster of this data directory (its working directory
// is the data directory: a recycled pid is not mistaken for it).
func (in *Instance) pid() (int, bool) {
	b, err := os.ReadFile(filepath.Join(in.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, in.alive(pid)
}

// dyingWait bounds alive's wait for a process that is exiting.
const dyingWait = 2 * time.Second

// zombie reports whether pid is a zombie (exited, not yet reaped).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && strings.HasPrefix(rest, "Z")
}

func (in *Instance) alive(pid int) bool {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		// Gone, or a zombie: reaped now if this process started it
		// (PostgreSQL takes a zombie's postmaster.pid for a live one).
		// A SIGKILLed process loses its working directory before it is
		// a zombie: until it is gone (or a zombie not ours to reap) its
		// pid still holds postmaster.pid, and a new postmaster would
		// refuse to start.
		in.childMu.Lock()
		ch := in.child
		in.childMu.Unlock()
		for deadline := time.Now().Add(dyingWait); ; time.Sleep(5 * time.Millisecond) {
			if ch != nil && ch.pid == pid {
				ch.reap()
			} else {
				reapOrphan(pid)
			}
			if syscall.Kill(pid, 0) != nil || zombie(pid) || time.Now().After(deadline) {
				return false
			}
		}
	}
	want, err := filepath.EvalSymlinks(in.cfg.DataDir)
	if err != nil {
		want = in.cfg.DataDir
	}
	return cwd == want
}

// Stop stops the postmaster: a fast shutdown, then an immediate one after
// 10 s (or when ctx ends), then SIGKILL. It returns once the postmaster
// has exited; it is a no-op when none runs.
func (in *Instance) Stop(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stop(ctx)
}

func (in *Instance) stop(ctx context.Context) error {
	pid, ok := in.pid()
	if !ok {
		return nil
	}
	t0 := time.Now()
	steps := []struct {
		sig     syscall.Signal
		timeout time.Duration
		useCtx  bool
	}{
		{syscall.SIGINT, fastTimeout, true},
		{syscall.SIGQUIT, immediateTimeout, false},
		{syscall.SIGKILL, immediateTimeout, false},
	}
	for _, s := range steps {
		if err := syscall.Kill(pid, s.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop postgres: signal %d: %w", pid, err)
		}
		if in.waitExit(ctx, pid, s.timeout, s.useCtx) {
			in.log.Info("postgres stopped", "data_dir", in.cfg.DataDir, "pid", pid, "signal", s.sig.String(), "duration", time.Since(t0))
			return nil
		}
	}
	return fmt.Errorf("stop postgres: pid %d still running after SIGKILL", pid)
}

// BeginStop asks the postmaster for a fast shutdown (SIGINT) and returns
// at once; Stop waits for it (and escalates). A no-op when none runs.
func (in *Instance) BeginStop() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	pid, ok := in.pid()
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop postgres: signal %d: %w", pid, err)
	}
	return nil
}

// waitExit waits up to timeout (and, with useCtx, no longer than ctx) for
// pid to exit (alive reaps it if this process started it).
func (in *Instance) waitExit(ctx context.Context, pid int, timeout time.Duration, useCtx bool) bool {
	var ctxDone <-chan struct{}
	if useCtx {
		ctxDone = ctx.Done()
	}
	deadline := time.After(timeout)
	for {
		if !in.alive(pid) {
			return true
		}
		select {
		case <-deadline:
			return false
		case <-ctxDone:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// EnsureRunning starts the postmaster if it is not running: the agent's
// restart-if-dead primitive, to call on every reconcile pass. It reports
// whether it started it.
func (in *Instance) EnsureRunning(ctx context.Context) (started bool, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.pid(); ok {
		return false, nil
	}
	in.log.Warn("postgres not running; starting it", "data_dir", in.cfg.DataDir)
	if err := in.start(ctx); err != nil {
		return true, err
	}
	return true, nil
}

// Wipe removes the data directory and the TLS, socket and log files. It
// refuses while the postmaster runs.
func (in *Instance) Wipe() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if pid, ok := in.pid(); ok {
		return fmt.Errorf("wipe %s: postgres is running (pid %d); stop it first", in.cfg.DataDir, pid)
	}
	for _, p := range []string{in.cfg.DataDir, in.cfg.DataDir + ".new", in.cfg.TLSDir, in.cfg.SocketDir, in.cfg.LogFile} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("wipe: %w", err)
		}
	}
	return nil
}

// logSince returns what the postmaster logged from offset on (at most its
// last 4000 bytes).
func (in *Instance) logSince(offset int64) string {
	f, err := os.Open(in.cfg.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(tail(b, 4000))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ShutdownCheckpoint reads the server's control file (pg_controldata):
// the location of its last checkpoint, provided the cluster was shut
// down cleanly (a fast or smart shutdown, whose checkpoint is then the
// last WAL record written); ok is false otherwise (running, an immediate
// shutdown, a crash, or a server in recovery). The control file says
// "shut down" as soon as the shutdown checkpoint is written, before the
// postmaster exits (its archiver may still be archiving the last
// segment, its walsenders streaming the last records): the position is
// final from then on.
func (in *Instance) ShutdownCheckpoint(ctx context.Context) (lsn string, ok bool, err error) {
	out, err := in.output(ctx, "pg_controldata", "-D", in.cfg.DataDir)
	if err != nil {
		return "", false, err
	}
	return parseControlData(string(out))
}

// parseControlData finds the cluster state and the latest checkpoint
// location in pg_controldata's output (LC_ALL=C).
func parseControlData(s string) (lsn string, ok bool, err error) {
	var state string
	for _, line := range strings.Split(s, "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			state = strings.TrimSpace(v)
		case "Latest checkpoint location":
			lsn = strings.TrimSpace(v)
		}
	}
	if lsn == "" || state == "" {
		return "", false, fmt.Errorf("pg_controldata: no cluster state or checkpoint location in its output")
	}
	return lsn, state == "shut down", nil
}
