package archive

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/atomicfile"
)

// Nodes never open the store. The agent serves each node a Unix socket
// (see Listen; only the node's OS user may connect) on which `moat
// wal-push --agent` hands it a WAL file to archive and `moat wal-fetch
// --agent` asks it for one during a restore. The agent archives into the
// node's service's prefix only, with the authentication key it holds
// (nodes never see it), and decrypts restores with a private key that
// never reaches the node's files.
//
// The protocol, one request per connection: a JSON request line, then for
// a push its size bytes; a JSON reply line, then for a fetch that succeeded
// its size bytes of verified plaintext.

// socketTimeout bounds one request on a node's socket.
const socketTimeout = 5 * time.Minute

// maxSocketFile bounds a file sent over a node's socket, either way: the
// agent holds it in memory (a WAL segment is 16 MiB on Moat's nodes).
const maxSocketFile = 64 << 20

type sockRequest struct {
	Op   string `json:"op"` // "push" or "fetch"
	Name string `json:"name"`
	Size int64  `json:"size,omitempty"`
}

type sockReply struct {
	OK      bool   `json:"ok,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Code    string `json:"code,omitempty"` // conflict, not_found, failed
	Message string `json:"message,omitempty"`
}

// Server answers one node's pushes and fetches on its socket.
type Server struct {
	// Archive returns where the node's WAL goes, with the service's
	// authentication key; nil when the node does not archive.
	Archive func() *Config
	// Restore returns the node's restore (the source service, its
	// private and authentication keys); nil when none is under way.
	Restore func() *Config
	// PeerUID is the only user served: the one the node's PostgreSQL
	// runs as (SO_PEERCRED). -1 skips the check (the socket's mode still
	// applies).
	PeerUID int
	Logger  *slog.Logger

	// one serves one request at a time (PostgreSQL's archiver and a
	// recovery ask one at a time): a node makes the agent hold at most
	// one file of its.
	one sync.Mutex
}

// Listen makes a Unix socket at path that only uid (and root) may
// open: mode 0600, owned by uid:gid (uid -1: left to the caller).
// A stale socket at path is replaced.
func Listen(path string, uid, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	// Made 0600 from the start: no moment where others may connect.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	os.Remove(tmp)
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("archive socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("archive socket: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if uid >= 0 {
		if err := os.Chown(tmp, uid, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unlinkListener{Listener: l, path: path}, nil
}

// unlinkListener removes its socket file when closed.
type unlinkListener struct {
	net.Listener
	path string
	once sync.Once
}

func (u *unlinkListener) Close() error {
	err := u.Listener.Close()
	u.once.Do(func() { os.Remove(u.path) })
	return err
}

// Serve answers requests on l until l is closed, then waits for those
// under way and returns nil.
func (s *Server) Serve(l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive socket: %w", err)
		}
		wg.Go(func() {
			defer c.Close()
			s.serve(c)
		})
	}
}

func (s *Server) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(socketTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), socketTimeout)
	defer cancel()
	reply := func(r sockReply, body []byte) {
		b, _ := json.Marshal(r)
		c.Write(append(b, '\n'))
		if body != nil {
			c.Write(body)
		}
	}
	failed := func(code string, err error) {
		s.Logger.Warn("archive request refused", "code", code, "err", err)
		reply(sockReply{Code: code, Message: err.Error()}, nil)
	}
	if s.PeerUID >= 0 {
		uid, err := peerUID(c)
		if err != nil || uid != s.PeerUID {
			failed("failed", fmt.Errorf("peer uid %d (%v): only the node's user may use its archive socket", uid, err))
			return
		}
	}
	s.one.Lock()
	defer s.one.Unlock()
	br := bufio.NewReader(io.LimitReader(c, 4096+maxSocketFile))
	line, err := br.ReadSlice('\n')
	if err != nil {
		failed("failed", fmt.Errorf("read request: %w", err))
		return
	}
	var req sockRequest
	if err := json.Unmarshal(line, &req); err != nil {
		failed("failed", fmt.Errorf("decode request: %w", err))
		return
	}
	switch req.Op {
	case "push":
		cfg := s.Archive()
		if cfg == nil {
			failed("failed", errors.New("push: this node does not archive"))
			return
		}
		if req.Size < 0 || req.Size > maxSocketFile {
			failed("failed", fmt.Errorf("push %s: size %d: at most %d bytes", req.Name, req.Size, maxSocketFile))
			return
		}
		// Grown as it arrives: a size claimed is not memory taken.
		data, err := io.ReadAll(io.LimitReader(br, req.Size))
		if err == nil && int64(len(data)) != req.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			failed("failed", fmt.Errorf("push %s: read: %w", req.Name, err))
			return
		}
		if err := PushData(ctx, cfg, req.Name, data); err != nil {
			code := "failed"
			if errors.Is(err, ErrConflict) {
				code = "conflict"
			}
			failed(code, err)
			return
		}
		reply(sockReply{OK: true}, nil)
	case "fetch":
		cfg := s.Restore()
		if cfg == nil {
			failed("failed", errors.New("fetch: no restore is under way on this node"))
			return
		}
		var buf bytes.Buffer
		if err := FetchTo(ctx, cfg, req.Name, &limitWriter{w: &buf, n: maxSocketFile}); err != nil {
			if errors.Is(err, ErrNotFound) {
				reply(sockReply{Code: "not_found", Message: err.Error()}, nil)
				return
			}
			failed("failed", err)
			return
		}
		reply(sockReply{OK: true, Size: int64(buf.Len())}, buf.Bytes())
	default:
		failed("failed", fmt.Errorf("unknown request %q", req.Op))
	}
}

// limitWriter fails writes past n bytes.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("larger than %d bytes", maxSocketFile)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

// call sends req (and body) to the agent's socket and reads its reply.
func call(ctx context.Context, socket string, req sockRequest, body io.Reader) (sockReply, *bufio.Reader, net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return sockReply{}, nil, nil, fmt.Errorf("reach the agent: %w", err)
	}
	dl := time.Now().Add(socketTimeout)
	if t, ok := ctx.Deadline(); ok && t.Before(dl) {
		dl = t
	}
	c.SetDeadline(dl)
	b, _ := json.Marshal(req)
	_, err = c.Write(append(b, '\n'))
	if err == nil && body != nil {
		_, err = io.Copy(c, body)
	}
	br := bufio.NewReader(c)
	if err != nil {
		// The agent may have refused the request and closed before
		// reading it all: its reply, if it sent one, says why.
		if rep, rerr := readReply(br); rerr == nil && !rep.OK {
			c.Close()
			return rep, nil, nil, replyError(rep)
		}
		c.Close()
		return sockReply{}, nil, nil, fmt.Errorf("send to the agent: %w", err)
	}
	rep, err := readReply(br)
	if err != nil {
		c.Close()
		return sockReply{}, nil, nil, err
	}
	if rep.OK {
		return rep, br, c, nil
	}
	c.Close()
	return rep, nil, nil, replyError(rep)
}

// readReply reads the agent's reply line.
func readReply(br *bufio.Reader) (sockReply, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return sockReply{}, fmt.Errorf("read the agent's reply: %w", err)
	}
	var rep sockReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return sockReply{}, fmt.Errorf("decode the agent's reply: %w", err)
	}
	return rep, nil
}

// replyError is the error of a reply that is not OK.
func replyError(rep sockReply) error {
	switch {
	case rep.Code == "conflict":
		return fmt.Errorf("%s: %w", rep.Message, ErrConflict)
	case rep.Code == "not_found":
		return fmt.Errorf("%s: %w", rep.Message, ErrNotFound)
	default:
		return fmt.Errorf("the agent: %s", rep.Message)
	}
}

// PushVia archives the WAL file at walPath through the agent listening on
// socket (see Server): it reads the file once and sends its bytes.
func PushVia(ctx context.Context, socket, walPath string) error {
	name := filepath.Base(walPath)
	data, err := os.ReadFile(walPath)
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	_, _, c, err := call(ctx, socket, sockRequest{Op: "push", Name: name, Size: int64(len(data))}, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	c.Close()
	return nil
}

// FetchVia restores the archived WAL file walName to dest through the
// agent listening on socket: dest is written atomically, once the agent
// sent all of the verified file. Errors wrap [ErrNotFound] as Fetch's do.
func FetchVia(ctx context.Context, socket, walName, dest string) error {
	rep, br, c, err := call(ctx, socket, sockRequest{Op: "fetch", Name: walName}, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	defer c.Close()
	err = atomicfile.Write(dest, 0o600, func(w io.Writer) error {
		n, err := io.Copy(w, io.LimitReader(br, rep.Size))
		if err == nil && n != rep.Size {
			err = fmt.Errorf("the agent sent %d of %d bytes", n, rep.Size)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fetch %s: %w", walName, err)
	}
	return nil
}
