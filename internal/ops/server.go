package ops

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Audit actions of the node endpoint, in Event.Action.
const (
	ActionRefused       = "ops.refused"
	ActionSessionOpened = "ops.session.open"
	ActionSessionClosed = "ops.session.close"
	ActionExec          = "ops.exec"
	ActionShell         = "ops.shell"
)

// Why a session ended, in the ActionSessionClosed event's Reason.
const (
	CloseClient   = "client"   // the client disconnected
	CloseRevoked  = "revoked"  // Server.Revoke or RevokeSerial
	CloseExpired  = "expired"  // the certificate's ValidBefore passed
	CloseShutdown = "shutdown" // the server stopped
	// CloseLost is a session whose endpoint died without closing it (the
	// agent crashed): the next agent closes it from its spool, with the
	// time until then and no byte counts.
	CloseLost = "lost"
)

// Event is one audit record of the endpoint. Fields that do not apply are
// zero.
type Event struct {
	Time   time.Time
	Action string
	// Reason is why something was refused (Reason* constants) or why a
	// session ended (Close* constants).
	Reason string
	Detail string
	// Session is the connection's ID (one SSH connection, from
	// authentication to close).
	Session string
	Remote  string
	User    string
	GrantID string
	Serial  uint64
	// Command is an exec request's command line.
	Command string
	// Duration, BytesIn (client to node) and BytesOut (node to client) are
	// set when a session closes.
	Duration          time.Duration
	BytesIn, BytesOut int64
}

// Recording describes an interactive session being recorded.
type Recording struct {
	Session string
	// Channel numbers the recorded channels of one session, from 1.
	Channel int
	GrantID string
	Serial  uint64
	Start   time.Time
	Term    Terminal
	Command string // "" for a shell
}

// Config configures a Server. Every field but Logger, Now and
// HandshakeTimeout is required.
type Config struct {
	// HostSigner is the node's host key with its host certificate
	// (ssh.NewCertSigner).
	HostSigner ssh.Signer
	// UserCA is the operators' CA: the only signer of accepted
	// certificates.
	UserCA ssh.PublicKey
	// Granted reports whether grantID is a live grant for this node (the
	// desired state lists them). It binds a certificate to its node.
	Granted func(grantID string) bool
	// Revoked reports whether a serial is on the revocation list.
	Revoked func(serial uint64) bool
	// Audit receives every event; it must not block for long.
	Audit func(Event)
	// Runner runs the sessions' commands and shells.
	Runner Runner
	// Record opens the destination of an interactive session's recording
	// (asciicast v2); the caller seals and stores what is written and
	// closed. A session whose recording cannot be opened is refused.
	Record func(Recording) (io.WriteCloser, error)

	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HandshakeTimeout bounds the SSH handshake and authentication; 0
	// means 10 seconds.
	HandshakeTimeout time.Duration
}

// Server is a node's operator SSH endpoint. It accepts only certificates of
// the operators' CA for live grants, offers a terminal or a command as the
// Runner decides and nothing else (no forwarding of any kind, no
// subsystems, no environment), audits every refusal, session and command,
// records interactive sessions, and ends a session when its grant is revoked
// or its certificate expires.
type Server struct {
	cfg Config
	log *slog.Logger

	mu             sync.Mutex
	live           map[*liveConn]struct{}
	revokedGrants  map[string]bool
	revokedSerials map[uint64]bool
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	var missing []string
	for name, ok := range map[string]bool{
		"HostSigner": cfg.HostSigner != nil, "UserCA": cfg.UserCA != nil, "Granted": cfg.Granted != nil,
		"Revoked": cfg.Revoked != nil, "Audit": cfg.Audit != nil, "Runner": cfg.Runner != nil, "Record": cfg.Record != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ops server: missing %s", strings.Join(missing, ", "))
	}
	if _, ok := cfg.HostSigner.PublicKey().(*ssh.Certificate); !ok {
		return nil, errors.New("ops server: the host key has no host certificate (the CLI accepts nothing else)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	return &Server{
		cfg:            cfg,
		log:            cfg.Logger,
		live:           map[*liveConn]struct{}{},
		revokedGrants:  map[string]bool{},
		revokedSerials: map[uint64]bool{},
	}, nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every live session and returns nil once they are gone. An accept error
// ends it likewise and is returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the live sessions
		wg.Wait()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ops server: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// Revoke ends every live session of grantID at once and refuses the grant's
// certificates from now on. It returns the number of sessions ended.
func (s *Server) Revoke(grantID string) int {
	s.mu.Lock()
	s.revokedGrants[grantID] = true
	var ended []*liveConn
	for lc := range s.live {
		if lc.cert.KeyId == grantID {
			ended = append(ended, lc)
		}
	}
	s.mu.Unlock()
	for _, lc := range ended {
		lc.close(CloseRevoked)
	}
	return len(ended)
}

// RevokeSerial is Revoke for one certificate, by serial.
func (s *Server) RevokeSerial(serial uint64) int {
	s.mu.Lock()
	s.revokedSerials[serial] = true
	var ended []*liveConn
	for lc := range s.live {
		if lc.cert.Serial == serial {
			ended = append(ended, lc)
		}
	}
	s.mu.Unlock()
	for _, lc := range ended {
		lc.close(CloseRevoked)
	}
	return len(ended)
}

// Session is a live session, as Sessions lists it.
type Session struct {
	ID      string
	GrantID string
	Serial  uint64
	Remote  string
	Opened  time.Time
}

// Sessions lists the live sessions.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Session, 0, len(s.live))
	for lc := range s.live {
		out = append(out, Session{ID: lc.id, GrantID: lc.cert.KeyId, Serial: lc.cert.Serial, Remote: lc.remote, Opened: lc.opened})
	}
	return out
}

// revoked reports whether c is revoked, by the caller's list or Revoke.
func (s *Server) revoked(c *ssh.Certificate) bool {
	s.mu.Lock()
	local := s.revokedGrants[c.KeyId] || s.revokedSerials[c.Serial]
	s.mu.Unlock()
	return local || s.cfg.Revoked(c.Serial)
}

func (s *Server) audit(e Event) {
	if e.Time.IsZero() {
		e.Time = s.cfg.Now()
	}
	s.cfg.Audit(e)
}

// liveConn is one authenticated connection.
type liveConn struct {
	id     string
	remote string
	user   string
	cert   *ssh.Certificate
	opened time.Time
	conn   ssh.Conn

	in, out   atomic.Int64 // channel data bytes, client to node and back
	closeOnce sync.Once
	reason    atomic.Value // string: why it was closed by the server
}

// close ends the connection for reason (the first reason wins).
func (lc *liveConn) close(reason string) {
	lc.closeOnce.Do(func() {
		lc.reason.Store(reason)
		lc.conn.Close()
	})
}

func (lc *liveConn) event(action string) Event {
	return Event{Action: action, Session: lc.id, Remote: lc.remote, User: lc.user, GrantID: lc.cert.KeyId, Serial: lc.cert.Serial}
}

// certKey keys the authenticated certificate in ssh.Permissions.ExtraData.
type certKey struct{}

// serverConfig is the SSH configuration of one connection; refusals are
// audited under session id, and refused is set once one was.
func (s *Server) serverConfig(id string, refused *atomic.Bool) *ssh.ServerConfig {
	deny := func(meta ssh.ConnMetadata, r *refusal) error {
		refused.Store(true)
		s.audit(Event{Action: ActionRefused, Reason: r.reason, Detail: r.detail, Session: id, Remote: meta.RemoteAddr().String(), User: meta.User(), GrantID: r.grantID, Serial: r.serial})
		return r
	}
	conf := &ssh.ServerConfig{
		// Offered only to be refused and audited: an attempt with a
		// password is a security event the log must show.
		PasswordCallback: func(meta ssh.ConnMetadata, _ []byte) (*ssh.Permissions, error) {
			return nil, deny(meta, refuse(ReasonPassword, "passwords are not accepted"))
		},
		KeyboardInteractiveCallback: func(meta ssh.ConnMetadata, _ ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			return nil, deny(meta, refuse(ReasonKeyboardInteractive, "keyboard-interactive authentication is not accepted"))
		},
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			c, r := checkCert(key, meta.User(), meta.RemoteAddr(), s.cfg.Now(), s.cfg.UserCA)
			if r != nil {
				return nil, deny(meta, r)
			}
			if s.revoked(c) {
				return nil, deny(meta, &refusal{ReasonRevoked, fmt.Sprintf("serial %d of grant %s is revoked", c.Serial, c.KeyId), c.KeyId, c.Serial})
			}
			if !s.cfg.Granted(c.KeyId) {
				return nil, deny(meta, &refusal{ReasonUnknownGrant, fmt.Sprintf("grant %s is not a live grant for this node", c.KeyId), c.KeyId, c.Serial})
			}
			return &ssh.Permissions{
				// The library enforces source-address again.
				CriticalOptions: map[string]string{sourceAddressOption: c.CriticalOptions[sourceAddressOption]},
				Extensions:      c.Extensions,
				ExtraData:       map[any]any{certKey{}: c},
			}, nil
		},
		MaxAuthTries:  6,
		ServerVersion: "SSH-2.0-moat-ops",
	}
	conf.AddHostKey(s.cfg.HostSigner)
	return conf
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	id, err := newSessionID()
	if err != nil {
		s.log.Error("ops session id", "err", err)
		nc.Close()
		return
	}
	var refused atomic.Bool
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.serverConfig(id, &refused))
	if err != nil {
		nc.Close()
		if !refused.Load() {
			s.audit(Event{Action: ActionRefused, Reason: ReasonHandshake, Detail: err.Error(), Session: id, Remote: nc.RemoteAddr().String()})
		}
		return
	}
	_ = nc.SetDeadline(time.Time{})
	cert := sc.Permissions.ExtraData[certKey{}].(*ssh.Certificate)
	lc := &liveConn{id: id, remote: nc.RemoteAddr().String(), user: sc.User(), cert: cert, opened: s.cfg.Now(), conn: sc}

	// Register, unless a revocation came between authentication and now.
	s.mu.Lock()
	revoked := s.revokedGrants[cert.KeyId] || s.revokedSerials[cert.Serial]
	if !revoked {
		s.live[lc] = struct{}{}
	}
	s.mu.Unlock()
	if revoked {
		sc.Close()
		s.audit(Event{Action: ActionRefused, Reason: ReasonRevoked, Detail: "revoked during authentication", Session: id, Remote: lc.remote, User: lc.user, GrantID: cert.KeyId, Serial: cert.Serial})
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.live, lc)
		s.mu.Unlock()
	}()
	s.audit(lc.event(ActionSessionOpened))

	// A session never outlives its certificate.
	expiry := time.AfterFunc(time.Unix(int64(cert.ValidBefore), 0).Sub(s.cfg.Now()), func() { lc.close(CloseExpired) })
	defer expiry.Stop()
	stop := context.AfterFunc(ctx, func() { lc.close(CloseShutdown) })
	defer stop()

	connCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for req := range reqs {
			if req.Type == "tcpip-forward" || req.Type == "streamlocal-forward@openssh.com" {
				s.audit(withReason(lc.event(ActionRefused), ReasonPortForwarding, req.Type))
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}()
	channel := 0
	for nch := range chans {
		switch t := nch.ChannelType(); t {
		case "session":
			channel++
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				s.session(connCtx, lc, nch, n)
			}(channel)
		case "direct-tcpip", "direct-streamlocal@openssh.com":
			s.audit(withReason(lc.event(ActionRefused), ReasonPortForwarding, t))
			_ = nch.Reject(ssh.Prohibited, "port forwarding is not permitted")
		default:
			s.audit(withReason(lc.event(ActionRefused), ReasonChannelType, t))
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions are permitted")
		}
	}
	// The connection is gone: end what still runs.
	lc.close(CloseClient)
	cancel()
	wg.Wait()
	// Out of Sessions before the close event says it ended (the deferred
	// delete covers the returns above).
	s.mu.Lock()
	delete(s.live, lc)
	s.mu.Unlock()
	ev := lc.event(ActionSessionClosed)
	ev.Reason, _ = lc.reason.Load().(string)
	ev.Duration = s.cfg.Now().Sub(lc.opened)
	ev.BytesIn, ev.BytesOut = lc.in.Load(), lc.out.Load()
	s.audit(ev)
}

func withReason(e Event, reason, detail string) Event {
	e.Reason, e.Detail = reason, detail
	return e
}

func newSessionID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("session id: %w", err)
	}
	return fmt.Sprintf("ses-%x", b), nil
}
