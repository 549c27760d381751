package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/moatdb/moat/internal/asmoat"
)

// stacksAtOnce is how many tests of this package run at once when -parallel
// is not given (its default, GOMAXPROCS, is 2 on CI's machine): a test
// spends most of its time waiting on real processes — PostgreSQL,
// agents, psql in namespaces — not on the CPU, so a few stacks share two
// cores well. Three, not four: with the failover timings of design 0014
// (then heartbeat 1 s, host timeout 4 s, lease 3 s; now 0.5 s, 3 s,
// 2.5 s) a starved agent or control plane fences primaries, and four
// stacks on a loaded machine did (design 0020). See doc.go for which tests run in parallel.
const stacksAtOnce = 3

// TestMain runs this test binary as moat when PostgreSQL's
// archive_command or the stacks' agents call it so (without -race; see
// moatBinary), and runs the tests stacksAtOnce at a time unless -parallel
// says otherwise. MOAT_CONFIG names a file that never exists, for the
// whole run: the moat commands the tests run in-process read no user's
// config and need no t.Setenv (which parallel tests may not call).
func TestMain(m *testing.M) {
	asmoat.RunIfCalledMoat()
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", strconv.Itoa(stacksAtOnce))
	}
	dir, err := os.MkdirTemp("", "moat-e2e-run-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Setenv("MOAT_CONFIG", filepath.Join(dir, "no-cli-config.json"))
	code := m.Run()
	os.RemoveAll(dir)
	asmoat.RemoveBuilt()
	os.Exit(code)
}
