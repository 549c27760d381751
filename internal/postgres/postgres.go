// Package postgres manages one node's PostgreSQL instance: data directory,
// TLS-only configuration, pg_hba, start/stop/reload, replicas.
//
// The host agent drives it, one Instance per service node; tests drive it
// too. It holds no network-namespace code: Config.Exec is a command prefix
// (for example ip netns exec NODE) under which every PostgreSQL program
// runs, and the programs drop to Config.User (the node's own user, for
// the agent) after that prefix, so the prefix may need root. Everything
// the Instance writes (data, TLS and socket directories 0700, files 0600)
// belongs to that user alone. Management (passwords, reload checks, session
// termination) goes over the node's Unix socket, never the network, so it
// works from the host's namespace whatever the node's network is.
//
// A postmaster outlives the Instance that started it (and the process):
// Close ends the Instance's watch over it, and any later Instance finds it
// by its data directory.
//
// Files an Instance owns:
//
//	DataDir/                 the cluster; postgresql.conf includes moat.conf
//	DataDir/moat.conf        every setting Moat controls (rewritten whole)
//	DataDir/pg_hba.conf      rendered by RenderHBA (rewritten whole)
//	DataDir/pg_ident.conf    RenderIdent: the agent's OS user and Config.User to postgres (peer auth), each replica's certificate name to the replication role
//	TLSDir/                  server certificate and key, CA, replica client cert
//	SocketDir/               the Unix socket
//	LogFile                  the postmaster's stderr
//
// TLS keys live outside the data directory so that base backups and
// replicas never carry them.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/moatdb/moat/internal/metrics/pgstat"
)

// Names the API and the control plane rely on.
const (
	// Database is the database created on every primary, owned by AdminUser.
	Database = "defaultdb"
	// AdminUser is the tenant's login role: LOGIN CREATEDB, not a superuser,
	// without CREATEROLE (on PostgreSQL 15 CREATEROLE can grant
	// pg_execute_server_program, a shell on the node).
	AdminUser = "moatadmin"
	// ReplicationUser is the role replicas connect as, authenticated by the
	// common name of their client certificate.
	ReplicationUser = "moat_replication"
	// Superuser is the bootstrap superuser, reachable only over the Unix
	// socket by peer authentication.
	Superuser = "postgres"
	// MonitorUser is the role the agent reads statistics as (a member of
	// pg_monitor, read-only; pgstat.MonitorRoleSQL), reachable only over
	// the Unix socket by the agent's peer identity.
	MonitorUser = pgstat.MonitorRole
	// SupportGroup is the group of the temporary roles of operators'
	// support sessions (design 0012): pg_hba admits its members from the
	// node itself only.
	SupportGroup = "moat_support"
)

// ErrNotInitialized is returned by Start when the data directory holds no
// cluster yet.
var ErrNotInitialized = errors.New("data directory not initialized")

// Config describes one node's PostgreSQL instance.
type Config struct {
	// Name identifies the node in process titles (cluster_name) and as the
	// application_name a replica reports to its primary. Letters, digits,
	// '-', '_' and '.'; at most 63 bytes. Optional.
	Name string

	// BinDir holds initdb, postgres and pg_basebackup. Default:
	// $MOAT_PG_BINDIR, else `pg_config --bindir`.
	BinDir string
	// DataDir is the cluster's directory, absolute. Every directory above it
	// must be traversable by the postgres user (so not under /root).
	DataDir string
	// TLSDir holds the TLS files. Default: DataDir + ".tls".
	TLSDir string
	// SocketDir holds the Unix socket, the management path. Default:
	// DataDir + ".run". The socket path must fit in 107 bytes.
	SocketDir string
	// LogFile receives the postmaster's output. Default: DataDir + ".log".
	LogFile string

	// ListenAddresses are the addresses PostgreSQL listens on for TCP. Empty
	// means the Unix socket only.
	ListenAddresses []netip.Addr
	// Port is the TCP port (and the socket's name). Default 5432.
	Port int

	// ServerCertPEM and ServerKeyPEM are the server's certificate (chain)
	// and key. Required: the server accepts TLS connections only.
	ServerCertPEM, ServerKeyPEM []byte
	// CAPEM holds the CA certificates client certificates are verified
	// against: those of the replicas (certificate authentication for
	// replication). Optional: without it no replica can authenticate.
	CAPEM []byte

	// Primary, when set, makes this node a streaming replica of that
	// primary: Init takes a base backup from it instead of running initdb.
	Primary *Upstream
	// KeepStandby, with Primary nil, lets Init accept a data directory
	// holding a replica: one following no one (a failover's detach step,
	// primary_conninfo empty) or one about to be promoted.
	KeepStandby bool

	// Restore, when set (and Primary is not), makes Init build the cluster
	// from a stored base backup instead of running initdb, and start it in
	// archive recovery (recovery.signal). The recovery settings
	// (restore_command, recovery_target_time, recovery_target_action) go
	// in Settings.
	Restore *Restore

	// Exec is a command prefix every PostgreSQL program runs under, for
	// example {"ip", "netns", "exec", "moat-node-x"}. When the process is
	// root the programs drop to User with setpriv after the prefix; without
	// a prefix they are started as User directly.
	Exec []string
	// User is the operating-system user PostgreSQL runs as, and owns its
	// files, when this process is root. Default "postgres". The agent
	// gives every node its own. Init gives a cluster found owned by
	// another user to this one (stopping its server first).
	User string

	// Settings are extra server settings written to moat.conf after Moat's
	// own (shared_buffers, fsync for tests, ...). Names are checked; values
	// are quoted.
	Settings map[string]string

	// NoSync skips fsync in initdb and pg_basebackup: for tests only.
	NoSync bool

	// Logger receives start, stop and reload events. Default: discard.
	Logger *slog.Logger
}

// Upstream is the primary a replica streams from.
type Upstream struct {
	// Host is the primary's address or DNS name; the primary's server
	// certificate must carry it (the replica uses sslmode=verify-full).
	Host string
	// Port is the primary's port. Default 5432.
	Port int
	// User is the replication role. Default ReplicationUser. The primary
	// maps the common name of the client certificate (the replica's node
	// ID) to it (Policy.Replicas).
	User string
	// ClientCertPEM and ClientKeyPEM are the replica's client certificate,
	// issued by a CA in the primary's Config.CAPEM.
	ClientCertPEM, ClientKeyPEM []byte
	// CAPEM holds the CA certificates the primary's server certificate is
	// verified against.
	CAPEM []byte
}

// Restore is the base backup a restored cluster starts from.
type Restore struct {
	// Tar writes the base backup's tar (pg_basebackup -Ft's base.tar,
	// plaintext) to w. An error, even after part of the tar, fails Init
	// and leaves no data directory.
	Tar func(ctx context.Context, w io.Writer) error
}

// Instance is one node's PostgreSQL instance. Its methods may be called
// from several goroutines.
type Instance struct {
	cfg     Config
	cred    *syscall.Credential // nil: run as ourselves
	osUser  string              // the user this process runs as, mapped to Superuser
	log     *slog.Logger
	mu      sync.Mutex // serialises Init, Start, Stop, Wipe, Close, WriteHBA
	policy  Policy     // the last WriteHBA's, for pg_ident.conf; under mu
	childMu sync.Mutex
	child   *child // the postmaster, when this process started it and watches it

	// closed is closed by Close; reapers counts the goroutines that
	// watch the postmasters started (see reap).
	closed    chan struct{}
	closeOnce sync.Once
	reapers   sync.WaitGroup
}

// child is a postmaster this process started and must reap.
type child struct {
	pid  int
	done chan struct{} // closed once reaped

	mu   sync.Mutex
	gone bool // reaped: pid may name another process now
}

// reap reaps the child if it exited and reports whether it was reaped.
func (ch *child) reap() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.gone && reaped(ch.pid) {
		ch.gone = true
		close(ch.done)
	}
	return ch.gone
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("postgres instance closed")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)

// New checks cfg, fills in its defaults and finds the binaries and the
// postgres user. It touches no file.
func New(cfg Config) (*Instance, error) {
	if cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir) {
		return nil, fmt.Errorf("postgres config: data directory %q is not an absolute path", cfg.DataDir)
	}
	cfg.DataDir = filepath.Clean(cfg.DataDir)
	if cfg.TLSDir == "" {
		cfg.TLSDir = cfg.DataDir + ".tls"
	}
	if cfg.SocketDir == "" {
		cfg.SocketDir = cfg.DataDir + ".run"
	}
	if cfg.LogFile == "" {
		cfg.LogFile = cfg.DataDir + ".log"
	}
	for _, p := range []struct{ name, path string }{{"tls", cfg.TLSDir}, {"socket", cfg.SocketDir}, {"log file", cfg.LogFile}} {
		if !filepath.IsAbs(p.path) {
			return nil, fmt.Errorf("postgres config: %s path %q is not absolute", p.name, p.path)
		}
	}
	if cfg.Port == 0 {
		cfg.Port = 5432
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("postgres config: port %d out of range", cfg.Port)
	}
	if sock := filepath.Join(cfg.SocketDir, ".s.PGSQL."+strconv.Itoa(cfg.Port)); len(sock) > 107 {
		return nil, fmt.Errorf("postgres config: socket path %s is %d bytes, more than the 107 a Unix socket allows; use a shorter socket directory", sock, len(sock))
	}
	if cfg.Name != "" && !nameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("postgres config: name %q: use letters, digits, '-', '_', '.', at most 63 bytes", cfg.Name)
	}
	for _, a := range cfg.ListenAddresses {
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("postgres config: listen address %q is not a plain IP address", a)
		}
	}
	if len(cfg.ServerCertPEM) == 0 || len(cfg.ServerKeyPEM) == 0 {
		return nil, errors.New("postgres config: server certificate and key are required (the server accepts TLS only)")
	}
	if err := checkSettings(cfg.Settings); err != nil {
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	if cfg.Primary != nil {
		p := *cfg.Primary // defaults filled in a copy, not the caller's
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("postgres config: primary: %w", err)
		}
		cfg.Primary = &p
	}
	if cfg.User == "" {
		cfg.User = "postgres"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BinDir == "" {
		dir, err := findBinDir()
		if err != nil {
			return nil, err
		}
		cfg.BinDir = dir
	}
	for _, b := range []string{"initdb", "postgres", "pg_basebackup"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("postgres binaries: %w (install the postgresql server, or set MOAT_PG_BINDIR)", err)
		}
	}
	in := &Instance{cfg: cfg, log: cfg.Logger, closed: make(chan struct{})}
	if os.Geteuid() == 0 {
		cred, err := lookupCredential(cfg.User)
		if err != nil {
			return nil, err
		}
		in.cred = cred
		for _, dir := range []string{cfg.DataDir, cfg.SocketDir, cfg.TLSDir} {
			if err := checkTraversable(filepath.Dir(dir), cred); err != nil {
				return nil, fmt.Errorf("postgres config: %w", err)
			}
		}
	}
	me, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("current user: %w", err)
	}
	if !identRE.MatchString(me.Username) {
		return nil, fmt.Errorf("current user %q cannot be named in pg_ident.conf", me.Username)
	}
	in.osUser = me.Username
	return in, nil
}

// Config returns the instance's configuration with its defaults filled in.
func (in *Instance) Config() Config { return in.cfg }

func (u *Upstream) check() error {
	if !validHost(u.Host) {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name", u.Host)
	}
	if u.Port == 0 {
		u.Port = 5432
	}
	if u.Port < 1 || u.Port > 65535 {
		return fmt.Errorf("port %d out of range", u.Port)
	}
	if u.User == "" {
		u.User = ReplicationUser
	}
	if !roleRE.MatchString(u.User) {
		return fmt.Errorf("user %q: %s", u.User, roleRule)
	}
	if len(u.ClientCertPEM) == 0 || len(u.ClientKeyPEM) == 0 || len(u.CAPEM) == 0 {
		return errors.New("client certificate, key and CA are required")
	}
	return nil
}

var dnsRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.?$`)

func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	return len(h) <= 253 && dnsRE.MatchString(h)
}

// BinDir is where the PostgreSQL binaries are when no Config.BinDir says:
// $MOAT_PG_BINDIR, else `pg_config --bindir`.
func BinDir() (string, error) { return findBinDir() }

// findBinDir finds the PostgreSQL server binaries as pgtest does:
// $MOAT_PG_BINDIR, else `pg_config --bindir` (Debian keeps them off PATH).
func findBinDir() (string, error) {
	if dir := os.Getenv("MOAT_PG_BINDIR"); dir != "" {
		return dir, nil
	}
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return "", fmt.Errorf("postgres binaries: pg_config --bindir: %w (install postgresql, or set MOAT_PG_BINDIR)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// lookupCredential returns the credential of the user PostgreSQL runs as,
// with its supplementary groups (not root's).
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("postgres user: %w (running as root, PostgreSQL must run as %s)", err, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user %s has uid %q gid %q", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return nil, fmt.Errorf("postgres user %s is root; PostgreSQL refuses to run as root", name)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("postgres user %s: groups: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	return cred, nil
}

// checkTraversable reports an error if some existing directory on the way
// to dir cannot be searched by cred's user.
func checkTraversable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err == nil {
			var bit uint32 = 0o001
			switch {
			case st.Uid == cred.Uid:
				bit = 0o100
			case st.Gid == cred.Gid || containsGID(cred.Groups, st.Gid):
				bit = 0o010
			}
			if st.Mode&bit == 0 {
				return fmt.Errorf("%s (mode %#o, owner %d) is not traversable by the postgres user (uid %d); put the data directory elsewhere, not under /root or another private directory",
					d, st.Mode&0o777, st.Uid, cred.Uid)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if d == "/" {
			return nil
		}
	}
}

func containsGID(gs []uint32, g uint32) bool {
	for _, x := range gs {
		if x == g {
			return true
		}
	}
	return false
}
