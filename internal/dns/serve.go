package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// InheritedFirstFD is the first file descriptor of the sockets a process
// running ServeZoneFile inherits (moat up passes them to moat dns serve):
// pairs of UDP then TCP sockets.
const InheritedFirstFD = 3

// Socket is a UDP socket and a TCP listener on one address.
type Socket struct {
	PC net.PacketConn
	Ln net.Listener
}

// ListenAll binds each address (Listen), or nothing if one fails.
func ListenAll(ctx context.Context, addrs []string) ([]Socket, error) {
	var out []Socket
	for _, a := range addrs {
		pc, ln, err := Listen(ctx, a)
		if err != nil {
			CloseSockets(out)
			return nil, err
		}
		out = append(out, Socket{pc, ln})
	}
	return out, nil
}

// CloseSockets closes every socket of socks.
func CloseSockets(socks []Socket) {
	for _, s := range socks {
		s.PC.Close()
		s.Ln.Close()
	}
}

// InheritedSockets takes the n UDP/TCP socket pairs this process inherited
// from file descriptor InheritedFirstFD on. Several processes may hold the
// same sockets: the kernel gives each datagram and connection to one of
// the processes receiving, and a process that dies leaves its share to the
// others (the sockets stay open while any holds them).
func InheritedSockets(n int) ([]Socket, error) {
	var out []Socket
	for i := range n {
		fd := InheritedFirstFD + 2*i
		udp, tcp := os.NewFile(uintptr(fd), "dns-udp"), os.NewFile(uintptr(fd+1), "dns-tcp")
		pc, err := net.FilePacketConn(udp)
		udp.Close()
		if err != nil {
			tcp.Close()
			CloseSockets(out)
			return nil, fmt.Errorf("inherited socket %d: %w", fd, err)
		}
		ln, err := net.FileListener(tcp)
		tcp.Close()
		if err != nil {
			pc.Close()
			CloseSockets(out)
			return nil, fmt.Errorf("inherited socket %d: %w", fd+1, err)
		}
		out = append(out, Socket{pc, ln})
	}
	return out, nil
}

// ServeZoneFile answers on socks from the zone in zoneFile, which it
// follows (FollowZoneFile, checked every poll and at once on SIGHUP), until
// ctx ends or a socket fails; it closes socks. It reads the zone before it
// answers the first query, so that a server started beside others on the
// same sockets never answers SERVFAIL while they answer. ready, when set,
// is called once the sockets are served and SIGHUP is handled (before,
// SIGHUP would end the process).
func (s *Server) ServeZoneFile(ctx context.Context, zoneFile string, poll time.Duration, socks []Socket, ready func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if z, err := ReadZoneFile(zoneFile); err == nil {
		s.SetZone(z) // (FollowZoneFile reports an error: it reads it again)
	}
	errc := make(chan error, len(socks)+1)
	// SIGHUP: the control plane wrote a new zone.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
			case <-ctx.Done():
				return
			}
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { errc <- s.FollowZoneFile(ctx, zoneFile, poll, reload) }()
	for _, sock := range socks {
		s.log.Info("dns listening", "addr", sock.Ln.Addr().String(), "zone", s.origin, "zone_file", zoneFile)
		go func() { errc <- s.Serve(ctx, sock.PC, sock.Ln) }()
	}
	if ready != nil {
		ready() // the sockets are bound (queries wait in them) and SIGHUP is handled
	}
	var errs []error
	for range len(socks) + 1 {
		if err := <-errc; err != nil {
			errs = append(errs, err)
			cancel()
		}
	}
	return errors.Join(errs...)
}
