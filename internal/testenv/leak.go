package testenv

import (
	"bytes"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// CheckGoroutines records the goroutines running now and, when tb ends
// (after the cleanups registered later, which run first), fails tb if
// goroutines started since are still running after a grace period. Call it
// first in a test, before the component under test starts; not in parallel
// tests of the same package, whose goroutines it would count.
// (tailscale's tstest/resource.go is the model.)
func CheckGoroutines(tb testing.TB) {
	tb.Helper()
	before := goroutines()
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		var leaked []string
		for {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok && !ignorable(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			tb.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// goroutines returns the stacks of all goroutines by their "goroutine N"
// header.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		head, _, _ := strings.Cut(s, " [")
		m[head] = s
	}
	return m
}

// ignorable reports goroutines that belong to the runtime or the testing
// package, not to the code under test.
func ignorable(stack string) bool {
	for _, s := range []string{
		"testing.(*T).Run",
		"testing.(*M).",
		"testing.tRunner.func",
		"testing.runFuzzing",
		"runtime.goexit\n\tsrc/runtime",
		"os/signal.signal_recv",
		"created by runtime.gc",
		"runtime.ensureSigM",
		"net/http.(*persistConn)", // idle keep-alive connections of shared clients end on their own timer
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
