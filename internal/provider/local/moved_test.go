package local_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/provider/local"
	"github.com/moatdb/moat/internal/testenv"
)

// TestMovedClose: a moved address answers with where the service went
// until Close, which ends the responder and its open connections at once
// and leaves no goroutine; HoldAddress fails after it.
func TestMovedClose(t *testing.T) {
	testenv.CheckGoroutines(t)
	p, c := newProvider(t)
	ctx := t.Context()
	t.Cleanup(func() { p.Close() })
	// The client first: its address is not the one the node leaves.
	if err := c.EnsureInternet(ctx); err != nil {
		t.Fatal(err)
	}
	client, err := c.AddHost(ctx, "client", localcloud.Internet(localcloud.PublicPool))
	if err != nil {
		t.Fatal(err)
	}
	pl, err := p.PlaceNode(ctx, provider.NodeRequest{NodeID: "node-moved", Host: "local"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveNode(ctx, "node-moved"); err != nil {
		t.Fatal(err)
	}
	const msg = "service svc-a moved to 10.0.0.10"
	if err := p.HoldAddress(ctx, pl.Address, "", msg, nil); err != nil {
		t.Fatalf("HoldAddress(%v): %v", pl.Address, err)
	}
	dst := netip.AddrPortFrom(pl.Address, 5432).String()
	dial := func() (net.Conn, error) {
		var conn net.Conn
		err := c.Do(client.NS, func() (err error) {
			conn, err = net.DialTimeout("tcp", dst, 2*time.Second)
			return err
		})
		return conn, err
	}

	// A startup message (protocol 3.0, no parameters) gets the error. The
	// new namespace's link may take a moment to carry packets.
	var conn net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = dial(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	got, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.Contains(string(got), msg) {
		t.Errorf("moved address answered %q, want an error with %q", got, msg)
	}

	// A client that sends nothing is cut by Close, not by its 5 s deadline.
	idle, err := dial()
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond) // let the responder accept it
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v, want the open connection cut at once", d)
	}
	idle.SetDeadline(time.Now().Add(2 * time.Second))
	var ne net.Error
	if n, err := idle.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("idle connection after Close: read %d, %v; want it closed", n, err)
	}
	if _, err := dial(); err == nil {
		t.Errorf("dial %s after Close succeeded", dst)
	}
	if err := p.HoldAddress(ctx, pl.Address, "", msg, nil); !errors.Is(err, local.ErrClosed) {
		t.Errorf("HoldAddress after Close = %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
