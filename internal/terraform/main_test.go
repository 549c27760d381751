package terraform

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/asmoat"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/fleettest"
	"github.com/moatdb/moat/internal/sim"
	"github.com/moatdb/moat/internal/testenv"
	"github.com/moatdb/moat/internal/up"
)

// stops are the servers' stop functions, run after every test.
var (
	stopMu sync.Mutex
	stops  []func()
)

func atExit(f func()) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stops = append(stops, f)
}

// TestMain runs the acceptance tests with the real terraform binary
// (TF_ACC=1, the provider attached in-process), then stops the servers
// they shared. Called as moat, the binary is the moat command (the
// stack's PostgreSQL archives WAL with it).
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "moat" {
		asmoat.Main(m)
		return
	}
	os.Setenv("TF_ACC", "1")
	os.Setenv("TF_ACC_PROVIDER_NAMESPACE", "moatdb")
	if p, err := exec.LookPath("terraform"); err == nil && os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		os.Setenv("TF_ACC_TERRAFORM_PATH", p)
	}
	// No registry is reachable and the provider is attached: keep
	// terraform from looking for a user's CLI configuration or plugins.
	dir, err := os.MkdirTemp("", "moat-tf-")
	if err == nil {
		rc := filepath.Join(dir, "terraformrc")
		if os.WriteFile(rc, []byte("disable_checkpoint = true\n"), 0o600) == nil {
			os.Setenv("TF_CLI_CONFIG_FILE", rc)
		}
	}
	os.Setenv("CHECKPOINT_DISABLE", "1")
	code := m.Run()
	stopMu.Lock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	stopMu.Unlock()
	os.RemoveAll(dir)
	asmoat.RemoveBuilt()
	os.Exit(code)
}

// factories attaches this package's provider to terraform as moatdb/moat.
var factories = map[string]func() (tfprotov6.ProviderServer, error){
	"moat": providerserver.NewProtocol6WithError(New("test")()),
}

// mustHaveTerraform ends t unless the terraform binary is here.
func mustHaveTerraform(t *testing.T) {
	t.Helper()
	testenv.MustHaveCommand(t, "terraform")
}

// server is a running API and an admin of one project on it.
type server struct {
	url, caFile string
	op          *client.Client
	// sim is the simulated customer cloud of a `moat up` stack (nil for a
	// control plane alone).
	sim *sim.Sim
}

// tenant is a project on a server with an admin token.
type tenant struct {
	*server
	project, token string
	c              *client.Client
}

// newTenant creates a project and an admin token of it.
func (s *server) newTenant(t *testing.T, name string) *tenant {
	t.Helper()
	ctx := testCtx(t)
	p, err := s.op.CreateProject(ctx, apitype.ProjectCreate{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.op.CreateToken(ctx, p.ID, apitype.TokenCreate{Role: "admin", Name: "terraform"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: s.url, Token: tok.Secret, CAFile: s.caFile})
	if err != nil {
		t.Fatal(err)
	}
	return &tenant{server: s, project: p.ID, token: tok.Secret, c: c}
}

// provider is the configuration's head: the provider from moatdb/moat,
// configured for the tenant, then body.
func (tn *tenant) config(body string) string {
	return fmt.Sprintf(`
terraform {
  required_providers {
    moat = { source = "moatdb/moat" }
  }
}

provider "moat" {
  url     = %q
  token   = %q
  ca_file = %q
  project = %q
}
`, tn.url, tn.token, tn.caFile, tn.project) + body
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var (
	cpOnce   sync.Once
	cpServer *server
	cpErr    error
)

// controlPlane returns the package's control plane on SQLite without a
// provider: objects are stored, nothing is built (VPCs stay creating).
func controlPlane(t *testing.T) *server {
	t.Helper()
	mustHaveTerraform(t)
	cpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-tf-cp-")
		if err != nil {
			cpErr = err
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		cp, err := controlplane.New(ctx, controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", BackupDir: "-"})
		if err == nil {
			err = fleettest.Register(ctx, cp.Store, domain.Catalog{}, 0, time.Now())
		}
		if err == nil {
			err = cp.Listen()
		}
		if err != nil {
			cancel()
			os.RemoveAll(dir)
			cpErr = err
			return
		}
		done := make(chan error, 1)
		go func() { done <- cp.Run(ctx) }()
		atExit(func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Fprintf(os.Stderr, "control plane: %v\n", err)
			}
			os.RemoveAll(dir)
		})
		cpServer, cpErr = newServer(dir, cp.URL(), nil)
	})
	if cpErr != nil {
		t.Fatalf("control plane: %v", cpErr)
	}
	return cpServer
}

func newServer(dir, url string, sm *sim.Sim) (*server, error) {
	tok, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		return nil, err
	}
	s := &server{url: url, caFile: filepath.Join(dir, controlplane.APICAFile), sim: sm}
	s.op, err = client.New(client.Config{URL: url, Token: strings.TrimSpace(string(tok)), CAFile: s.caFile})
	return s, err
}

var (
	stackOnce sync.Once
	stackSrv  *server
	stackErr  error
)

// stack returns the package's one `moat up` stack (control plane, local
// provider, agent, simulated customer cloud), started on first use. It
// needs root and PostgreSQL.
//
// The stack runs in a child process (this test binary as moat up), not in
// this one: its namespace work ends OS threads (a thread that entered a
// namespace is never reused), and terraform-exec starts terraform with
// Pdeathsig, so a terraform started from such a thread would be killed.
// The tests drive the simulated customer cloud from here, between
// terraform runs only.
func stack(t *testing.T) *server {
	t.Helper()
	mustHaveTerraform(t)
	testenv.MustNotBeShort(t, "runs PostgreSQL services in namespaces")
	testenv.MustHavePostgres(t)
	stackOnce.Do(func() { stackSrv, stackErr = startStack() })
	if stackErr != nil {
		t.Fatalf("stack: %v", stackErr)
	}
	return stackSrv
}

func startStack() (*server, error) {
	// Not a temporary directory under a 0700 parent: the postgres user
	// must traverse to the nodes' data.
	dir, err := os.MkdirTemp("/tmp", "moat-tf-up-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o711)
	prefix := "moat-t" + strings.ToLower(rand.Text()[:6]) + "-"
	// A copy of this test binary named moat (under -race, of a moat built
	// without it: asmoat.Process): it runs as the moat command, and the
	// agent installs it as PostgreSQL's archive_command (it refuses a
	// binary named *.test).
	exe, err := copyExecutable(filepath.Join(dir, "moat"))
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "up.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "up", "--data-dir", dir, "--listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0",
		"--backup-interval", "0", "--log-level", "info")
	cmd.Env = append(os.Environ(), "MOAT_LOCALCLOUD_PREFIX="+prefix)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "API:" {
				urlc <- f[1]
			}
		}
		exited <- cmd.Wait()
	}()
	atExit(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if _, err := up.Down(context.Background(), dir, prefix, 10*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "down: %v\n", err)
		}
		logf.Close()
		// MOAT_TF_LOG=FILE keeps the stack's log (the data directory goes).
		if b, err := os.ReadFile(logf.Name()); err == nil && os.Getenv("MOAT_TF_LOG") != "" {
			os.WriteFile(os.Getenv("MOAT_TF_LOG"), b, 0o644)
		}
		os.RemoveAll(dir)
	})
	var url string
	select {
	case url = <-urlc:
	case err := <-exited:
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("moat up exited: %v: %s", err, log)
	case <-time.After(2 * time.Minute):
		return nil, errors.New("moat up printed no API URL in 2 minutes")
	}
	cloud, err := up.Cloud(prefix)
	if err != nil {
		return nil, err
	}
	s, err := newServer(dir, url, nil)
	if err != nil {
		return nil, err
	}
	s.sim, err = sim.Open(sim.Config{Cloud: cloud, Dir: filepath.Join(dir, "sim")})
	return s, err
}

// copyExecutable copies the moat binary for processes (asmoat.Process)
// to dst (mode 0755).
func copyExecutable(dst string) (string, error) {
	src, err := asmoat.Process()
	if err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}
