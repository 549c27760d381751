package pgtest_test

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/pgtest"
)

// TestStopsWhenTestBinaryDies runs this test binary again in a mode that
// starts a server and SIGKILLs itself, and checks that the server goes away.
func TestStopsWhenTestBinaryDies(t *testing.T) {
	if os.Getenv("PGTEST_DIE") == "1" {
		s := pgtest.Start(t)
		os.Stdout.WriteString("addr=" + s.Addr() + "\n")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		return
	}
	t.Parallel()
	pgtest.Shared(t) // skips without PostgreSQL
	cmd := exec.Command(os.Args[0], "-test.run=^TestStopsWhenTestBinaryDies$")
	cmd.Env = append(os.Environ(), "PGTEST_DIE=1")
	out, _ := cmd.Output()
	_, addr, ok := strings.Cut(string(out), "addr=")
	if !ok {
		t.Fatalf("child printed no address:\n%s", out)
	}
	addr, _, _ = strings.Cut(addr, "\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("postgres at %s still listening 10s after its test binary died", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
