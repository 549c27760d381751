// Package asmoat lets a test binary stand in for the moat command. The
// agent installs the binary it is given (agent.Config.MoatBinary) as
// <data>/bin/moat, and PostgreSQL runs it as archive_command and
// restore_command; a test binary that calls Main from its TestMain then
// runs as moat when called by that name, and runs its tests otherwise.
// Imported by tests only (internal/agent, internal/e2e, bench/nodes).
package asmoat

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/moatdb/moat/internal/cli"
)

// Main is a TestMain: the moat command when the binary is called moat,
// m's tests otherwise.
func Main(m *testing.M) {
	RunIfCalledMoat()
	os.Exit(m.Run())
}

// RunIfCalledMoat runs the moat command and exits when the binary is
// called moat, and returns otherwise: the start of a TestMain that does
// more than Main.
func RunIfCalledMoat() {
	if filepath.Base(os.Args[0]) == "moat" {
		os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
}

// Binary returns the running test binary, for agent.Config.MoatBinary
// (or up.Config.MoatBinary).
func Binary(tb testing.TB) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return exe
}
