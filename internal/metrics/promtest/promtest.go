// Package promtest runs a real Prometheus server for tests, in the way
// net/http/httptest runs an HTTP server: Debian's prometheus binary, a
// configuration of scrape jobs every second, its database in the test's
// temporary directory, its web API on a free loopback port. Without the
// binary the test skips (fails under CI=true; `apt-get install
// prometheus`); under -short it skips. CheckMetrics lints an exposition
// with promtool.
//
// Only tests import promtest.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
)

// Job is one scrape job.
type Job struct {
	Name   string
	Target string // host:port
	Path   string // "/metrics" when empty
	// CA, when set, makes the job scrape over HTTPS and trust only this
	// certificate (DER, as tls.Certificate and httptest give it).
	CA []byte
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
}

// Server is a running Prometheus.
type Server struct {
	// Addr is the web API's host:port.
	Addr string
}

// syncBuffer is the server's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start starts Prometheus scraping jobs every second and stops it when tb
// ends; the server's log is printed if tb failed.
func Start(tb testing.TB, jobs ...Job) *Server {
	tb.Helper()
	testenv.MustNotBeShort(tb, "starts a Prometheus server")
	bin := testenv.MustHaveCommand(tb, "prometheus")
	dir := tb.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n")
	for i, j := range jobs {
		path := j.Path
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&cfg, "  - job_name: %q\n    metrics_path: %q\n    static_configs:\n      - targets: [%q]\n", j.Name, path, j.Target)
		if j.CA != nil {
			ca := filepath.Join(dir, fmt.Sprintf("ca-%d.pem", i))
			if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: j.CA}), 0o600); err != nil {
				tb.Fatal(err)
			}
			fmt.Fprintf(&cfg, "    scheme: https\n    tls_config:\n      ca_file: %q\n", ca)
		}
		if j.Token != "" {
			fmt.Fprintf(&cfg, "    authorization:\n      credentials: %q\n", j.Token)
		}
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	s := &Server{Addr: freeAddr(tb)}
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+s.Addr,
	)
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("prometheus configuration:\n%s\nprometheus output:\n%s", cfg.String(), log.String())
		}
	})
	return s
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Query runs an instant query and returns the value of its only sample;
// ok is false when Prometheus is not up yet or the result is not exactly
// one sample.
func (s *Server) Query(ctx context.Context, query string) (value string, ok bool) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.Addr+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return "", false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Data   struct {
			Result []struct{ Value [2]any }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" || len(body.Data.Result) != 1 {
		return "", false
	}
	value, ok = body.Data.Result[0].Value[1].(string)
	return value, ok
}

// WaitFor polls query until its only sample's value is want, and fails tb
// if it is not within timeout.
func (s *Server) WaitFor(tb testing.TB, query, want string, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := "(no single sample)"
	for {
		if v, ok := s.Query(ctx, query); ok {
			if v == want {
				return
			}
			last = v
		}
		select {
		case <-ctx.Done():
			tb.Errorf("Prometheus: %s = %s after %v, want %s", query, last, timeout, want)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CheckMetrics fails tb unless `promtool check metrics` (Debian's
// prometheus package) accepts the exposition.
func CheckMetrics(tb testing.TB, exposition []byte) {
	tb.Helper()
	promtool := testenv.MustHaveCommand(tb, "promtool")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
}
