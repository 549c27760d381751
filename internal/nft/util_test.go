package nft

import (
	"io"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/vishvananda/netns"
)

func stringReader(s string) io.Reader { return strings.NewReader(s) }

// mustHaveNamespaces ends t unless it can create network namespaces: a
// skip locally, a failure under CI=true (testenv).
func mustHaveNamespaces(t *testing.T) {
	t.Helper()
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "ip")
}

// newNS is netnstest.New behind the testenv gate.
func newNS(t *testing.T) *netnstest.NS {
	t.Helper()
	mustHaveNamespaces(t)
	return netnstest.New(t)
}

// newPair is netnstest.NewPair behind the testenv gate.
func newPair(t *testing.T, extra int) *netnstest.Pair {
	t.Helper()
	mustHaveNamespaces(t)
	return netnstest.NewPair(t, extra)
}

// newFirewall returns a Firewall for ns that is closed when t ends (before
// ns, which was created earlier, is deleted).
func newFirewall(t *testing.T, ns netns.NsHandle) *Firewall {
	fw := New(ns)
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return fw
}
