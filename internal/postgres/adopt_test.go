package postgres

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/testenv"
)

// TestAdoptOtherUsersCluster: a running cluster made as the postgres
// user (a node made before nodes had their own users) is given to the
// node's user by Init: its server stops, every file changes owner, and
// it starts again as that user with its data.
func TestAdoptOtherUsersCluster(t *testing.T) {
	requirePostgres(t)
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "useradd")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "moat-t-" + strings.ToLower(rand.Text()[:10])
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	old, _ := primary(t, ctx, "adopt", nil) // as postgres
	cfg := old.Config()
	cfg.User = name
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Init(ctx); err != nil {
		t.Fatalf("Init over another user's cluster: %v", err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{cfg.DataDir, cfg.TLSDir, cfg.SocketDir} {
		filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
			var st syscall.Stat_t
			if err == nil && syscall.Lstat(p, &st) == nil && st.Uid != in.cred.Uid {
				t.Errorf("%s is uid %d's, want %s's (%d)", p, st.Uid, name, in.cred.Uid)
			}
			return nil
		})
	}
	pid, ok := in.pid()
	if !ok {
		t.Fatal("no postmaster after Start")
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil || st.Uid != in.cred.Uid {
		t.Errorf("postmaster %d runs as uid %d (%v), want %s's %d", pid, st.Uid, err, name, in.cred.Uid)
	}
	conn, err := in.connect(ctx, Database)
	if err != nil {
		t.Fatalf("management connection after the adoption: %v", err)
	}
	defer conn.Close(ctx)
	var admin bool
	if err := conn.QueryRow(ctx, "SELECT true FROM pg_roles WHERE rolname = $1", AdminUser).Scan(&admin); err != nil || !admin {
		t.Errorf("the adopted cluster lost its admin role: %v", err)
	}
}
