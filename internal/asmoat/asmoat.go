// Package asmoat lets a test binary stand in for the moat command. The
// agent installs the binary it is given (agent.Config.MoatBinary) as
// <data>/bin/moat, and PostgreSQL runs it as archive_command and
// restore_command; a test binary that calls Main from its TestMain then
// runs as moat when called by that name, and runs its tests otherwise.
// Under -race, Process gives a moat built without the race detector for
// the processes a test starts (a stack's agents, `moat up`).
// Imported by tests only (internal/agent, internal/e2e, internal/terraform,
// bench/nodes).
package asmoat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moatdb/moat/internal/cli"
)

// Main is a TestMain: the moat command when the binary is called moat,
// m's tests otherwise; then it removes the binary Process built.
func Main(m *testing.M) {
	RunIfCalledMoat()
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// RunIfCalledMoat runs the moat command and exits when the binary is
// called moat, and returns otherwise: the start of a TestMain that does
// more than Main (which then calls RemoveBuilt at its end).
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

// built is the moat binary Process built, once per test process.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
}

// Process returns the moat binary for the processes a test starts. Without
// -race it is the running test binary (see Main). Under -race it is moat
// built from cmd/moat without the race detector, once per test process
// (its packages are in the build cache after go vet; RemoveBuilt removes
// it): instrumented, the processes of a stack — agents, a volume server
// per node moving every block through the XTS engine, wal-push and
// wal-fetch per WAL segment — cost most of a test's time, and their code
// has its own race-tested tests. The test process's own code keeps the
// race detector. Design 0020.
func Process() (string, error) {
	if !raceEnabled {
		return os.Executable()
	}
	built.once.Do(func() {
		// go test puts its go command first on the PATH of the tests.
		gocmd, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("build moat without -race: %w", err)
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "moat-asmoat-"); built.err != nil {
			return
		}
		bin := filepath.Join(built.dir, "moat")
		if out, err := exec.Command(gocmd, "build", "-o", bin, "github.com/moatdb/moat/cmd/moat").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build moat without -race: %w\n%s", err, out)
			return
		}
		built.bin = bin
	})
	return built.bin, built.err
}

// RemoveBuilt removes the binary Process built, if any.
func RemoveBuilt() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
