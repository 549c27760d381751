package ops

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
)

// The default runner runs as the operator account, with a clean
// environment, on a terminal of the requested size when asked. Not
// parallel: it sets an environment variable that must not reach the shell.
func TestShellRunnerAsOperatorAccount(t *testing.T) {
	testenv.MustHaveRoot(t)
	r := ShellRunner{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	t.Setenv("MOAT_SECRET_IN_AGENT_ENV", "leak")

	var out, errb bytes.Buffer
	status, err := r.Run(testContext(t), &Command{Line: `id -u; id -g; echo "[$MOAT_SECRET_IN_AGENT_ENV]"; echo oops >&2; exit 5`, Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	if err != nil || status != 5 || out.String() != "65534\n65534\n[]\n" || errb.String() != "oops\n" {
		t.Errorf("Run = %d, %v, stdout %q, stderr %q", status, err, out.String(), errb.String())
	}

	out.Reset()
	status, err = r.Run(testContext(t), &Command{Line: "id -u; tty; stty size", Term: &Terminal{Name: "xterm", WindowSize: WindowSize{Cols: 100, Rows: 30}}, Stdin: strings.NewReader(""), Stdout: &out})
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(out.String(), "\r", "")), "\n")
	if err != nil || status != 0 || len(lines) != 3 || lines[0] != "65534" || !strings.HasPrefix(lines[1], "/dev/pts/") || lines[2] != "30 100" {
		t.Errorf("Run on a terminal = %d, %v, %q", status, err, out.String())
	}
}

// Cancelling Run (a revocation) kills everything the command started.
func TestShellRunnerKillsProcessGroup(t *testing.T) {
	t.Parallel()
	for _, term := range []*Terminal{nil, {Name: "xterm", WindowSize: WindowSize{Cols: 80, Rows: 24}}} {
		ctx, cancel := context.WithCancel(testContext(t))
		pr, pw := io.Pipe()
		stdin, _ := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := ShellRunner{}.Run(ctx, &Command{Line: "sleep 30 & echo $!; wait", Term: term, Stdin: stdin, Stdout: pw, Stderr: io.Discard})
			pw.Close()
			done <- err
		}()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, pr)
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run (terminal %v) = %v", term != nil, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Run (terminal %v) returned %v after cancel", term != nil, d)
		}
		waitGone(t, pid)
	}
}
