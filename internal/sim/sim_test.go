package sim_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatdb/moat/internal/localcloud"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/sim"
)

func newSim(t *testing.T) (*sim.Sim, *localcloud.Cloud, string) {
	t.Helper()
	netnstest.New(t) // skips, with the reason, where namespaces cannot be made
	var b [4]byte
	_, _ = rand.Read(b[:])
	c, err := localcloud.New(localcloud.Config{Prefix: "moat-sm" + hex.EncodeToString(b[:]) + "-", LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	dir := t.TempDir()
	s, err := sim.Open(sim.Config{Cloud: c, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, dir
}

func TestInternetHosts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c, dir := newSim(t)
	laptop, err := s.CreateInternetHost(ctx, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	if !localcloud.SimPool.Contains(laptop.Addr) || laptop.Network != sim.NetworkInternet {
		t.Errorf("laptop = %+v, want an internet host in %v", laptop, localcloud.SimPool)
	}
	other, err := s.CreateInternetHost(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.CreateInternetHost(ctx, "laptop")
	if err != nil || again != laptop {
		t.Errorf("CreateInternetHost(laptop) again = %+v, %v; want %+v", again, err, laptop)
	}

	// A "node" on the public pool, reached from a sim host with socat.
	node, err := c.AddHost(ctx, "node1", localcloud.Internet(localcloud.PublicPool))
	if err != nil {
		t.Fatal(err)
	}
	nodeAddr, _ := node.Addr(localcloud.NetRef{})
	var ln net.Listener
	if err := c.Do(node.NS, func() (err error) { ln, err = net.Listen("tcp", ":5432"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("hello from node\n"))
			conn.Close()
		}
	}()
	var out bytes.Buffer
	if _, err := exec.LookPath("socat"); err == nil {
		code, err := s.Exec(ctx, "laptop", []string{"socat", "-T2", "-", "TCP:" + nodeAddr.String() + ":5432,connect-timeout=2"}, nil, &out, &out)
		if err != nil || code != 0 || out.String() != "hello from node\n" {
			t.Errorf("socat from laptop to node = %d, %v, %q; want 0, nil, the greeting", code, err, out.String())
		}
	}
	out.Reset()
	code, err := s.Exec(ctx, "other", []string{"sh", "-c", "read x; echo got $x; exit 7"}, strings.NewReader("hi\n"), &out, nil)
	if err != nil || code != 7 || out.String() != "got hi\n" {
		t.Errorf("Exec(other) = %d, %v, %q; want 7, nil, %q", code, err, out.String(), "got hi\n")
	}

	// Reopened (a restart), the sim lists what it made.
	s2, err := sim.Open(sim.Config{Cloud: c, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := s2.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0] != laptop || hosts[1] != other {
		t.Errorf("ListHosts() after reopening = %+v, want [%+v %+v]", hosts, laptop, other)
	}

	if err := s2.DeleteHost(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteHost(ctx, "other"); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("DeleteHost twice = %v, want ErrNotFound", err)
	}
	if _, err := s2.Exec(ctx, "other", []string{"true"}, nil, nil, nil); !errors.Is(err, sim.ErrNotFound) {
		t.Errorf("Exec on a deleted host = %v, want ErrNotFound", err)
	}
	if _, err := c.Host(ctx, "sim-other"); !errors.Is(err, localcloud.ErrNotFound) {
		t.Errorf("namespace of a deleted host: %v, want gone", err)
	}
	if _, err := s2.CreateInternetHost(ctx, "Bad_Name"); err == nil {
		t.Error("CreateInternetHost(Bad_Name): want an error")
	}
}

func TestStateFileChecked(t *testing.T) {
	c, err := localcloud.New(localcloud.Config{Prefix: "moat-smfile-"})
	if err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{`{"version":2,"hosts":{}}`, `{"version":1,"hosts":{},"extra":1}`, `{`} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := sim.Open(sim.Config{Cloud: c, Dir: dir}); err == nil {
			t.Errorf("Open with state %s: want an error", content)
		}
	}
}
