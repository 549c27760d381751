// Package cli is the `moat` command line: one cobra command tree whose
// groups live one per file (project.go, vpc.go, service.go, ...). It parses
// flags, wires the client or the daemons, calls them and prints; the
// behaviour lives in the packages it calls. cmd/moat imports it, and the
// end-to-end tests, which run commands as a user does (Main).
//
// The tenant's commands (login, project, token, vpc, peering, service,
// backup, audit, explain, ca, ...) build everywhere. The server side (server,
// agent, up, down, wal-push, wal-fetch, and the simulated cloud's sim,
// verify and service psql) is Linux-only, in files built for Linux alone;
// elsewhere unsupported.go puts commands in their place that say so.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// DefaultDataDir is where `moat up` and `moat server` keep their state.
const DefaultDataDir = "/var/lib/moat"

// dataDirUsage is the help of the --data-dir flags of the commands that
// read the simulator.
const dataDirUsage = "the data directory of moat up (default: MOAT_DATA_DIR, else the last moat up's, else " + DefaultDataDir + ")"

// Main runs the moat command with args (without the program name) and
// returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return a.run(ctx, args)
}

// run runs one command line.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	return a.fail(err)
}

// app is one invocation: its streams and its global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// geteuid is os.Geteuid when nil (tests set it).
	geteuid func() int
	// pollInterval is how often --wait asks the server; when 0 the
	// client backs off from 25 ms to 1 s (tests set it).
	pollInterval time.Duration
	// lastUpPath is the file remembering the last moat up's data
	// directory; lastUpFile when "" (tests set it).
	lastUpPath string

	url, token, ca, project string
	tokenFile               string
	warnedToken             bool
	output                  string
}

// euid is the process's effective user ID (os.Geteuid, or a.geteuid).
func (a *app) euid() int {
	if a.geteuid != nil {
		return a.geteuid()
	}
	return os.Geteuid()
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "moat",
		Short: "Moat: PostgreSQL services with the security model of a managed cloud",
		Long: `moat is Moat's single binary: the control plane, and the command line for it.

Connect with --url/--ca (or MOAT_URL, MOAT_CA) and a token in MOAT_TOKEN or
a --token-file, or store them once with "moat login". The token is never
needed in the command's arguments, where other users can see it. Commands on a project's objects use --project
(or MOAT_PROJECT).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if _, ok := valueField(a.output); !ok && a.output != "table" && a.output != "json" {
				return usageErrorf("-o %q is not an output format; use json, table, id or value=FIELD", a.output)
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "API URL, https://HOST:PORT (env MOAT_URL)")
	pf.StringVar(&a.token, "token", "", "API token moat_<id>_<secret>; visible to other users in the process list: prefer MOAT_TOKEN, --token-file or moat login")
	pf.StringVar(&a.tokenFile, "token-file", "", "file holding the API token (instead of MOAT_TOKEN)")
	pf.StringVar(&a.ca, "ca", "", "file with the CA certificate of the API server, its api-ca.pem (env MOAT_CA)")
	pf.StringVar(&a.project, "project", "", "project ID (env MOAT_PROJECT)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: json, table, id (the object's ID alone, for $(...)) or value=FIELD (one JSON field)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{err: err, cmd: cmd.CommandPath()}
	})
	root.AddCommand(
		a.loginCmd(),
		a.projectCmd(),
		a.tokenCmd(),
		a.regionCmd(),
		a.vpcCmd(),
		a.peeringCmd(),
		a.serviceCmd(),
		a.operationCmd(),
		a.quotaCmd(),
		a.supportCmd(),
		a.operatorCmd(),
		a.hostCmd(),
		a.auditCmd(),
		a.consoleCmd(),
		a.caCmd(),
		a.simCmd(),
		a.backupCmd(),
		a.explainCmd(),
		a.verifyCmd(),
		a.opsCmd(),
	)
	root.AddCommand(serverCommands()...)
	root.AddCommand(walCommands()...)
	root.AddCommand(volumeCommands()...)
	for _, c := range root.Commands() {
		groupArgs(c)
	}
	return root
}

// groupArgs makes every command that only groups others (moat vpc, ...)
// refuse an unknown subcommand as a usage error instead of printing help
// and exiting 0.
func groupArgs(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		return
	}
	if cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath()), cmd: c.CommandPath()}
			}
			return nil
		}
		cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
	for _, sub := range cmd.Commands() {
		groupArgs(sub)
	}
}

// usageError is a command line that cannot be run as written (exit 2).
type usageError struct {
	err error
	cmd string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// hintError is an error with what the user should do about it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, hint string) error { return &hintError{err: err, hint: hint} }

// exitError ends the command with a status and no further message (the
// command has already printed what went wrong).
type silentExit struct{ code int }

func (e *silentExit) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// args returns a cobra.PositionalArgs whose errors are usage errors.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{err: err, cmd: cmd.CommandPath()}
		}
		return nil
	}
}

// fail prints err as "moat: error:" and "moat: hint:" lines and returns the
// exit code.
func (a *app) fail(err error) int {
	var se *silentExit
	if errors.As(err, &se) {
		return se.code
	}
	msg, hint, code := describe(err)
	fmt.Fprintf(a.stderr, "moat: error: %s\n", oneLine(msg))
	if hint != "" {
		fmt.Fprintf(a.stderr, "moat: hint: %s\n", oneLine(hint))
	}
	return code
}

// describe turns err into the message, hint and exit code the user sees.
func describe(err error) (msg, hint string, code int) {
	msg, code = err.Error(), exitError
	var (
		ue  *usageError
		he  *hintError
		ce  *client.Error
		de  *domain.Error
		uae x509.UnknownAuthorityError
		cve *tls.CertificateVerificationError
		hne x509.HostnameError
		ne  *net.OpError
	)
	switch {
	case errors.As(err, &ue):
		code = exitUsage
		hint = "see " + strings.TrimSpace(ue.cmd+" --help")
		if ue.cmd == "" {
			hint = "see moat --help"
		}
		if errors.As(err, &he) {
			hint = he.hint // a usage error with its own fix
		}
	case strings.HasPrefix(msg, "unknown command "), strings.HasPrefix(msg, "required flag(s) "):
		code = exitUsage
		hint = "see moat --help"
	case errors.As(err, &he):
		hint = he.hint
	}
	switch {
	case errors.As(err, &ce):
		if hint == "" {
			hint = ce.Hint
		}
		if ce.Code == "unauthenticated" {
			hint = "set MOAT_TOKEN or run moat login"
		}
	case errors.As(err, &de):
		msg = de.Msg
		if de.Field != "" {
			msg = de.Field + ": " + de.Msg
		}
		if hint == "" {
			hint = de.Hint
		}
	case errors.As(err, &uae), errors.As(err, &cve), errors.As(err, &hne):
		if hint == "" {
			hint = "pass the server's api-ca.pem with --ca or MOAT_CA (or run moat login --ca FILE)"
		}
	case errors.As(err, &ne):
		if hint == "" {
			hint = "check the API URL (--url or MOAT_URL) and that the server is running"
		}
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
	}
	return msg, hint, code
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
