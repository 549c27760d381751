package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/archive"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
	"github.com/moatdb/moat/internal/postgres"
)

// Backups on a node. A node never opens the backup store (a directory
// only root reads and writes): the agent serves each node a Unix socket,
// nodes/<id>/archive.sock, that only the node's OS user may connect to.
// PostgreSQL's archive_command, `moat wal-push --agent`, hands each WAL
// file to the agent over it, and the agent archives it into the node's
// service's prefix with the service's authentication key
// (NodeDesired.BackupAuthKey, held in memory). Base backups and WAL
// switches are tasks the agent runs itself. A restored primary starts
// from the source service's base backup (fetched and decrypted by the
// agent) and replays its WAL through `moat wal-fetch --agent`: the agent
// checks each file's record with the source's authentication key and
// decrypts it with the source's private key, neither of which is written
// to the node's files.
//
// Files under the node's directory:
//
//	archive.sock   the node's archive socket (0600, the node's user)
//	restored       written once the restored server promoted
const (
	archiveSocketFile = "archive.sock"
	restoreDirName    = "restore" // what an older agent wrote a restore's key into; removed
	// restoredMarker, in the node's directory, says the restore promoted.
	restoredMarker = "restored"
	// archiveTimeout bounds how long a committed transaction waits in
	// an unarchived WAL segment when the server is quiet.
	archiveTimeout = "5min"
	// switchWait bounds a WAL switch task's wait for the archiver.
	switchWait = 2 * time.Minute
	// baseBackupTimeout bounds a base backup (pg_basebackup -X none waits
	// for its WAL to be archived, forever if archiving is broken).
	baseBackupTimeout = 12 * time.Hour
)

// errWaiting marks an apply that cannot go on until the control plane
// sends more (a restore's key): retried every waitRetry, never reported
// as a failure.
var errWaiting = errors.New("waiting for the control plane")

const waitRetry = 200 * time.Millisecond

// moatBinary returns the path of the moat binary the nodes' users run
// for archive_command and restore_command: a copy of Config.MoatBinary
// under DataDir/bin, a directory that user can reach (the binary itself
// may live under /root).
func (a *Agent) moatBinary() (string, error) {
	a.binMu.Lock()
	defer a.binMu.Unlock()
	if a.binPath != "" {
		return a.binPath, nil
	}
	src := a.cfg.MoatBinary
	if src == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find the moat binary: %w", err)
		}
		if strings.HasSuffix(exe, ".test") {
			// PostgreSQL would run a test binary as its archive_command.
			return "", fmt.Errorf("the agent runs in the test binary %s: set Config.MoatBinary to a moat binary (or a test binary that runs as moat when called so)", exe)
		}
		src = exe
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read the moat binary: %w", err)
	}
	dir := filepath.Join(a.cfg.DataDir, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "moat")
	if old, err := os.ReadFile(dst); err != nil || sha256.Sum256(old) != sha256.Sum256(b) {
		if err := atomicfile.WriteFile(dst, b, 0o755); err != nil {
			return "", fmt.Errorf("install the moat binary for postgres: %w", err)
		}
	}
	a.binPath = dst
	return dst, nil
}

// archiveConfig is the node's archive configuration, or nil when it does
// not archive.
func (n *node) archiveConfig(want apitype.NodeDesired) (*archive.Config, error) {
	ar := want.Archive
	if ar == nil {
		return nil, nil
	}
	if want.BackupPublicKeyPEM == "" {
		return nil, errors.New("archive: no backup public key")
	}
	if !filepath.IsAbs(ar.StoreDir) || strings.ContainsAny(ar.StoreDir, "%'\n") {
		return nil, fmt.Errorf("archive: store directory %q: want an absolute path without %%, ' or newlines", ar.StoreDir)
	}
	if len(want.BackupAuthKey) == 0 {
		return nil, errors.New("archive: no backup authentication key")
	}
	c := &archive.Config{
		Version: archive.ConfigVersion, Store: archive.StoreConfig{Dir: ar.StoreDir},
		Region: ar.Region, Service: want.ServiceID, Timeline: 1,
		PublicKey: want.BackupPublicKeyPEM, PGBinDir: n.a.cfg.PGBinDir, AuthKey: want.BackupAuthKey,
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return c, nil
}

// ensureStore makes the store directory root's alone (0700): no node's
// user may read or write it, whatever an older agent left there.
func (a *Agent) ensureStore(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(dir, 0, 0); err != nil {
			return fmt.Errorf("backup store: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("backup store: %w", err)
	}
	return nil
}

// openStore opens the store for the agent's writes.
func (a *Agent) openStore(dir string) (objstore.Store, error) {
	if err := a.ensureStore(dir); err != nil {
		return nil, err
	}
	return objstore.NewDir(dir)
}

// nodeUser returns the uid and gid the node's PostgreSQL runs as, the
// only user (besides root) its archive socket serves: the node's own user
// (osuser.go), or the agent's when it is not root.
func (n *node) nodeUser() (int, int, error) {
	o, err := n.owner()
	if err != nil {
		return 0, 0, err
	}
	if o == unchanged {
		return os.Getuid(), os.Getgid(), nil
	}
	return o.uid, o.gid, nil
}

// archiveSocket is a node's archive socket and what it serves: the
// node's archiving and its restore, each nil when there is none.
type archiveSocket struct {
	mu      sync.Mutex
	l       net.Listener
	served  chan struct{}
	archive *archive.Config
	restore *archive.Config
}

// serveArchive sets what the node's socket serves, starting it if needed,
// and returns its path.
func (n *node) serveArchive(cfg, restore *archive.Config) (string, error) {
	s := &n.sock
	s.mu.Lock()
	defer s.mu.Unlock()
	s.archive, s.restore = cfg, restore
	path := filepath.Join(n.dir, archiveSocketFile)
	if s.l != nil {
		return path, nil
	}
	uid, gid, err := n.nodeUser()
	if err != nil {
		return "", err
	}
	l, err := archive.Listen(path, uid, gid)
	if err != nil {
		return "", err
	}
	srv := &archive.Server{
		Archive: func() *archive.Config { s.mu.Lock(); defer s.mu.Unlock(); return s.archive },
		Restore: func() *archive.Config { s.mu.Lock(); defer s.mu.Unlock(); return s.restore },
		PeerUID: uid, Logger: n.a.log.With("node", n.id),
	}
	s.l, s.served = l, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := srv.Serve(l); err != nil {
			n.a.log.Error("archive socket", "node", n.id, "err", err)
		}
	}(s.served)
	return path, nil
}

// endRestore stops serving the node's restore (its keys are forgotten).
func (n *node) endRestore() {
	n.sock.mu.Lock()
	n.sock.restore = nil
	n.sock.mu.Unlock()
}

// closeArchive closes the node's archive socket and waits for the
// requests under way.
func (n *node) closeArchive() {
	s := &n.sock
	s.mu.Lock()
	l, served := s.l, s.served
	s.l, s.archive, s.restore = nil, nil, nil
	s.mu.Unlock()
	if l != nil {
		l.Close()
		<-served
	}
}

// restoring returns want.Restore while the node is still to be restored:
// until promoted has seen the server out of recovery and written the
// restored marker. (A missing recovery.signal does not mean promoted:
// PostgreSQL removes it as it selects the new timeline, then still runs
// restore_command for the parent's history file before it promotes.)
func (n *node) restoring(want apitype.NodeDesired, primary bool) *apitype.NodeRestore {
	if want.Restore == nil || !primary || exists(filepath.Join(n.dir, restoredMarker)) {
		return nil
	}
	return want.Restore
}

// resumeRecovery puts recovery.signal back in a restored data directory
// whose server stopped between removing it and promoting: started without
// it, PostgreSQL would run crash recovery, stay on the source's timeline
// and replay past a point-in-time target.
func (n *node) resumeRecovery() error {
	sig := filepath.Join(n.dataDir(), "recovery.signal")
	if !exists(filepath.Join(n.dataDir(), "PG_VERSION")) || exists(sig) || (n.inst != nil && n.inst.Running()) {
		return nil
	}
	n.a.log.Warn("restore: the server stopped before promoting; resuming archive recovery", "node", n.id)
	return n.writeOwned(sig, nil, 0o600)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// backupSettings serves the node's archive socket (archiving, and the
// restore's keys) and returns the server settings that use it.
func (n *node) backupSettings(want apitype.NodeDesired, restore *apitype.NodeRestore) (map[string]string, *postgres.Restore, error) {
	cfg, err := n.archiveConfig(want)
	if err != nil || (cfg == nil && restore == nil) {
		return nil, nil, err
	}
	bin, err := n.a.moatBinary()
	if err != nil {
		return nil, nil, err
	}
	o, err := n.owner()
	if err != nil {
		return nil, nil, err
	}
	if err := n.ensureDirs(o); err != nil {
		return nil, nil, err
	}
	var rc *archive.Config
	if restore != nil {
		if rc, err = n.restoreConfig(want, restore); err != nil {
			return nil, nil, err
		}
	}
	if cfg != nil {
		if cfg.ObjectStore, err = n.a.openStore(cfg.Store.Dir); err != nil {
			return nil, nil, err
		}
	}
	sock, err := n.serveArchive(cfg, rc)
	if err != nil {
		return nil, nil, err
	}
	set := map[string]string{}
	if cfg != nil {
		set["archive_mode"] = "on"
		set["archive_command"] = shellQuote(bin) + " wal-push --agent " + shellQuote(sock) + " %p"
		set["archive_timeout"] = archiveTimeout
	}
	if restore == nil {
		return set, nil, nil
	}
	set["restore_command"] = shellQuote(bin) + " wal-fetch --agent " + shellQuote(sock) + " %f %p"
	set["recovery_target_action"] = "promote"
	if t := restore.ToTime; t != nil {
		set["recovery_target_time"] = t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	}
	pr := &postgres.Restore{Tar: func(ctx context.Context, w io.Writer) error {
		bs, err := archive.ListBackups(ctx, rc)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(bs, func(b archive.Backup) bool { return b.Label == restore.BackupLabel })
		if i < 0 {
			return fmt.Errorf("base backup %s of service %s is not in the store", restore.BackupLabel, restore.SourceServiceID)
		}
		return archive.FetchBaseBackup(ctx, rc, bs[i], w)
	}}
	return set, pr, nil
}

// restoreConfig returns the restore's configuration: the source's store
// prefix, its private key and the authentication key derived from it,
// all in memory (the agent serves the restore's WAL over the node's
// socket; no key is written where the node could read it).
func (n *node) restoreConfig(want apitype.NodeDesired, r *apitype.NodeRestore) (*archive.Config, error) {
	if want.Archive == nil {
		return nil, errors.New("restore: no archive store in the desired state")
	}
	rc := &archive.Config{
		Version: archive.ConfigVersion, Store: archive.StoreConfig{Dir: want.Archive.StoreDir},
		Region: want.Archive.Region, Service: r.SourceServiceID, Timeline: 1,
		PublicKey: r.SourcePublicKeyPEM, PGBinDir: n.a.cfg.PGBinDir,
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if r.PrivateKeyPEM == "" {
		return nil, fmt.Errorf("restore: %w for the source's backup key", errWaiting) // see abandonRestore
	}
	var err error
	if rc.PrivateKey, err = backup.ParsePrivateKeyPEM([]byte(r.PrivateKeyPEM)); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if rc.AuthKey, err = backup.AuthKey([]byte(r.PrivateKeyPEM)); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if rc.ObjectStore, err = n.a.openStore(rc.Store.Dir); err != nil {
		return nil, err
	}
	return rc, nil
}

// promoted returns nil once the restored server has replayed the archive
// to its target, promoted itself and checkpointed on its new timeline:
// then it marks the restore done and deletes the restore's key. It
// returns errWaiting while the server replays (the node's worker stays
// free for firewall changes), and an error if the server stopped or the
// checkpoint failed; the restore is done only after that checkpoint, so
// the next apply tries it again.
func (n *node) promoted(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err := n.inst.InRecovery(cctx)
	if err != nil || rec {
		if !n.inst.Running() {
			return fmt.Errorf("postgres exited during the restore's recovery: %s", n.logTail(1500))
		}
		if err != nil {
			return fmt.Errorf("restore: %w: the server does not answer yet: %w", errWaiting, err)
		}
		return fmt.Errorf("restore: %w: the server is replaying the archive", errWaiting)
	}
	// A checkpoint on the new timeline first: base backups of the
	// restored service then start on it, and a crash recovers from it
	// rather than from the restore's start.
	if err := n.inst.Checkpoint(cctx); err != nil {
		return fmt.Errorf("checkpoint after the restore: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(n.dir, restoredMarker), []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		return fmt.Errorf("mark the restore done: %w", err)
	}
	n.a.log.Info("restore finished: promoted", "node", n.id)
	n.endRestore()
	return nil
}

// abandonRestore is a restore without its key: not released yet, or taken
// back (the restore failed, its source was deleted). No key of the source
// stays on the node and no server replays with it; the node waits.
func (n *node) abandonRestore(ctx context.Context) error {
	n.endRestore()
	if err := os.RemoveAll(filepath.Join(n.dir, restoreDirName)); err != nil {
		return fmt.Errorf("remove the restore key: %w", err)
	}
	if exists(filepath.Join(n.dataDir(), "PG_VERSION")) {
		inst := n.inst
		if inst == nil {
			var err error
			if inst, err = n.bareInstance(); err != nil {
				return err
			}
			defer n.closeInstance(inst)
		}
		if inst.Running() {
			n.a.log.Warn("restore withdrawn: stopping the server in recovery", "node", n.id)
			if err := inst.Stop(ctx); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("restore: %w for the source's backup key (released after the source's WAL switch)", errWaiting)
}

// logTail returns the end of the node's postgres.log.
func (n *node) logTail(max int) string {
	b, err := os.ReadFile(n.logFile())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ---- tasks ----

// startTasks starts the tasks of want not started yet and forgets those
// no longer in it. Tasks run beside the node's worker, each with a
// context of its own that stopTasks cancels.
func (n *node) startTasks(ctx context.Context, want apitype.NodeDesired) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tasks == nil {
		n.tasks = map[string]*apitype.TaskReport{}
		n.running = map[string]context.CancelFunc{}
	}
	keep := map[string]bool{}
	for _, t := range want.Tasks {
		keep[t.ID] = true
		if _, ok := n.tasks[t.ID]; ok {
			continue
		}
		n.tasks[t.ID] = nil
		tctx, cancel := context.WithCancel(ctx)
		n.running[t.ID] = cancel
		n.taskWG.Add(1)
		go func() {
			defer n.taskWG.Done()
			defer cancel()
			rep, done := n.runTask(tctx, want, t)
			n.mu.Lock()
			delete(n.running, t.ID)
			if _, ok := n.tasks[t.ID]; ok && done {
				n.tasks[t.ID] = &rep
			}
			n.mu.Unlock()
			if done {
				n.a.kickReport()
			}
		}()
	}
	for id := range n.tasks {
		if !keep[id] {
			delete(n.tasks, id) // a running one still runs to its end
		}
	}
}

// stopTasks cancels the node's running tasks and waits until they
// returned. Only the worker calls it (and startTasks).
func (n *node) stopTasks() {
	n.mu.Lock()
	for _, cancel := range n.running {
		cancel()
	}
	n.mu.Unlock()
	n.taskWG.Wait()
}

// forgetTasks forgets the tasks started (a wiped node runs those still
// in its desired state again, should it come back).
func (n *node) forgetTasks() {
	n.mu.Lock()
	n.tasks, n.running = nil, nil
	n.mu.Unlock()
}

// taskReports returns the finished tasks' reports. n.mu is held.
func (n *node) taskReportsLocked() []apitype.TaskReport {
	var out []apitype.TaskReport
	for _, r := range n.tasks {
		if r != nil {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b apitype.TaskReport) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// runTask runs t and returns its report; done is false when ctx ended
// first (the task is not done: a restarted agent runs it again).
func (n *node) runTask(ctx context.Context, want apitype.NodeDesired, t apitype.NodeTask) (rep apitype.TaskReport, done bool) {
	if t.Type == apitype.TaskBaseBackup {
		// One base backup at a time; a WAL switch (a restore waits for
		// it) never queues behind one.
		n.taskMu.Lock()
		defer n.taskMu.Unlock()
	}
	if ctx.Err() != nil {
		return rep, false
	}
	rep = apitype.TaskReport{ID: t.ID, State: apitype.TaskDone}
	t0 := time.Now()
	var err error
	rep.Backup, err = n.a.plat.runTask(ctx, n, want, t)
	if ctx.Err() != nil {
		n.a.log.Info("task cancelled", "node", n.id, "task", t.ID, "type", t.Type, "err", err)
		return rep, false
	}
	if err != nil {
		rep.State, rep.Message = apitype.TaskFailed, err.Error()
		n.a.log.Error("task failed", "node", n.id, "task", t.ID, "type", t.Type, "err", err)
	} else {
		n.a.log.Info("task done", "node", n.id, "task", t.ID, "type", t.Type, "duration", time.Since(t0))
	}
	n.observeTask(t, rep)
	return rep, true
}

// task runs t on a real host.
func (n *node) task(ctx context.Context, want apitype.NodeDesired, t apitype.NodeTask) (*apitype.Backup, error) {
	switch t.Type {
	case apitype.TaskBaseBackup:
		return n.baseBackup(ctx, want)
	case apitype.TaskSwitchWAL:
		return nil, n.switchWAL(ctx, want)
	default:
		return nil, fmt.Errorf("unknown task type %q", t.Type)
	}
}

func taskPort(want apitype.NodeDesired) int {
	if want.Port == 0 {
		return 5432
	}
	return want.Port
}

// baseBackup streams an encrypted base backup of the node into the store.
func (n *node) baseBackup(ctx context.Context, want apitype.NodeDesired) (*apitype.Backup, error) {
	cfg, err := n.archiveConfig(want)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errors.New("base backup: the node has no archive")
	}
	if cfg.ObjectStore, err = n.a.openStore(cfg.Store.Dir); err != nil {
		return nil, err
	}
	port := taskPort(want)
	tl, err := currentTimeline(ctx, n.socketDir(), port)
	if err != nil {
		return nil, fmt.Errorf("base backup: %w", err)
	}
	cfg.Timeline = tl
	conn := fmt.Sprintf("host='%s' port=%d user=%s sslmode=disable application_name=moat-base-backup", n.socketDir(), port, postgres.Superuser)
	bctx, cancel := context.WithTimeout(ctx, baseBackupTimeout)
	defer cancel()
	b, err := archive.BaseBackup(bctx, cfg, conn)
	for try := 0; errors.Is(err, archive.ErrExists) && try < 2; try++ {
		// A backup labelled with this second is there (labels are
		// start times to the second): start again in the next second.
		select {
		case <-bctx.Done():
			return nil, bctx.Err()
		case <-time.After(time.Until(time.Now().Truncate(time.Second).Add(time.Second))):
		}
		b, err = archive.BaseBackup(bctx, cfg, conn)
	}
	if err != nil {
		return nil, err
	}
	out := backupReport(b)
	return &out, nil
}

// backupReport is b as a task's report describes it. (The API server has
// its own conversion: archive does not know the wire types.)
func backupReport(b archive.Backup) apitype.Backup {
	return apitype.Backup{Label: b.Label, Timeline: b.Timeline, StartLSN: b.StartLSN, EndLSN: b.EndLSN,
		StartTime: b.StartTime, EndTime: b.EndTime, Size: b.Size, StoredSize: b.StoredSize, KeyFingerprint: b.KeyFingerprint}
}

// currentTimeline is the timeline the server writes WAL on.
func currentTimeline(ctx context.Context, socketDir string, port int) (uint32, error) {
	conn, err := connectSocket(ctx, socketDir, port)
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&name); err != nil {
		return 0, fmt.Errorf("current timeline: %w", err)
	}
	tl, err := strconv.ParseUint(name[:8], 16, 32)
	if err != nil || tl == 0 {
		return 0, fmt.Errorf("current timeline: WAL file name %q", name)
	}
	return uint32(tl), nil
}

// switchWAL closes the current WAL segment and waits until it is in the
// archive: every transaction committed before it is then restorable.
func (n *node) switchWAL(ctx context.Context, want apitype.NodeDesired) error {
	cfg, err := n.archiveConfig(want)
	if err != nil {
		return err
	}
	if cfg == nil {
		return errors.New("switch wal: the node has no archive")
	}
	conn, err := connectSocket(ctx, n.socketDir(), taskPort(want))
	if err != nil {
		return fmt.Errorf("switch wal: %w", err)
	}
	defer closeConn(conn)
	// A commit after the request: a restore to a time before it then
	// finds a commit past its target and stops there, even on a source
	// that wrote nothing since (PostgreSQL refuses to end recovery short
	// of recovery_target_time otherwise).
	if _, err := conn.Exec(ctx, "BEGIN; SELECT pg_current_xact_id(); COMMIT"); err != nil {
		return fmt.Errorf("switch wal: mark the request: %w", err)
	}
	// The segment holding the switch record, closed by it.
	var seg string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		return fmt.Errorf("switch wal: %w", err)
	}
	deadline := time.Now().Add(switchWait)
	for {
		ok, err := archive.Archived(ctx, cfg, seg)
		if err != nil {
			return fmt.Errorf("switch wal: %w", err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			var failed string
			if err := conn.QueryRow(ctx, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver").Scan(&failed); err != nil {
				failed = "unknown: " + err.Error()
			}
			return fmt.Errorf("switch wal: %s not archived after %v (last failed %q; see the node's postgres.log)", seg, switchWait, failed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkArchive reads a primary's pg_stat_archiver every archiveEvery and
// reports it when it changed: archiving that fails is visible on the
// service (its WAL accumulates on the node, recent commits are not
// restorable) instead of silent.
func (n *node) checkArchive(ctx context.Context, want apitype.NodeDesired) {
	primary := want.Role == apitype.RolePrimary || want.Role == ""
	if want.Archive == nil || !primary || n.inst == nil {
		n.setArchive(nil)
		return
	}
	if time.Since(n.archiveAt) < n.a.archiveEvery {
		return
	}
	n.archiveAt = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := connectSocket(cctx, n.socketDir(), taskPort(want))
	if err != nil {
		// Not this check's failure: supervise restarts a server that
		// is down, and the next check reads the status.
		n.a.log.Debug("read archiver status", "node", n.id, "err", err)
		return
	}
	defer closeConn(conn)
	var st apitype.ArchiveStatus
	var archivedAt, failedAt *time.Time
	err = conn.QueryRow(cctx, `SELECT coalesce(last_archived_wal, ''), last_archived_time, coalesce(last_failed_wal, ''), last_failed_time
		FROM pg_stat_archiver`).Scan(&st.LastArchivedWAL, &archivedAt, &st.LastFailedWAL, &failedAt)
	if err != nil {
		n.a.log.Warn("read archiver status", "node", n.id, "err", err)
		return
	}
	if archivedAt != nil {
		st.LastArchivedAt = archivedAt.UTC()
	}
	if failedAt != nil {
		st.LastFailedAt = failedAt.UTC()
		st.Failing = archivedAt == nil || failedAt.After(*archivedAt)
	}
	if st.Failing && (n.archive == nil || !n.archive.Failing) {
		n.a.log.Error("WAL archiving failing", "node", n.id, "wal", st.LastFailedWAL, "since", st.LastFailedAt)
	}
	n.setArchive(&st)
}

// setArchive records the archive status and wakes the reporter if it
// changed.
func (n *node) setArchive(st *apitype.ArchiveStatus) {
	n.mu.Lock()
	changed := (st == nil) != (n.archive == nil) || (st != nil && *st != *n.archive)
	n.archive = st
	n.mu.Unlock()
	n.observeArchive(st)
	if changed {
		n.a.kickReport()
	}
}
