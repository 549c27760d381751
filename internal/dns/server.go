package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	miekg "github.com/miekg/dns"
)

// Defaults for Config.
const (
	DefaultTTL         = 5 * time.Second
	DefaultReadTimeout = 2 * time.Second
	DefaultIdleTimeout = 8 * time.Second
	// shutdownTimeout bounds how long Serve waits for in-flight queries.
	shutdownTimeout = 2 * time.Second
	maxTTL          = time.Hour
)

// Config configures a Server.
type Config struct {
	// Domain is the zone the server is authoritative for; DefaultDomain
	// when empty. Every zone given to SetZone must have this origin.
	Domain string
	// Addrs are the addresses Run listens on, UDP and TCP each, such as
	// "127.0.0.1:5353". Serve needs none.
	Addrs []string
	// Nameservers are the apex NS records Watch builds zones with (see
	// Build).
	Nameservers []Nameserver
	// ZoneFile, when set, is where Watch also writes every zone it swaps
	// in (WriteZoneFile), for servers in other processes that follow it
	// (FollowZoneFile) and keep answering while this one is down.
	ZoneFile string
	// ZoneWritten, when set, is called after each write of ZoneFile (moat
	// up signals the server process to reread it at once).
	ZoneWritten func()
	Logger      *slog.Logger
	// TTL of every record, and of negative answers; DefaultTTL when zero.
	// Whole seconds, 1 s to 1 h.
	TTL time.Duration
	// ReadTimeout bounds the wait for a query on a new TCP connection;
	// IdleTimeout between queries on one. Defaults when zero.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
}

// Server is the authoritative DNS server. Its zone is swapped atomically
// by SetZone; queries read it without locks.
type Server struct {
	origin      string
	addrs       []string
	nameservers []Nameserver
	log         *slog.Logger
	ttl         uint32
	readTimeout time.Duration
	idleTimeout time.Duration
	zoneFile    string
	zoneWritten func()
	zone        atomic.Pointer[Zone]
}

// New checks cfg and returns a Server with no zone: until SetZone it
// answers SERVFAIL for names in its domain and REFUSED for the rest.
func New(cfg Config) (*Server, error) {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	origin, err := canonicalOrigin(cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second || cfg.TTL > maxTTL || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("dns config: ttl %v: want whole seconds from 1s to %v", cfg.TTL, maxTTL)
	}
	for _, a := range cfg.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("dns config: listen address: %w", err)
		}
	}
	if _, err := Build(origin, 0, nil, nil, cfg.Nameservers...); err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	return &Server{
		origin: origin, addrs: cfg.Addrs, nameservers: cfg.Nameservers, log: cfg.Logger, zoneFile: cfg.ZoneFile, zoneWritten: cfg.ZoneWritten,
		ttl: uint32(cfg.TTL / time.Second), readTimeout: cfg.ReadTimeout, idleTimeout: cfg.IdleTimeout,
	}, nil
}

// Domain is the server's zone origin, canonical and fully qualified.
func (s *Server) Domain() string { return s.origin }

// SetZone makes z the zone the next query is answered from. A nil z
// unloads the zone (SERVFAIL, as after New). A zone of another origin is
// refused.
func (s *Server) SetZone(z *Zone) error {
	if z != nil && z.origin != s.origin {
		return fmt.Errorf("set zone %s: the server serves %s", z.origin, s.origin)
	}
	s.zone.Store(z)
	return nil
}

// Zone returns the zone being served, or nil.
func (s *Server) Zone() *Zone { return s.zone.Load() }

// ServeDNS answers one query; it implements miekg/dns's Handler.
func (s *Server) ServeDNS(w miekg.ResponseWriter, r *miekg.Msg) {
	tcp := false
	if a := w.LocalAddr(); a != nil {
		tcp = a.Network() == "tcp"
	}
	if err := w.WriteMsg(respond(s.zone.Load(), s.origin, s.ttl, r, tcp)); err != nil {
		s.log.Debug("dns response not sent", "remote", w.RemoteAddr().String(), "err", err)
	}
}

// Run listens on every configured address, UDP and TCP, and serves until
// ctx is done (then it returns nil) or a socket fails. If any address
// cannot be bound, nothing is served.
func (s *Server) Run(ctx context.Context) error {
	if len(s.addrs) == 0 {
		return errors.New("dns: no listen address")
	}
	type pair struct {
		pc net.PacketConn
		ln net.Listener
	}
	var socks []pair
	for _, a := range s.addrs {
		pc, ln, err := Listen(ctx, a)
		if err != nil {
			for _, p := range socks {
				p.pc.Close()
				p.ln.Close()
			}
			return err
		}
		socks = append(socks, pair{pc, ln})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(socks))
	for _, p := range socks {
		s.log.Info("dns listening", "addr", p.ln.Addr().String(), "zone", s.origin)
		go func() { errc <- s.Serve(ctx, p.pc, p.ln) }()
	}
	var first error
	for range socks {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// Listen binds addr for TCP and UDP on the same port; with port 0 the
// kernel picks one free for both. The sockets belong to the calling
// thread's network namespace: call it inside localcloud's Cloud.Do to
// serve inside a namespace.
func Listen(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns listen %s: %w", addr, err)
	}
	var lc net.ListenConfig
	for attempt := 0; ; attempt++ {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns listen: %w", err)
		}
		_, got, _ := net.SplitHostPort(ln.Addr().String())
		pc, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(host, got))
		if err == nil {
			return pc, ln, nil
		}
		ln.Close()
		if port != "0" || attempt >= 10 {
			return nil, nil, fmt.Errorf("dns listen: %w", err)
		}
		// The kernel's TCP port is taken for UDP: pick another.
	}
}

// Serve answers queries on pc (UDP) and ln (TCP), either of which may be
// nil, until ctx is done (then it returns nil) or a socket fails. It closes
// both. The caller may open them anywhere, such as inside a network
// namespace.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if pc == nil && ln == nil {
		return errors.New("dns serve: no socket")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var srvs []*miekg.Server
	idle := s.idleTimeout
	for _, sock := range []struct {
		pc net.PacketConn
		ln net.Listener
	}{{pc: pc}, {ln: ln}} {
		if sock.pc == nil && sock.ln == nil {
			continue
		}
		srvs = append(srvs, &miekg.Server{
			PacketConn: sock.pc, Listener: sock.ln, Handler: s,
			UDPSize:     miekg.DefaultMsgSize,
			ReadTimeout: s.readTimeout, WriteTimeout: s.readTimeout,
			IdleTimeout: func() time.Duration { return idle },
		})
	}
	errc := make(chan error, len(srvs))
	for _, srv := range srvs {
		go func() { errc <- serveOne(ctx, srv) }()
	}
	var first error
	for range srvs {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// serveOne runs srv until ctx is done, then shuts it down and waits for it.
func serveOne(ctx context.Context, srv *miekg.Server) error {
	network, addr := "udp", ""
	if srv.Listener != nil {
		network, addr = "tcp", srv.Listener.Addr().String()
	} else {
		addr = srv.PacketConn.LocalAddr().String()
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		if srv.PacketConn != nil {
			srv.PacketConn.Close()
		}
		if srv.Listener != nil {
			srv.Listener.Close()
		}
		return fmt.Errorf("dns serve %s %s: %w", network, addr, err)
	case <-started:
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("dns serve %s %s: %w", network, addr, err)
		}
		return nil
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = srv.ShutdownContext(sctx) // its only errors: not started (impossible here), timeout (we wait below anyway)
	<-done
	return nil
}
