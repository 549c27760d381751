package pgstat_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/metrics/pgstat"
	"github.com/moatdb/moat/internal/pgtest"
	"github.com/moatdb/moat/internal/testenv"
)

// startReplica streams a hot standby from srv (pg_basebackup -R) and
// returns its address; it is stopped when t ends.
func startReplica(t *testing.T, srv *pgtest.Server) string {
	t.Helper()
	bin := testenv.MustHavePostgres(t)
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	dir, err := os.MkdirTemp("", "pgstat-replica-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(srv.Addr())
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("pg_basebackup", "-D", data, "-R", "-X", "stream", "-c", "fast",
		"-h", host, "-p", port, "-U", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, rport, _ := net.SplitHostPort(addr)
	var log strings.Builder
	pg := run("postgres", "-D", data, "-p", rport, "-k", dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "hot_standby=on", "-c", "max_connections=400", "-c", "fsync=off", "-c", "logging_collector=off")
	pg.Stdout, pg.Stderr = &log, &log
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pg.Process.Signal(syscall.SIGQUIT) // immediate shutdown
		done := make(chan struct{})
		go func() { pg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			pg.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("replica log:\n%s", log.String())
		}
	})
	return addr
}

func TestScrapeReplica(t *testing.T) {
	srv := pgtest.Shared(t)
	monPrimary := monitorDSN(t, srv, "postgres")
	replica := startReplica(t, srv)
	monReplica := fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", pgstat.MonitorRole, replica)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	waitFor(t, func() (bool, string) {
		s, err := pgstat.ScrapeDSN(ctx, monReplica, 2*time.Second)
		return err == nil && s.Role == pgstat.RoleReplica && s.Replication.IsReplica,
			fmt.Sprintf("replica scrape: role %q, replication %+v, err %v; want a replica", s.Role, s.Replication, err)
	})
	// A write on the primary reaches the replica; the primary lists it.
	conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS replica_probe (x int); INSERT INTO replica_probe VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() (bool, string) {
		s, err := pgstat.ScrapeDSN(ctx, monPrimary, 2*time.Second)
		if err != nil {
			t.Fatalf("primary scrape: %v", err)
		}
		ok := len(s.Replicas) == 1 && s.Replicas[0].State == "streaming" && s.Replicas[0].CurrentWALLSNBytes > 0
		return ok, fmt.Sprintf("primary's replicas %+v; want one streaming, with its WAL position", s.Replicas)
	})
	s, err := pgstat.ScrapeDSN(ctx, monReplica, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Replication.LagSeconds < 0 || s.Replication.LastReplaySeconds < 0 {
		t.Errorf("replica's replication %+v: negative ages", s.Replication)
	}
	if len(s.Databases) == 0 {
		t.Error("replica scrape has no databases")
	}
}
