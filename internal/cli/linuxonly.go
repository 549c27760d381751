package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// linuxOnly is a stand-in for command use (its first word the command's
// name) that fails, whatever its arguments, saying that it needs Linux.
func linuxOnly(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short + " (Linux only)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withHint(fmt.Errorf("%s needs Linux (network namespaces, nftables and PostgreSQL of the server side)", cmd.CommandPath()),
				"run it on the Linux machine of the server or of moat up")
		},
	}
}
