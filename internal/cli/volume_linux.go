//go:build linux

package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/volume"
)

// volumeReady is the line moat volume serve writes on its standard output
// once the volume's file system is mounted (the agent waits for it).
const volumeReady = "ready"

// volumeCommands returns moat volume, whose serve subcommand is the
// long-lived server of one node's encrypted volume, started by the agent.
func volumeCommands() []*cobra.Command {
	v := &cobra.Command{
		Use:   "volume",
		Short: "A node's encrypted volume (run by the agent)",
	}
	v.AddCommand(volumeServeCmd())
	return []*cobra.Command{v}
}

func volumeServeCmd() *cobra.Command {
	var container, mountpoint, engine string
	var mkfs bool
	c := &cobra.Command{
		Use:   "serve --container FILE --mountpoint DIR",
		Short: "Serve one encrypted volume until it is unmounted (the key on standard input)",
		Long: `Serve one node's encrypted volume: read its 64-byte key from standard input
(a pipe from the agent, then EOF), open the LUKS2 container and mount its ext4
file system at the mountpoint, write "ready" on standard output, and serve it
until the volume is unmounted (moat's agent does that when it wipes the node).
The key stays in this process's memory only. A second server for the same
container is refused. SIGTERM unmounts the volume once nothing uses it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return withHint(errors.New("moat volume serve needs root (loop devices, FUSE, mount)"), "the agent runs it as root")
			}
			key, err := volume.ReadKey(cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("read the volume key: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			out := cmd.OutOrStdout()
			return volume.Serve(ctx, volume.Config{
				Container:  container,
				Key:        key,
				Mountpoint: mountpoint,
				MakeFS:     mkfs,
				Engine:     engine,
				Ready:      func() { fmt.Fprintln(out, volumeReady) },
				Logger:     slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)),
			})
		},
	}
	c.Flags().StringVar(&container, "container", "", "the container file (absolute path)")
	c.Flags().StringVar(&mountpoint, "mountpoint", "", "where to mount the file system (absolute path)")
	c.Flags().StringVar(&engine, "engine", "", "dm-crypt or userspace (default: dm-crypt where device-mapper works)")
	c.Flags().BoolVar(&mkfs, "mkfs", false, "make a new ext4 file system first (a new volume)")
	_ = c.MarkFlagRequired("container")
	_ = c.MarkFlagRequired("mountpoint")
	return c
}
