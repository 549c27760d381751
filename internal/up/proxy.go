package up

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// hostLink is a host's network path to the control plane: on one machine
// every agent reaches the API over loopback, so moat up gives each its own
// TCP relay to the API, which the simulator cuts to partition the host
// (Faults.Partitioned, or Failed): the relay then drops its connections
// and refuses new ones until the host is recovered. TLS passes through
// untouched (the agent verifies the API's certificate end to end).
type hostLink struct {
	host    string
	dataDir string
	target  string // the API's host:port
	ln      net.Listener

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// listenHostLink opens host's relay to the API at apiURL on loopback.
func listenHostLink(dataDir, host, apiURL string) (*hostLink, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &hostLink{host: host, dataDir: dataDir, target: u.Host, ln: ln, conns: map[net.Conn]bool{}}, nil
}

// URL is the API's URL through the relay.
func (l *hostLink) URL() string { return "https://" + l.ln.Addr().String() }

// cut reports whether the simulator cut the host off.
func (l *hostLink) cut() bool {
	f, err := ReadFaults(l.dataDir)
	return err == nil && (f.IsFailed(l.host) || f.IsPartitioned(l.host))
}

// run relays until ctx ends.
func (l *hostLink) run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		l.ln.Close()
	}()
	go l.watch(ctx)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				l.closeAll()
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		if l.cut() {
			c.Close()
			continue
		}
		go l.relay(c)
	}
}

// watch drops every connection while the host is cut.
func (l *hostLink) watch(ctx context.Context) {
	for ctx.Err() == nil {
		if l.cut() {
			l.closeAll()
		}
		sleepCtx(ctx, faultPoll)
	}
}

func (l *hostLink) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", l.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	l.conns[c], l.conns[up] = true, true
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, up)
	l.mu.Unlock()
}

func (l *hostLink) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}
