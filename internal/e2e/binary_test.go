package e2e

import (
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moatdb/moat/internal/asmoat"
)

// The processes a stack starts — its agents, each node's `moat volume
// serve` (every block of a node's data through the XTS engine), the
// `moat wal-push`/`wal-fetch` PostgreSQL runs for every WAL segment, the
// DNS server — run the moat binary of up.Config.MoatBinary. Under -race
// this test binary runs the in-process part (control plane, reconcilers,
// provider, simulator) with the race detector, and the stacks' processes
// run a moat built from cmd/moat without it, once per test process:
// instrumented, those processes cost most of the package's time, and
// their code has its own race-tested unit tests (internal/agent,
// internal/volume, internal/backup). Without -race the stacks run this
// binary as moat (asmoat). See docs/design/0020-test-suite-time.md.

var built struct {
	once sync.Once
	bin  string
	err  error
}

// moatBinary returns the moat binary the stacks run.
func moatBinary(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return asmoat.Binary(t)
	}
	built.once.Do(func() {
		// go test puts its go command first on the PATH of the tests.
		gocmd, err := exec.LookPath("go")
		if err != nil {
			built.err = err
			return
		}
		bin := filepath.Join(runDir, "moat")
		cmd := exec.Command(gocmd, "build", "-o", bin, "github.com/moatdb/moat/cmd/moat")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = &buildError{err, out}
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatalf("build the stacks' moat binary: %v", built.err)
	}
	return built.bin
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }
