package certtest

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

func TestHandshake(t *testing.T) {
	t.Parallel()
	ca := CA(t)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(c2, Server(t, ca))
		errc <- s.Handshake()
		io.Copy(io.Discard, s)
	}()
	cfg := Client(t, ca)
	cfg.ServerName = "localhost"
	if err := tls.Client(c1, cfg).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}
