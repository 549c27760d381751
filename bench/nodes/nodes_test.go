// Package nodes benchmarks service nodes on a whole `moat up` stack (real
// namespaces, nftables and PostgreSQL; needs root):
//
//   - propagation: allowlist PUT → enforced on the node, observed by a real
//     TCP probe from the simulated laptop, p50/p99 over 100 changes; the
//     reference is the PUT's own response time in the same run.
//   - create: service create (1 node) → first verify-full query from the
//     laptop, p50 over 5 services; the reference is a bare initdb + start +
//     first query of the same PostgreSQL in the same run (the floor).
//
// Run: make bench, or go test -run '^$' -bench . -benchtime=1x ./bench/nodes
package nodes

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/asmoat"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/controlplane"
	"github.com/moatdb/moat/internal/up"
)

// TestMain lets PostgreSQL's archive_command run this test binary as moat.
func TestMain(m *testing.M) { asmoat.Main(m) }

type stack struct {
	st   *up.Stack
	op   *client.Client
	proj string
	dir  string
}

func newStack(b *testing.B) *stack {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir, err := os.MkdirTemp("/tmp", "moat-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	prefix := "moat-b" + strings.ToLower(rand.Text()[:6]) + "-"
	ctx, cancel := context.WithCancel(context.Background())
	st, err := up.New(ctx, up.Config{ControlPlane: controlplane.Config{DataDir: dir, Listen: "127.0.0.1:0", BackupInterval: -1},
		CloudPrefix: prefix, NoSync: true, MoatBinary: asmoat.Binary(b)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		up.Down(context.Background(), dir, prefix, 10*time.Second)
		os.RemoveAll(dir)
	})
	op, err := st.Client(controlplane.AdminTokenFile)
	if err != nil {
		b.Fatal(err)
	}
	// Services are placed on hosts whose agents heartbeat.
	if err := st.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	p, err := op.CreateProject(ctx, apitype.ProjectCreate{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return &stack{st: st, op: op, proj: p.ID, dir: dir}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

// prober dials addr from inside ns on request and says whether it connected.
func prober(b *testing.B, s *stack, ns string, addr string) (probe func() bool, stop func()) {
	reqs := make(chan chan bool)
	go s.st.Cloud.Do(ns, func() error {
		for r := range reqs {
			c, err := net.DialTimeout("tcp", addr, 15*time.Millisecond)
			if err == nil {
				c.Close()
			}
			r <- err == nil
		}
		return nil
	})
	return func() bool {
			r := make(chan bool)
			reqs <- r
			return <-r
		}, func() {
			close(reqs)
		}
}

func BenchmarkPropagation(b *testing.B) {
	s := newStack(b)
	ctx := context.Background()
	svc, err := s.op.CreateService(ctx, s.proj, apitype.ServiceCreate{Name: "prop", Region: "us-east-1"})
	if err != nil {
		b.Fatal(err)
	}
	if svc, err = s.op.WaitService(ctx, s.proj, svc.ID, 10*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	probe, stop := prober(b, s, s.st.Laptop.NS, net.JoinHostPort(svc.Connection.Address, "5432"))
	defer stop()
	laptop := s.st.Laptop.Addr.String() + "/32"
	const changes = 100
	var prop, put []time.Duration
	for i := range changes {
		allow := i%2 == 1
		cidr := "203.0.113.9/32"
		if allow {
			cidr = laptop
		}
		t0 := time.Now()
		if _, _, err := s.op.PutAllowlist(ctx, s.proj, svc.ID, apitype.AllowlistUpdate{AllowedIPs: []apitype.AllowEntry{{CIDR: cidr}}}, ""); err != nil {
			b.Fatal(err)
		}
		put = append(put, time.Since(t0))
		for probe() != allow {
			if time.Since(t0) > 5*time.Second {
				b.Fatalf("change %d not enforced within 5s", i)
			}
		}
		prop = append(prop, time.Since(t0))
	}
	report("allowlist PUT → enforced (probe)", prop, "PUT response alone", put)
	b.ReportMetric(float64(pct(prop, 99).Microseconds())/1000, "p99-ms")
}

func BenchmarkServiceCreate(b *testing.B) {
	s := newStack(b)
	ctx := context.Background()
	ca, err := s.op.GetProjectCA(ctx, s.proj)
	if err != nil {
		b.Fatal(err)
	}
	caFile := filepath.Join(s.dir, "ca.pem")
	os.WriteFile(caFile, []byte(ca.PEM), 0o644)
	var create, ref []time.Duration
	for i := range 5 {
		t0 := time.Now()
		svc, err := s.op.CreateService(ctx, s.proj, apitype.ServiceCreate{Name: fmt.Sprintf("c%d", i), Region: "us-east-1"})
		if err != nil {
			b.Fatal(err)
		}
		pw := svc.AdminPassword
		for {
			got, err := s.op.GetService(ctx, s.proj, svc.ID)
			if err == nil && got.Connection != nil && got.Connection.Address != "" {
				argv := append([]string{"env", "PGPASSWORD=" + pw, "PGCONNECT_TIMEOUT=1"}, up.PSQLArgs(*got.Connection, caFile, "-X", "-Atc", "select 1")...)
				if code, _ := s.st.Sim.Exec(ctx, up.LaptopHost, argv, nil, nil, nil); code == 0 {
					break
				}
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("service %d: no verify-full query within 30s", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		create = append(create, time.Since(t0))
		ref = append(ref, bareStart(b))
	}
	report("create → first verify-full query", create, "bare initdb+start+query", ref)
	b.ReportMetric(float64(pct(create, 50).Microseconds())/1000, "p50-ms")
}

// bareStart times initdb, start and a first query of the same PostgreSQL,
// as the postgres user, with no Moat in between.
func bareStart(b *testing.B) time.Duration {
	bin, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		b.Fatal(err)
	}
	bindir := strings.TrimSpace(string(bin))
	dir, _ := os.MkdirTemp("/tmp", "moat-bench-pg-")
	os.Chmod(dir, 0o777)
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	run := func(args ...string) {
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t0 := time.Now()
	run(bindir+"/initdb", "-D", data, "-A", "trust", "--no-sync", "-U", "postgres")
	run(bindir+"/pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-o", "-c listen_addresses='' -c unix_socket_directories="+dir, "-w", "start")
	run("psql", "-h", dir, "-U", "postgres", "-Atc", "select 1")
	d := time.Since(t0)
	run(bindir+"/pg_ctl", "-D", data, "-m", "immediate", "stop")
	return d
}

func report(name string, got []time.Duration, refName string, ref []time.Duration) {
	fmt.Fprintf(os.Stderr, "\n%-36s p50 %8s  p99 %8s  (n=%d)\n", name, pct(got, 50).Round(100*time.Microsecond), pct(got, 99).Round(100*time.Microsecond), len(got))
	fmt.Fprintf(os.Stderr, "%-36s p50 %8s  p99 %8s\n", "reference: "+refName, pct(ref, 50).Round(100*time.Microsecond), pct(ref, 99).Round(100*time.Microsecond))
	fmt.Fprintf(os.Stderr, "%-36s %.2fx (p50)\n", "ratio", float64(pct(got, 50))/float64(pct(ref, 50)))
}
