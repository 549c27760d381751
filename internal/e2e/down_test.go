package e2e

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/cli"
	"github.com/moatdb/moat/internal/up"
)

// namespaces returns the namespaces of the local cloud with prefix.
func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	c, err := up.Cloud(prefix)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// moatCmd runs the moat command line in-process.
func moatCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestDownOnlyItsOwnStack runs two stacks and checks that moat down of an
// empty data directory removes nothing, and that moat down of one stack's
// data directory leaves the other's namespaces alone.
func TestDownOnlyItsOwnStack(t *testing.T) {
	t.Parallel()
	a := start(t, "", "")
	b := start(t, "", "")
	if len(namespaces(t, a.prefix)) == 0 || len(namespaces(t, b.prefix)) == 0 {
		t.Fatalf("stacks without namespaces: %s* %v, %s* %v", a.prefix, namespaces(t, a.prefix), b.prefix, namespaces(t, b.prefix))
	}
	nb := namespaces(t, b.prefix)

	empty, err := os.MkdirTemp("/tmp", "moat-e2e-empty-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(empty)
	code, out, stderr := moatCmd("down", "--data-dir", empty)
	if code != 0 || !strings.Contains(out, "nothing removed") {
		t.Errorf("moat down of an empty data directory = %d, %q, %q; want 0 and nothing removed", code, out, stderr)
	}
	if len(namespaces(t, a.prefix)) == 0 || len(namespaces(t, b.prefix)) != len(nb) {
		t.Fatalf("moat down of an empty data directory removed namespaces")
	}

	a.stop()
	code, out, stderr = moatCmd("down", "--data-dir", a.dir)
	if code != 0 || !strings.Contains(out, "removed the namespaces (and their firewalls) of "+a.prefix+"*") {
		t.Fatalf("moat down --data-dir A = %d, %q, %q", code, out, stderr)
	}
	if ns := namespaces(t, a.prefix); len(ns) != 0 {
		t.Errorf("after moat down of A, A's namespaces remain: %v", ns)
	}
	if ns := namespaces(t, b.prefix); len(ns) != len(nb) {
		t.Errorf("moat down of A changed B's namespaces: %v, was %v", ns, nb)
	}
	// B still serves: its client reaches its control plane.
	if _, err := b.op.ListProjects(b.ctx()); err != nil {
		t.Errorf("stack B after A's down: %v", err)
	}
	if _, err := up.ReadRecord(a.dir); err == nil {
		t.Errorf("A's data directory still records its stack after moat down")
	}
}
