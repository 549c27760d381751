package e2e

import (
	"testing"

	"github.com/moatdb/moat/internal/asmoat"
)

// moatBinary returns the moat binary the stacks' processes run — their
// agents, each node's `moat volume serve`, the `moat wal-push`/`wal-fetch`
// PostgreSQL runs, the DNS server, the README's moat commands: under
// -race a moat built without the race detector (the in-process control
// plane, reconcilers, provider and simulator keep it), else this test
// binary (asmoat.Process; design 0020).
func moatBinary(t testing.TB) string {
	t.Helper()
	bin, err := asmoat.Process()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
