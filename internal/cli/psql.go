//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/sim"
)

// defaultPsqlHost is the simulated internet host `moat up` creates and
// `moat service psql` runs from.
const defaultPsqlHost = "laptop"

// conninfo renders libpq keyword/value pairs (kv is keyword, value,
// keyword, value, ...) as a connection string, each value quoted when
// libpq needs it.
func conninfo(kv ...string) (string, error) {
	if len(kv)%2 != 0 {
		return "", errors.New("conninfo: odd number of keywords and values")
	}
	parts := make([]string, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		v, err := conninfoValue(kv[i+1])
		if err != nil {
			return "", fmt.Errorf("%s: %w", kv[i], err)
		}
		parts = append(parts, kv[i]+"="+v)
	}
	return strings.Join(parts, " "), nil
}

// conninfoValue writes v the way libpq's connection string parser reads it
// back unchanged: as is when it is made only of characters that cannot end
// or escape a value, otherwise in single quotes with ' and \ escaped by a
// backslash (also the empty value). A NUL byte cannot be passed at all.
func conninfoValue(v string) (string, error) {
	if strings.IndexByte(v, 0) >= 0 {
		return "", errors.New("value contains a NUL byte")
	}
	if v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+,") == "" {
		return v, nil
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'", nil
}

// passfileLine is a ~/.pgpass line giving password for any connection; ':'
// and '\' in it are escaped as libpq wants.
func passfileLine(password string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:*:" + r.Replace(password) + "\n"
}

// dashArgs is cobra.PositionalArgs for "NAME [-- ARGS...]" (min 0) or
// "NAME -- CMD ARGS..." (min 1): one argument, then at least min after "--".
func dashArgs(what string, min int) cobra.PositionalArgs {
	return args(func(cmd *cobra.Command, a []string) error {
		dash := cmd.ArgsLenAtDash()
		switch {
		case len(a) == 0 || dash == 0:
			return fmt.Errorf("missing %s", what)
		case dash == -1 && len(a) > 1:
			return fmt.Errorf("want one %s, then the command's arguments after --", what)
		case dash > 1:
			return fmt.Errorf("want one %s before --, got %d", what, dash)
		case len(a)-1 < min:
			return errors.New("no command after --")
		}
		return nil
	})
}

func (a *app) servicePsqlCmd() *cobra.Command {
	var from, dataDir string
	var connectTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "psql SVC [--from HOST] [-- PSQL ARGS...]",
		Short: "Run psql on a service from a simulated host, with sslmode=verify-full (moat up, as root)",
		Long: `Run psql on the service from a simulated internet host of moat up ("laptop"
unless --from says otherwise), as the service's admin user, verifying the
server's certificate against the project CA (sslmode=verify-full).

The password is the one moat service create or moat service password reset
saved, or PGPASSWORD when it is set. psql's standard streams and exit code
are passed through. A connection that cannot be made fails after
--connect-timeout, and moat explain's verdict for the host follows psql's
error. Runs on the machine of moat up, as root.`,
		Example: `  moat service psql svc-... -- -c 'select version()'
  moat service psql svc-... --from other -- -At -c 'show ssl'`,
		Args: dashArgs("SVC", 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, psqlArgs := args[0], args[1:]
			if err := a.needRoot("moat service psql"); err != nil {
				return err
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			s, err := cl.GetService(cmd.Context(), p, svc)
			if err != nil {
				return err
			}
			c := s.Connection
			if c == nil || c.Address == "" {
				return withHint(fmt.Errorf("service %s has no address yet (it is %s)", svc, s.State), "wait until it is running: moat service get "+svc)
			}
			password := a.getenv("PGPASSWORD")
			if password == "" {
				cred, ok, err := a.savedPassword(svc)
				if err != nil {
					return err
				}
				if !ok {
					return withHint(fmt.Errorf("no saved password for service %s, and PGPASSWORD is not set", svc), "reset it with: moat service password reset "+svc)
				}
				password = cred.Password
			}
			ca, err := cl.GetProjectCA(cmd.Context(), p)
			if err != nil {
				return err
			}
			// Both files are read inside the host's namespace, which shares
			// this filesystem. The password goes in a passfile (mode 0600),
			// never in an argument or the environment of the command.
			caFile, err := tempFile("moat-ca-*.pem", ca.PEM, 0o644)
			if err != nil {
				return fmt.Errorf("write the project CA: %w", err)
			}
			defer os.Remove(caFile)
			passFile, err := tempFile("moat-pgpass-*", passfileLine(password), 0o600)
			if err != nil {
				return fmt.Errorf("write the password file: %w", err)
			}
			defer os.Remove(passFile)
			// libpq counts whole seconds, and at least 2.
			secs := max(2, int(connectTimeout.Round(time.Second)/time.Second))
			dsn, err := conninfo("host", c.Host, "hostaddr", c.Address, "port", strconv.Itoa(c.Port),
				"dbname", c.Database, "user", c.User, "sslmode", "verify-full", "sslrootcert", caFile, "passfile", passFile,
				"connect_timeout", strconv.Itoa(secs))
			if err != nil {
				return fmt.Errorf("connection string: %w", err)
			}
			sm, _, err := openSim(a.getenv, a.resolveDataDir(dataDir))
			if err != nil {
				return err
			}
			err = a.execOn(cmd.Context(), sm, from, append([]string{"psql", dsn}, psqlArgs...))
			var se *silentExit
			if errors.As(err, &se) && se.code == psqlConnectFailed {
				a.explainFailure(cmd.Context(), sm, cl, p, svc, from)
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&connectTimeout, "connect-timeout", 5*time.Second, "give up connecting after this long (whole seconds, at least 2)")
	cmd.Flags().StringVar(&from, "from", defaultPsqlHost, "the simulated host to run psql on (moat sim host list)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", dataDirUsage)
	return cmd
}

// psqlConnectFailed is psql's exit code when it could not connect.
const psqlConnectFailed = 2

// explainFailure tells the user why a connection from sim host `from` to
// service svc failed, as moat explain would: the first thing on the path
// that refuses it, or that the model allows it (the cause is elsewhere).
// It only adds to psql's error, so its own failures are notes.
func (a *app) explainFailure(ctx context.Context, sm *sim.Sim, cl *client.Client, p, svc, from string) {
	h, err := sm.Host(ctx, from)
	if err != nil {
		return
	}
	in, err := cl.ExplainInput(ctx, p, svc)
	if err == nil {
		in.Source, err = sm.Source(ctx, h.Addr)
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "moat: note: could not explain the failure: %v\n", err)
		return
	}
	v := domain.Explain(in)
	fmt.Fprintf(a.stderr, "moat: explain --from %s (%s): %s\n", from, h.Addr, verdictLine(v))
}

// tempFile writes data to a new temporary file of mode perm and returns
// its name.
func tempFile(pattern, data string, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// execOn runs argv on sim host `host` with the command's streams, and ends
// the moat command with the exit code of argv. An interrupt reaches argv
// from the terminal, which decides what it means (psql cancels the query):
// argv is not killed when ctx ends.
func (a *app) execOn(ctx context.Context, sm *sim.Sim, host string, argv []string) error {
	code, err := sm.Exec(context.WithoutCancel(ctx), host, argv, a.stdin, a.stdout, a.stderr)
	if errors.Is(err, sim.ErrNotFound) {
		return withHint(err, "moat sim host list shows the hosts; moat sim host create "+host+" --internet makes one")
	}
	if err != nil {
		return err
	}
	switch {
	case code < 0:
		return fmt.Errorf("%s on %s was killed by a signal", argv[0], host)
	case code > 0:
		return &silentExit{code: code}
	}
	return nil
}
