package controlplane_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
)

// TestMain doubles as the server process of the crash test: with
// MOAT_TEST_SERVE_DIR set, the test binary runs a control plane and prints
// its URL.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MOAT_TEST_SERVE_DIR"); dir != "" {
		ctx := context.Background()
		cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: os.Getenv("MOAT_TEST_SERVE_ADDR"), CheckpointEvery: 8})
		if err == nil {
			err = fleettest.Register(ctx, cp.Store, domain.Catalog{}, 0, time.Now())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := cp.Listen(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("URL", cp.URL())
		if err := cp.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve starts the control plane in a child process and returns its client
// (operator token) and the process.
func serve(t *testing.T, dir, addr string) (*client.Client, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MOAT_TEST_SERVE_DIR="+dir, "MOAT_TEST_SERVE_ADDR="+addr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	url := strings.TrimSpace(strings.TrimPrefix(line, "URL "))
	tok, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, controlplane.APICAFile), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCrashDuringWrites kills the server with SIGKILL during a burst of
// concurrent writes, restarts it, and checks that no object is half-written
// and the audit chain verifies.
func TestCrashDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	c, cmd := serve(t, dir, addr)
	ctx := context.Background()
	proj, err := c.CreateProject(ctx, apitype.ProjectCreate{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}

	var ok atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				svc, err := c.CreateService(ctx, proj.ID, apitype.ServiceCreate{Name: fmt.Sprintf("s%d-%d", w, i), Region: "us-east-1", Nodes: 3})
				if err != nil {
					return // the server died
				}
				ok.Add(1)
				_, _, err = c.PutAllowlist(ctx, proj.ID, svc.ID, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: fmt.Sprintf("10.%d.%d.0/24", w, i%256)}}}, "")
				if err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ok.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(stop)
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no write succeeded before the kill")
	}

	c2, _ := serve(t, dir, addr)
	svcs, err := c2.ListServices(ctx, proj.ID)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(svcs)) < ok.Load() {
		t.Errorf("after restart %d services, but %d creates were acknowledged", len(svcs), ok.Load())
	}
	for _, s := range svcs {
		full, err := c2.GetService(ctx, proj.ID, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(full.NodeList) != 3 {
			t.Errorf("service %s has %d of its 3 nodes: half-written", s.ID, len(full.NodeList))
		}
	}
	entries, err := c2.ListAudit(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, e := range entries {
		if e.Action == "service.create" && e.Outcome == "success" {
			creates++
		}
	}
	if creates != len(svcs) {
		t.Errorf("%d services but %d service.create audit entries", len(svcs), creates)
	}
	v, err := c2.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK {
		t.Errorf("audit verify after crash: %+v", v)
	}
	t.Logf("%d acknowledged creates before SIGKILL; %d services and %d audit entries after restart", ok.Load(), len(svcs), len(entries))
}
