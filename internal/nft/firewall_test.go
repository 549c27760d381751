package nft

import (
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
)

// TestCloseWaits checks that a socket close a Firewall released is
// tracked: Close returns only once it has, and no goroutine is left.
func TestCloseWaits(t *testing.T) {
	testenv.CheckGoroutines(t)
	fw := New(-1)
	unblock := make(chan struct{})
	closed := false
	fw.t.socks.release(func() error {
		<-unblock
		closed = true
		return nil
	})
	done := make(chan struct{})
	go func() {
		fw.Close()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Close returned before the socket close did")
	case <-time.After(50 * time.Millisecond):
	}
	close(unblock)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the socket close")
	}
	if !closed {
		t.Error("Close returned, the socket close did not run")
	}
}
