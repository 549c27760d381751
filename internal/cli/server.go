package cli

import "github.com/spf13/cobra"

// serverCommands returns the daemon commands: server, up, down.
func serverCommands() []*cobra.Command { return nil }
