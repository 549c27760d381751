package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/ops"
	"github.com/moatdb/moat/internal/ops/asciicast"
)

// opsCmd is operator access to nodes (operator tokens; design 0012): an
// audited SSH session under a short grant, a support psql session while
// the tenant consents, the sessions' list and recordings, revocation.
func (a *app) opsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ops", Short: "Operator access to nodes: audited SSH sessions under short grants (operator)"}
	var f opsFlags
	sshCmd := &cobra.Command{
		Use:   "ssh NODE --reason R [--ttl 15m] [-- COMMAND...]",
		Short: "Open an audited SSH session to a node (a shell, or COMMAND) under a new grant",
		Long: `Open an SSH session to a node under a new grant (at most an hour): the
session key is made in memory for this session, and only its public half
goes to the control plane, which signs a certificate for it. Debian's ssh is
used when installed (the node's host certificate checked against the pinned
host CA), else Go's client. Everything is in the node's project's audit log,
and terminal sessions are recorded (moat ops sessions, moat ops replay).`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.opsSession(cmd, f, argv[0], argv[1:], false)
		},
	}
	f.add(sshCmd)
	var pf opsFlags
	psqlCmd := &cobra.Command{
		Use:   "psql NODE --reason R [--ttl 15m]",
		Short: "Open a read-only SQL session on a node while its project's support grant lasts",
		Long: `Open psql on a node as the temporary role of its project's support grant
(read-only: pg_read_all_data, pg_read_all_stats). Without an active
support grant (moat support grant, by the project's admin) it is refused
and the refusal is in the tenant's audit log. SQL comes from stdin when it
is not a terminal.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.opsSession(cmd, pf, argv[0], []string{domain.OpsPsqlCommand}, true)
		},
	}
	pf.add(psqlCmd)
	var node string
	grants := &cobra.Command{
		Use:   "grants [--node N]",
		Short: "List operator grants",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			gs, err := cl.ListOpsGrants(cmd.Context(), node)
			if err != nil {
				return err
			}
			return a.print(gs)
		},
	}
	grants.Flags().StringVar(&node, "node", "", "only this node's grants")
	var snode string
	sessions := &cobra.Command{
		Use:   "sessions [--node N]",
		Short: "List operator sessions (who, which node, how long, bytes, commands, recordings)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			xs, err := cl.ListOpsSessions(cmd.Context(), snode)
			if err != nil {
				return err
			}
			return a.print(xs)
		},
	}
	sessions.Flags().StringVar(&snode, "node", "", "only this node's sessions")
	var (
		channel int
		speed   float64
		raw     bool
	)
	replay := &cobra.Command{
		Use:   "replay SESSION [--channel N] [--speed X | --raw]",
		Short: "Replay a terminal session's recording (or print it, asciicast v2, with --raw)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			rec, err := cl.GetOpsRecording(cmd.Context(), argv[0], channel)
			if err != nil {
				return withHint(err, "moat ops sessions shows which sessions have recordings (commands without a terminal are audited, not recorded)")
			}
			if raw {
				_, err := io.WriteString(a.stdout, rec.Cast)
				return err
			}
			return asciicast.Replay(cmd.Context(), a.stdout, strings.NewReader(rec.Cast), asciicast.ReplayOptions{Speed: speed, MaxIdle: 2 * time.Second})
		},
	}
	replay.Flags().IntVar(&channel, "channel", 1, "the session's recorded channel, from 1")
	replay.Flags().Float64Var(&speed, "speed", 1, "play this many times faster")
	replay.Flags().BoolVar(&raw, "raw", false, "print the asciicast v2 file instead of playing it")
	revoke := &cobra.Command{
		Use:   "revoke GRANT",
		Short: "Revoke a grant: its live sessions end at once",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			g, err := cl.RevokeOpsGrant(cmd.Context(), argv[0])
			if err != nil {
				return err
			}
			return a.print(g)
		},
	}
	cmd.AddCommand(sshCmd, psqlCmd, grants, sessions, replay, revoke)
	return cmd
}

// opsFlags are a session's flags.
type opsFlags struct {
	reason   string
	ttl      string
	goClient bool
}

func (f *opsFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.reason, "reason", "", `why, for the audit log the tenant sees (e.g. "INC-123: replica lag")`)
	c.Flags().StringVar(&f.ttl, "ttl", "15m", "the grant's lifetime, at most 1h")
	c.Flags().BoolVar(&f.goClient, "go-client", false, "use Go's SSH client even when ssh is installed")
	c.MarkFlagRequired("reason")
}

// opsSession asks for a grant and runs the session; its exit status is the
// remote command's.
func (a *app) opsSession(cmd *cobra.Command, f opsFlags, node string, command []string, psql bool) error {
	cl, _, err := a.client()
	if err != nil {
		return err
	}
	key, err := ops.NewKey()
	if err != nil {
		return err
	}
	issued, err := cl.CreateOpsGrant(cmd.Context(), apitype.OpsGrantCreate{NodeID: node, Reason: f.reason, TTL: f.ttl, PublicKey: key.AuthorizedKey(), Psql: psql})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "moat: grant %s to %s until %s (moat ops revoke %s ends it)\n", issued.Grant.ID, node, issued.Grant.ExpiresAt.Local().Format(time.TimeOnly), issued.Grant.ID)
	cert, hostCA, err := parseIssued(issued)
	if err != nil {
		return err
	}
	oc, err := ops.NewClient(key, cert, hostCA, node)
	if err != nil {
		return err
	}
	tty := isTerminal(a.stdin)
	var code int
	if sshPath, lerr := exec.LookPath("ssh"); lerr == nil && !f.goClient {
		code, err = a.runOpenSSH(cmd, oc, sshPath, issued.Endpoint, command, psql && tty)
	} else {
		code, err = a.runGoSSH(cmd, oc, issued.Endpoint, command)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &silentExit{code: code}
	}
	return nil
}

func parseIssued(in apitype.OpsGrantIssued) (*ssh.Certificate, ssh.PublicKey, error) {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.Certificate))
	if err != nil {
		return nil, nil, fmt.Errorf("the control plane's certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, nil, errors.New("the control plane's certificate is not a certificate")
	}
	hostCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.HostCA))
	if err != nil {
		return nil, nil, fmt.Errorf("the control plane's host CA: %w", err)
	}
	return cert, hostCA, nil
}

// runOpenSSH runs Debian's ssh with the session's files (removed after).
func (a *app) runOpenSSH(cmd *cobra.Command, oc *ops.Client, sshPath, endpoint string, command []string, forceTTY bool) (int, error) {
	files, err := oc.WriteOpenSSH("")
	if err != nil {
		return 0, err
	}
	defer files.Remove()
	argv, err := files.Args(endpoint, command...)
	if err != nil {
		return 0, err
	}
	if forceTTY {
		argv = append([]string{"-t"}, argv...)
	}
	c := exec.CommandContext(cmd.Context(), sshPath, argv...)
	c.Stdin, c.Stdout, c.Stderr = a.stdin, a.stdout, a.stderr
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("ssh: %w", err)
	}
	return 0, nil
}

// runGoSSH runs the session with Go's client: the command, or a shell.
func (a *app) runGoSSH(cmd *cobra.Command, oc *ops.Client, endpoint string, command []string) (int, error) {
	sc, err := oc.Dial(cmd.Context(), endpoint)
	if err != nil {
		return 0, err
	}
	defer sc.Close()
	sess, err := sc.NewSession()
	if err != nil {
		return 0, fmt.Errorf("ssh session: %w", err)
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = a.stdin, a.stdout, a.stderr
	if len(command) > 0 {
		err = sess.Run(strings.Join(command, " "))
	} else {
		if err = sess.Shell(); err == nil {
			err = sess.Wait()
		}
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), nil
	}
	var em *ssh.ExitMissingError
	if errors.As(err, &em) {
		return 255, nil // the session was cut (revoked, expired)
	}
	if err != nil {
		return 0, fmt.Errorf("ssh session: %w", err)
	}
	return 0, nil
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// opsTable prints the operator-access types as tables.
func opsTable(w *tabwriter.Writer, v any) bool {
	switch v := v.(type) {
	case []apitype.OpsGrant:
		row(w, "ID", "OPERATOR", "NODE", "PROJECT", "STATE", "EXPIRES", "REASON")
		for _, g := range v {
			row(w, g.ID, g.Operator, g.NodeID, g.ProjectID, g.State, ts(g.ExpiresAt), g.Reason)
		}
	case apitype.OpsGrant:
		return opsTable(w, []apitype.OpsGrant{v})
	case []apitype.OpsSession:
		row(w, "ID", "GRANT", "NODE", "OPERATOR", "STATE", "OPENED", "DURATION", "BYTES IN/OUT", "COMMANDS", "RECORDINGS", "ENDED")
		for _, s := range v {
			row(w, s.ID, s.GrantID, s.NodeID, s.Operator, s.State, ts(s.OpenedAt), (time.Duration(s.DurationMS) * time.Millisecond).String(),
				strconv.FormatInt(s.BytesIn, 10)+"/"+strconv.FormatInt(s.BytesOut, 10), strconv.Itoa(s.Commands), strconv.Itoa(s.Recordings), dash(s.CloseReason))
		}
	case []apitype.SupportGrant:
		row(w, "ID", "STATE", "EXPIRES", "GRANTED BY", "PRIVILEGES", "REASON")
		for _, g := range v {
			row(w, g.ID, g.State, ts(g.ExpiresAt), g.GrantedBy, strings.Join(g.Privileges, ","), g.Reason)
		}
	case apitype.SupportGrant:
		return opsTable(w, []apitype.SupportGrant{v})
	default:
		return false
	}
	return true
}
