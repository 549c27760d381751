package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShellRunner runs commands with a shell (Shell -c LINE, or Shell -l on a
// terminal) in a new session, with a clean environment, as Credential. On a
// terminal the shell gets a fresh pty as its controlling terminal; otherwise
// plain pipes. When the session ends, its whole process group is killed.
type ShellRunner struct {
	// Shell is the shell's path; "" means /bin/sh.
	Shell string
	// Credential is the account the shell runs as (the node's operator
	// account); nil keeps the caller's, which only tests should do.
	Credential *syscall.Credential
	// Dir is the working directory and HOME; "" means /.
	Dir string
	// Env is the environment besides TERM; nil means a minimal one (PATH,
	// HOME, USER, LOGNAME, SHELL, LANG). The caller's environment is never
	// passed on.
	Env []string
}

// waitDelay bounds how long Run waits for the outputs of a command whose
// process has exited (or been killed) but whose pipes are still held open.
const waitDelay = 2 * time.Second

// Run implements Runner.
func (r ShellRunner) Run(ctx context.Context, c *Command) (int, error) {
	shell := r.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	dir := r.Dir
	if dir == "" {
		dir = "/"
	}
	args := []string{"-c", c.Line}
	if c.Line == "" {
		args = []string{"-l"}
	}
	cmd := exec.CommandContext(ctx, shell, args...)
	cmd.Dir = dir
	cmd.Env = r.Env
	if cmd.Env == nil {
		cmd.Env = []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=" + dir, "USER=moat-ops", "LOGNAME=moat-ops", "SHELL=" + shell, "LANG=C.UTF-8",
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: r.Credential}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = waitDelay
	if c.Term != nil {
		return runTerminal(ctx, cmd, c)
	}
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, fmt.Errorf("stdin pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", shell, err)
	}
	// Not waited for: it ends when the session closes its input (after Run
	// returns) or when the command's stdin is closed below.
	go func() {
		_, _ = io.Copy(stdin, c.Stdin)
		_ = stdin.Close()
	}()
	err = cmd.Wait()
	_ = killGroup(cmd)
	return exitStatus(cmd, err)
}

// runTerminal runs cmd on a new pty of c.Term's size and copies between the
// pty and c's streams.
func runTerminal(ctx context.Context, cmd *exec.Cmd, c *Command) (int, error) {
	master, slave, err := openPTY()
	if err != nil {
		return 0, err
	}
	defer master.Close()
	if err := setWindowSize(master, c.Term.WindowSize); err != nil {
		_ = slave.Close()
		return 0, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setctty = true // fd 0 becomes the controlling terminal
	cmd.Env = append(cmd.Env, "TERM="+c.Term.Name)
	err = cmd.Start()
	_ = slave.Close()
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", cmd.Path, err)
	}

	done := make(chan struct{})
	outDone := make(chan struct{})
	go func() { // the terminal's output; EIO once every holder of the slave is gone
		defer close(outDone)
		_, _ = io.Copy(c.Stdout, master)
	}()
	go func() { // not waited for: ends when the session closes its input
		_, _ = io.Copy(master, c.Stdin)
	}()
	go func() {
		for {
			select {
			case <-done:
				return
			case ws, ok := <-c.Resize:
				if !ok {
					return
				}
				_ = setWindowSize(master, ws)
			}
		}
	}()
	err = cmd.Wait()
	_ = killGroup(cmd)
	close(done)
	select {
	case <-outDone:
	case <-time.After(waitDelay):
		// A process outside the group still holds the terminal: closing
		// the master (deferred) hangs it up and ends the copy.
	case <-ctx.Done():
	}
	_ = master.Close()
	<-outDone
	return exitStatus(cmd, err)
}

// killGroup kills cmd's process group (its session: Setsid made the shell
// the group's leader).
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// exitStatus turns cmd.Wait's result into the status reported to the
// client: the exit code, or 128+signal for a killed process.
func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		return 0, err
	}
	ps := cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

// openPTY opens a new pseudo-terminal pair. The master is non-blocking, so
// closing it ends a pending read (creack/pty's master is blocking).
func openPTY() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return master, os.NewFile(uintptr(sfd), name), nil
}

// setWindowSize sets the pty's size without putting the master back into
// blocking mode (os.File.Fd would).
func setWindowSize(master *os.File, ws WindowSize) error {
	if ws.Cols <= 0 || ws.Rows <= 0 || ws.Cols > 0xffff || ws.Rows > 0xffff {
		return nil
	}
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(ws.Rows), Col: uint16(ws.Cols)})
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	return nil
}
