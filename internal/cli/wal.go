//go:build linux

package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/archive"
)

// Exit codes of moat wal-fetch, PostgreSQL's restore_command. PostgreSQL
// asks it for files that are not in the archive, and takes any non-zero
// status as "not available": during archive recovery that ends recovery
// and promotes the server, which is right for a missing file and wrong for
// any other failure (a corrupt file or an unreachable store would end a
// point-in-time restore early, silently). An exit status above 125 (a
// shell's "command not found") aborts recovery instead, so every failure
// but a missing file exits with exitAbortRecovery. See the PostgreSQL
// documentation of restore_command (Archive Recovery settings) and of
// "Recovering Using a Continuous Archive Backup".
const (
	exitNotInArchive  = 1
	exitAbortRecovery = 126
)

func walCommands() []*cobra.Command {
	return []*cobra.Command{walPushCmd(), walFetchCmd()}
}

func walPushCmd() *cobra.Command {
	var config, agent string
	c := &cobra.Command{
		Use:   "wal-push (--agent SOCKET | --config FILE) PATH",
		Short: "Archive one WAL file, encrypted (PostgreSQL's archive_command)",
		Long: `Archive one WAL file: encrypt it to the service's public key and store it
with a record authenticated by the service's backup authentication key.

On a Moat node PostgreSQL runs it with --agent: the file goes to the agent
over the node's socket (only the node's OS user may connect), and the agent,
which alone writes the backup store, archives it in the node's service:

  archive_command = 'moat wal-push --agent /var/lib/moat/nodes/ID/archive.sock %p'

Outside an agent, --config names an archive configuration that opens the
store itself (the store and auth_key_file must then be the caller's alone).

It exits 0 once the file is stored. Archiving a file that is already archived
with the same content succeeds; a different content under the same name fails
(PostgreSQL retries, and the operator must look). Any failure exits 1 with a
message on stderr, which PostgreSQL logs, and PostgreSQL retries later.

The configuration file (JSON; unknown fields are errors):

  {"version": 1,
   "store": {"dir": "/var/lib/moat/archive"},
   "region": "eu-west-1", "service": "svc-aaaa", "timeline": 1,
   "public_key": "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n",
   "auth_key_file": "/etc/moat/auth.key"}

For S3, "store": {"s3": {"endpoint", "bucket", "region", "access_key_id",
"secret_access_key_file", "path_style", "insecure"}}.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var err error
			switch {
			case (agent == "") == (config == ""):
				return withHint(errors.New("wal-push: give one of --agent and --config"), "on a Moat node the agent's archive_command uses --agent")
			case agent != "":
				err = archive.PushVia(cmd.Context(), agent, a[0])
			default:
				cfg, lerr := archive.LoadConfig(config)
				if lerr != nil {
					return withHint(lerr, "see the archive config described in moat wal-push --help")
				}
				err = archive.Push(cmd.Context(), cfg, a[0])
			}
			if errors.Is(err, archive.ErrConflict) {
				return withHint(err, "two servers archive to the same service, or the archive was altered; do not delete the archived file without finding out why")
			}
			return err
		},
	}
	c.Flags().StringVar(&agent, "agent", "", "the agent's archive socket for this node")
	c.Flags().StringVar(&config, "config", "", "archive configuration file (JSON), to open the store directly")
	return c
}

func walFetchCmd() *cobra.Command {
	var config, agent string
	c := &cobra.Command{
		Use:   "wal-fetch (--agent SOCKET | --config FILE) NAME PATH",
		Short: "Restore one archived WAL file (PostgreSQL's restore_command)",
		Long: `Restore one archived WAL file: fetch it, check its record with the service's
backup authentication key, decrypt and verify it, then write it to PATH
(atomically: PATH never holds unverified bytes). A file whose record the key
does not authenticate (one planted by anyone holding only the public key) is
refused.

On a Moat node the agent, which holds the keys, does this over the node's
socket during a restore:

  restore_command = 'moat wal-fetch --agent /var/lib/moat/nodes/ID/archive.sock %f %p'

Outside an agent, --config names a configuration with private_key_file and
auth_key_file.

Exit status:
  0    restored
  1    not in the archive (normal: PostgreSQL asks for files that do not
       exist, and ends recovery at the first missing segment)
  126  any other failure: a corrupt, tampered or unauthenticated file, a
       wrong key, an unreachable store or agent, a bad command line.
       PostgreSQL aborts recovery on an exit status above 125 rather than
       ending it early.`,
		Args: func(cmd *cobra.Command, a []string) error {
			if err := cobra.ExactArgs(2)(cmd, a); err != nil {
				return abortRecovery(cmd.ErrOrStderr(), err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			var err error
			switch {
			case (agent == "") == (config == ""):
				return abortRecovery(cmd.ErrOrStderr(), errors.New("give one of --agent and --config"))
			case agent != "":
				err = archive.FetchVia(cmd.Context(), agent, a[0], a[1])
			default:
				cfg, lerr := archive.LoadConfig(config)
				if lerr != nil {
					return abortRecovery(cmd.ErrOrStderr(), lerr)
				}
				err = archive.Fetch(cmd.Context(), cfg, a[0], a[1])
			}
			switch {
			case err == nil:
				return nil
			case errors.Is(err, archive.ErrNotFound):
				fmt.Fprintf(cmd.ErrOrStderr(), "moat: wal-fetch: %s is not in the archive\n", a[0])
				return &silentExit{code: exitNotInArchive}
			default:
				return abortRecovery(cmd.ErrOrStderr(), err)
			}
		},
	}
	c.Flags().StringVar(&agent, "agent", "", "the agent's archive socket for this node")
	c.Flags().StringVar(&config, "config", "", "archive configuration file (JSON) with private_key_file and auth_key_file")
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return abortRecovery(cmd.ErrOrStderr(), err) })
	return c
}

// abortRecovery prints err and ends wal-fetch with exitAbortRecovery.
func abortRecovery(stderr io.Writer, err error) error {
	fmt.Fprintf(stderr, "moat: error: %s\n", oneLine(err.Error()))
	fmt.Fprintf(stderr, "moat: hint: exiting %d so that PostgreSQL aborts recovery instead of ending it here; fix the cause and start the server again\n", exitAbortRecovery)
	return &silentExit{code: exitAbortRecovery}
}
