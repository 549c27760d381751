//go:build !linux

package cli

import (
	"context"
	"io"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/domain"
)

// The server side of moat runs only on Linux: it is network namespaces,
// nftables and PostgreSQL run as their own user. Elsewhere its commands
// stay in the tree, so that help lists them and scripts get a clear error,
// and the tenant's commands (project, vpc, service, backup, explain, ...)
// work as on Linux. (tailscale's util/linuxfw/linuxfw_unsupported.go is
// the model.)

// serverCommands returns stand-ins for the daemon commands.
func serverCommands() []*cobra.Command {
	return []*cobra.Command{
		linuxOnly("server", "Run the control plane"),
		linuxOnly("agent", "Run the host agent"),
		linuxOnly("up", "Start a whole local deployment on this machine"),
		linuxOnly("down", "Stop the moat up of a data directory"),
	}
}

// walCommands returns stand-ins for PostgreSQL's archive and restore
// commands, which run on the server's nodes.
func walCommands() []*cobra.Command {
	return []*cobra.Command{
		linuxOnly("wal-push", "Archive a WAL file (PostgreSQL's archive_command)"),
		linuxOnly("wal-fetch", "Restore a WAL file (PostgreSQL's restore_command)"),
	}
}

// volumeCommands returns a stand-in for moat volume, which serves a
// node's encrypted volume on the agent's host.
func volumeCommands() []*cobra.Command {
	return []*cobra.Command{linuxOnly("volume", "A node's encrypted volume (run by the agent)")}
}

func (a *app) simCmd() *cobra.Command {
	return linuxOnly("sim", "The simulated customer cloud of moat up")
}

func (a *app) verifyCmd() *cobra.Command {
	return linuxOnly("verify SVC", "Probe a service from every simulated host and check that explain agrees")
}

func (a *app) servicePsqlCmd() *cobra.Command {
	return linuxOnly("psql SVC", "Run psql on a service from a simulated host")
}

// explainSource judges the address from by itself: the simulated cloud
// exists only on Linux.
func (a *app) explainSource(_ context.Context, _, from string) (domain.Source, string, error) {
	addr, err := netip.ParseAddr(from)
	if err != nil {
		return domain.Source{}, "", usageErrorf("--from %q is not an IP address (simulated hosts are looked up by name on Linux only)", from)
	}
	return domain.Source{Addr: addr}, "the simulated cloud runs only on Linux: the source is judged from its address and the API alone", nil
}

// simTable reports that v is none of moat sim's objects: there are none.
func simTable(io.Writer, any) bool { return false }
