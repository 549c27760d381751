package controlplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSessionTicketKeysRotate: a session resumes with its ticket until the
// key that issued it is rotated out (two rotations: the previous key
// still decrypts).
func TestSessionTicketKeysRotate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	caPEM, err := os.ReadFile(filepath.Join(dir, APICAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(4), NextProtos: []string{"http/1.1"}}
	addr := strings.TrimPrefix(cp.URL(), "https://")
	// get makes one request on a new connection (reading the answer lets
	// the client take the TLS 1.3 ticket) and reports whether it resumed.
	get := func() bool {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return conn.ConnectionState().DidResume
	}
	get()
	if !get() {
		t.Fatal("the second connection did not resume: no ticket to test with")
	}
	if err := cp.rotateTicketKeys(); err != nil {
		t.Fatal(err)
	}
	get() // resumes with the previous key; takes a ticket of the new one
	if err := cp.rotateTicketKeys(); err != nil {
		t.Fatal(err)
	}
	if err := cp.rotateTicketKeys(); err != nil {
		t.Fatal(err)
	}
	if get() {
		t.Error("a session resumed with a ticket of a key rotated out")
	}
}
