package ops

import (
	"context"
	"io"
)

// Runner runs what an operator's session asks for: a command, or an
// interactive shell on a terminal. The agent provides one that runs inside
// the node (its namespace, as the dedicated operator account); ShellRunner is
// the default.
type Runner interface {
	// Run runs cmd until it exits or ctx is done (the session was revoked,
	// its certificate expired or the client went away), when everything it
	// started must be killed. It returns the exit status to report.
	Run(ctx context.Context, cmd *Command) (status int, err error)
}

// Command is one session's request.
type Command struct {
	// Line is the command line of an exec request; "" asks for a shell.
	Line string
	// Term is the terminal the client asked for (pty-req), or nil: the
	// command then gets plain pipes.
	Term *Terminal
	// Resize delivers the terminal's size changes (window-change).
	Resize <-chan WindowSize
	// Stdin is what the client sends; Stdout and Stderr go back to it. On a
	// terminal both outputs go to Stdout.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Terminal is a pty request: the TERM name and the initial size.
type Terminal struct {
	Name string
	WindowSize
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Cols, Rows int
}
