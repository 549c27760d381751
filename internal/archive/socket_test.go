package archive

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestServerRefuses: what a node may not ask of its socket is refused
// with a reason, and the store is left alone: a file over the limit, an
// unknown request, a fetch with no restore under way, a push to a node
// that does not archive, a name that is not a plain WAL file name.
func TestServerRefuses(t *testing.T) {
	t.Parallel()
	push, _, st := testConfig(t)
	var archiving atomic.Pointer[Config]
	srv := &Server{Archive: archiving.Load, Restore: func() *Config { return nil },
		PeerUID: os.Getuid(), Logger: slog.New(slog.DiscardHandler)}
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := Listen(sock, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("the socket file outlived its listener")
		}
	}()
	ask := func(req string) sockReply {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(req + "\n"))
		c.(*net.UnixConn).CloseWrite() // no body follows
		line, err := bufio.NewReader(c).ReadSlice('\n')
		if err != nil {
			t.Fatalf("%s: %v", req, err)
		}
		var rep sockReply
		if err := json.Unmarshal(line, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	for req, want := range map[string]string{
		`{"op":"push","name":"000000010000000000000001","size":1}`: "does not archive",
		`{"op":"fetch","name":"000000010000000000000001"}`:         "no restore",
		`{"op":"delete","name":"000000010000000000000001"}`:        "unknown request",
		`not json`: "decode request",
	} {
		if rep := ask(req); rep.OK || !strings.Contains(rep.Message, want) {
			t.Errorf("%s = %+v, want refused: %s", req, rep, want)
		}
	}
	archiving.Store(push)
	for req, want := range map[string]string{
		`{"op":"push","name":"000000010000000000000001","size":67108865}`: "at most",
		`{"op":"push","name":"../../x","size":0}`:                         "plain file name",
		`{"op":"push","name":"000000010000000000000001","size":10}`:       "read",
	} {
		if rep := ask(req); rep.OK || !strings.Contains(rep.Message, want) {
			t.Errorf("%s = %+v, want refused: %s", req, rep, want)
		}
	}
	if objs, err := st.List(context.Background(), ""); err != nil || len(objs) != 0 {
		t.Errorf("the store holds %v, %v after refused requests", objs, err)
	}
	if err := PushVia(context.Background(), sock, filepath.Join(t.TempDir(), "missing")); err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("PushVia(a missing file) = %v", err)
	}
}

// TestPushViaRefusedMidBody: an agent that refuses a push and closes
// before reading its body (another user's socket) makes the client's
// write fail; the client reports the agent's reason, not the broken
// pipe.
func TestPushViaRefusedMidBody(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		bufio.NewReader(c).ReadSlice('\n')
		c.Write([]byte(`{"code":"failed","message":"only the node's user may use its archive socket"}` + "\n"))
		c.Close()
	}()
	wal := filepath.Join(dir, "000000010000000000000001")
	if err := os.WriteFile(wal, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	err = PushVia(context.Background(), sock, wal)
	if err == nil || !strings.Contains(err.Error(), "only the node's user") {
		t.Errorf("PushVia to an agent that refuses mid-body = %v, want its reason", err)
	}
}
