package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/domain"
)

// One operating-system identity per node (design 0018). A root agent
// runs each node's PostgreSQL as the node's own system user,
// domain.NodeUser(node ID), with a group of the same name, made with the
// node and removed when it is wiped. Its data directory and TLS keys are
// its own, mode 0700/0600, and its archive socket serves it alone; the
// node's directory is root's, mode 0710, group the node's: no other
// node's user can even enter it.
//
// An agent that is not root runs every node as itself: there is nobody
// to separate.

// owner is who owns a file: uid and gid, -1 for "unchanged" (an agent
// that is not root changes no owner).
type owner struct{ uid, gid int }

// unchanged is the owner of files an agent that is not root writes.
var unchanged = owner{-1, -1}

// chown gives p to o.
func (o owner) chown(p string) error {
	if o.uid < 0 && o.gid < 0 {
		return nil
	}
	return os.Chown(p, o.uid, o.gid)
}

// users makes, finds and removes the nodes' users.
type users interface {
	// Ensure makes the user name and its group if missing, and returns
	// it.
	Ensure(name string) (owner, error)
	// Lookup returns the user name; an error if it does not exist.
	Lookup(name string) (owner, error)
	// Remove removes the user name and its group; no error if absent.
	Remove(name string) error
}

// hostUsers are the host's users, made with useradd and removed with
// userdel (they lock /etc/passwd themselves; mu only avoids their
// "try again later" between the agent's own nodes).
type hostUsers struct{ mu sync.Mutex }

// selfUsers stand for the users of an agent that is not root: every
// node is the agent's own, and no owner changes.
type selfUsers struct{}

func (selfUsers) Ensure(string) (owner, error) { return unchanged, nil }
func (selfUsers) Lookup(string) (owner, error) { return unchanged, nil }
func (selfUsers) Remove(string) error          { return nil }

// hostUsersFor returns the users of this process: the host's when root.
func hostUsersFor() users {
	if os.Geteuid() == 0 {
		return &hostUsers{}
	}
	return selfUsers{}
}

func (h *hostUsers) Lookup(name string) (owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return owner{}, fmt.Errorf("node user: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid == 0 {
		return owner{}, fmt.Errorf("node user %s has uid %q gid %q", name, u.Uid, u.Gid)
	}
	return owner{uid, gid}, nil
}

func (h *hostUsers) Ensure(name string) (owner, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o, err := h.Lookup(name); err == nil {
		return o, nil
	}
	shell := "/usr/sbin/nologin"
	if _, err := os.Stat(shell); err != nil {
		shell = "/bin/false"
	}
	if err := runAdmin("useradd", "--system", "--user-group",
		"--no-create-home", "--home-dir", "/nonexistent", "--shell", shell,
		"--comment", "Moat node", name); err != nil {
		return owner{}, fmt.Errorf("make node user %s: %w", name, err)
	}
	return h.Lookup(name)
}

func (h *hostUsers) Remove(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := user.Lookup(name); err == nil {
		if err := runAdmin("userdel", name); err != nil {
			return fmt.Errorf("remove node user %s: %w", name, err)
		}
	}
	// userdel removes the user's own group (USERGROUPS_ENAB); a group
	// left behind (another login.defs) goes too.
	if _, err := user.LookupGroup(name); err == nil {
		if err := runAdmin("groupdel", name); err != nil {
			return fmt.Errorf("remove node group %s: %w", name, err)
		}
	}
	return nil
}

// runAdmin runs one of shadow's tools, retrying while /etc/passwd or
// /etc/group is locked by another process (exit status 10 for useradd,
// groupadd and userdel alike).
func runAdmin(name string, args ...string) error {
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(name, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil {
			return nil
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 10 && attempt < 20 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out.Bytes()))
	}
}

// osUser is the node's user: the one its PostgreSQL runs as (when the
// agent is root).
func (n *node) osUser() string { return domain.NodeUser(n.id) }

// owner returns the node user's owner (unchanged when the agent is not
// root).
func (n *node) owner() (owner, error) { return n.a.plat.users.Lookup(n.osUser()) }

// writeAs writes data to path atomically with mode perm, owned by o.
func writeAs(path string, data []byte, perm os.FileMode, o owner) error {
	if err := atomicfile.WriteFile(path, data, perm); err != nil {
		return err
	}
	return o.chown(path)
}

// writeOwned writes data to path atomically with mode perm, owned by the
// node's user.
func (n *node) writeOwned(path string, data []byte, perm os.FileMode) error {
	o, err := n.owner()
	if err != nil {
		return err
	}
	return writeAs(path, data, perm, o)
}

// RemoveNodeUsers removes the users of the nodes under an agent's data
// directory (whose postmasters must have stopped): for `moat down`, which
// leaves the nodes' files but no user behind. The files are given to root
// first, so that no later user made with a freed uid or gid owns them (a
// later agent gives them to the node's new user, see postgres.Init). It
// does nothing when this process is not root.
func RemoveNodeUsers(dataDir string) error {
	us := hostUsersFor()
	if _, ok := us.(selfUsers); ok {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(dataDir, "nodes"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove node users: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !nodeIDRE.MatchString(e.Name()) {
			continue
		}
		err := filepath.WalkDir(filepath.Join(dataDir, "nodes", e.Name()), func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 0, 0)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("give node %s's files to root: %w", e.Name(), err))
			continue
		}
		errs = append(errs, us.Remove(domain.NodeUser(e.Name())))
	}
	return errors.Join(errs...)
}
