package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/netnstest"
	"github.com/moatdb/moat/internal/postgres"
	"github.com/moatdb/moat/internal/testenv"
)

// TestNodeUsersSeparate: two tenants' nodes on one host run as two users,
// and neither can read the other's data directory or TLS key, nor enter
// its node directory; a wiped node's user is gone.
func TestNodeUsersSeparate(t *testing.T) {
	t.Parallel()
	requirePostgres(t)
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "setpriv")
	pairs := map[string]*netnstest.Pair{"prj-a": netnstest.NewPair(t, 1), "prj-b": netnstest.NewPair(t, 1)}
	dir := dataDir(t)
	cs := newCerts(t)
	const host, idA, idB = "host-users", "nod-users-a", "nod-users-b"
	node := func(id, proj string, port int) apitype.NodeDesired {
		pair := pairs[proj]
		return apitype.NodeDesired{
			NodeID: id, ServiceID: "svc-" + id, ProjectID: proj, Role: apitype.RolePrimary, State: stateCreating,
			Namespace: pair.Server.Name, Address: pair.ServerV4.String(), Port: port,
			Database: postgres.Database, AdminUser: postgres.AdminUser, AdminVerifier: scramVerifier(t, password), ReplicationUser: replUser,
			TLS: cs.node(t, id, id+".svc.test", pair.ServerV4.String()), AllowlistRevision: 1,
		}
	}
	src := newFakeSource(host)
	src.update(func(d *apitype.HostDesired) {
		d.Nodes = []apitype.NodeDesired{node(idA, "prj-a", 5432), node(idB, "prj-b", 5433)}
	})
	startAgent(t, Config{Host: host, Source: src, DataDir: dir, Logger: testLogger(t), NoSync: true}, nil)
	src.waitReport(t, idA, 60*time.Second, running(1))
	src.waitReport(t, idB, 60*time.Second, running(1))

	nodeDir := func(id string) string { return filepath.Join(dir, "nodes", id) }
	userA, userB := domain.NodeUser(idA), domain.NodeUser(idB)
	for _, c := range []struct {
		path string
		user string
		mode os.FileMode
	}{
		{filepath.Join(nodeDir(idB), "pgdata"), userB, 0o700 | os.ModeDir},
		{filepath.Join(nodeDir(idB), "tls"), userB, 0o700 | os.ModeDir},
		{filepath.Join(nodeDir(idB), "tls", "server.key"), userB, 0o600},
		{filepath.Join(nodeDir(idA), "tls", "server.key"), userA, 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		owner, err := hostUsersFor().Lookup(c.user)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != owner.uid || fi.Mode() != c.mode {
			t.Errorf("%s: owner %d mode %v, want %s (%d) and %v", c.path, st.Uid, fi.Mode(), c.user, owner.uid, c.mode)
		}
	}

	// asUser runs argv as user (its groups too) and returns its output.
	asUser := func(user string, argv ...string) (string, error) {
		o, err := hostUsersFor().Lookup(user)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(o.uid), "--regid=" + strconv.Itoa(o.gid), "--init-groups", "--"}, argv...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		return out.String(), err
	}
	// A reads its own key: the command works.
	if out, err := asUser(userA, "cat", filepath.Join(nodeDir(idA), "tls", "server.key")); err != nil || !strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("A reading its own key: %v: %s", err, out)
	}
	for _, argv := range [][]string{
		{"ls", filepath.Join(nodeDir(idB), "pgdata")},
		{"cat", filepath.Join(nodeDir(idB), "pgdata", "PG_VERSION")},
		{"cat", filepath.Join(nodeDir(idB), "tls", "server.key")},
		{"ls", nodeDir(idB)},
	} {
		out, err := asUser(userA, argv...)
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("A: %s = %v %q, want permission denied", strings.Join(argv, " "), err, out)
		}
	}

	// B deleted: its user goes with its files.
	src.update(func(d *apitype.HostDesired) { d.Nodes[1].State = stateDeleting })
	src.waitReport(t, idB, 60*time.Second, func(r apitype.NodeReport) bool { return r.State == apitype.NodeReportWiped })
	if _, err := hostUsersFor().Lookup(userB); err == nil {
		t.Errorf("user %s still exists after its node was wiped", userB)
	}
	if _, err := hostUsersFor().Lookup(userA); err != nil {
		t.Errorf("user %s of the running node: %v", userA, err)
	}
}

// TestRemoveNodeUsers: `moat down` leaves a node's files to root and
// removes its user.
func TestRemoveNodeUsers(t *testing.T) {
	t.Parallel()
	testenv.MustHaveRoot(t)
	testenv.MustHaveCommand(t, "useradd")
	dir := t.TempDir()
	id := "nod-down-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	users := hostUsersFor()
	o, err := users.Ensure(domain.NodeUser(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { users.Remove(domain.NodeUser(id)) })
	file := filepath.Join(dir, "nodes", id, "pgdata", "PG_VERSION")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, filepath.Dir(file)} {
		if err := o.chown(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveNodeUsers(dir); err != nil {
		t.Fatalf("RemoveNodeUsers: %v", err)
	}
	if _, err := users.Lookup(domain.NodeUser(id)); err == nil {
		t.Errorf("user %s still exists", domain.NodeUser(id))
	}
	for _, p := range []string{file, filepath.Dir(file)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s is %d:%d after down, want root's", p, st.Uid, st.Gid)
		}
	}
}
