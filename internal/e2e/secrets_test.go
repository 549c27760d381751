package e2e

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/up"
)

// TestNoSecretOnDisk runs a stack as moat up does, creates a service, a
// project token, an agent token, a console link and a support grant, and
// then walks the whole data directory (control plane, every host's agent,
// its nodes, the backup store, the agents' logs) and the control plane's
// log:
//   - no file holds a secret the scenario produced (the admin password,
//     the tokens' secrets, the console link, the support role's password,
//     the service's backup authentication key), nor the agent-state key
//     outside its own file;
//   - nothing root owns is readable or writable by other users
//     (directories may be traversable), but for the moat binary the nodes
//     run and the project CA certificate the test wrote;
//   - a node user's files are all inside that node's directories (its
//     node directory and its volume), readable by that user alone.
func TestNoSecretOnDisk(t *testing.T) {
	t.Parallel()
	var cpLog syncBuffer
	e := startStack(t, "", "", func(c *up.Config) {
		c.ControlPlane.Logger = slog.New(slog.NewJSONHandler(&cpLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	e.newProject("secrets")
	ctx := e.ctx()
	svc, pw := e.createService("vault", 1)
	node := svc.NodeList[0].ID
	nodeDir := e.nodeDir(node)
	host := filepath.Base(filepath.Dir(filepath.Dir(nodeDir)))

	secrets := map[string]string{"admin password": pw}
	tok, err := e.op.CreateToken(ctx, e.project, apitype.TokenCreate{Role: "admin", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	secrets["project token"] = tok.Secret
	at, err := e.op.CreateAgentToken(ctx, host, "spare")
	if err != nil {
		t.Fatal(err)
	}
	secrets["agent token"] = at.Secret
	link, err := e.op.CreateConsoleLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	secrets["console link"] = u.Query().Get("code")
	if _, err := e.op.CreateSupportGrant(ctx, e.project, apitype.SupportGrantCreate{Reason: "ticket 1", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	// What only the host's agent receives: the support role's password and
	// the service's backup authentication key.
	agent, err := e.stack.Client(up.TokenFile(host))
	if err != nil {
		t.Fatal(err)
	}
	var nd apitype.NodeDesired
	waitFor(t, 30*time.Second, func() bool {
		hd, err := agent.HostDesired(ctx, host, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range hd.Nodes {
			if n.NodeID == node && n.Ops != nil && n.Ops.Support != nil {
				nd = n
				return true
			}
		}
		return false
	})
	if nd.Ops == nil {
		t.Fatal("the support grant never reached the node's desired state")
	}
	secrets["support password"] = nd.Ops.Support.Password
	if len(nd.BackupAuthKey) == 0 {
		t.Fatal("the node's desired state has no backup authentication key")
	}
	secrets["backup authentication key"] = string(nd.BackupAuthKey)
	secrets["backup authentication key (base64)"] = base64.StdEncoding.EncodeToString(nd.BackupAuthKey)
	// The agent has created the support role: what it wrote is on disk.
	mgmt := e.nodeConn(node)
	waitFor(t, 30*time.Second, func() bool {
		var n int
		return mgmt.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", nd.Ops.Support.Role).Scan(&n) == nil && n == 1
	})
	for name, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("%s %q is too short to search for", name, s)
		}
	}
	stateKey, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(nodeDir)), "agent-state.key"))
	if err != nil || len(stateKey) < 16 {
		t.Fatalf("agent-state.key: %q, %v", stateKey, err)
	}
	nu, err := user.Lookup(domain.NodeUser(node))
	if err != nil {
		t.Fatal(err)
	}
	nodeUID, _ := strconv.Atoi(nu.Uid)
	nodeGID, _ := strconv.Atoi(nu.Gid)
	volDir := filepath.Join(filepath.Dir(filepath.Dir(nodeDir)), "volumes", node)

	files := 0
	err = filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(e.dir, path)
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode()
		inNode := strings.HasPrefix(path, nodeDir+string(filepath.Separator)) || strings.HasPrefix(path, volDir+string(filepath.Separator))
		switch {
		case mode&fs.ModeSymlink != 0 || mode&fs.ModeSocket != 0:
			return nil
		case int(st.Uid) == nodeUID:
			if !inNode {
				t.Errorf("%s belongs to node %s's user but is outside its node directory", rel, node)
			}
			if mode.Perm()&0o077 != 0 {
				t.Errorf("%s (node %s's user) is mode %v, want its user's alone", rel, node, mode.Perm())
			}
		case st.Uid == 0:
			// The moat binary the nodes' archive_command runs (no secret),
			// and the project CA the test wrote for psql.
			inBin, _ := filepath.Match(filepath.Join(up.AgentsDir, "*", "bin"), rel)
			binFile, _ := filepath.Match(filepath.Join(up.AgentsDir, "*", "bin", "*"), rel)
			exempt := inBin || binFile || rel == filepath.Base(e.caFile)
			// Group access only for the node's own group, inside its node.
			group := mode.Perm() & 0o060
			if group != 0 && int(st.Gid) == nodeGID && (path == nodeDir || inNode || path == volDir || strings.HasPrefix(path, volDir+"/")) {
				group = 0
			}
			if !exempt && (mode.Perm()&0o006 != 0 || group != 0) {
				t.Errorf("root's %s is mode %v (group %d): readable or writable by other users", rel, mode.Perm(), st.Gid)
			}
		default:
			t.Errorf("%s is owned by uid %d, neither root nor the node's user", rel, st.Uid)
		}
		if !mode.IsRegular() {
			return nil
		}
		files++
		// A node's encrypted volume (sparse, 10 GiB) and its FUSE view are
		// not read: the file system inside is walked at its mount point.
		if strings.HasSuffix(path, ".luks") || strings.Contains(path, ".luks.fuse"+string(filepath.Separator)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the %s", rel, name)
			}
		}
		if filepath.Base(path) != "agent-state.key" && bytes.Contains(b, bytes.TrimSpace(stateKey)) {
			t.Errorf("%s holds the agent-state key", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Errorf("walked %d files, want the whole stack's", files)
	}
	// The agents' logs are files of the data directory (walked above); the
	// control plane's is this test's.
	if cpLog.String() == "" {
		t.Errorf("the control plane logged nothing to search")
	}
	for name, s := range secrets {
		if strings.Contains(cpLog.String(), s) {
			t.Errorf("the control plane's log holds the %s", name)
		}
	}
}
