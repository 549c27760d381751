package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/metrics/pgstat"
)

// MonitorDSN is the connection string of MonitorUser to the server whose
// Unix socket is in socketDir (peer authentication: the agent's OS user),
// for pgstat.ScrapeDSN.
func MonitorDSN(socketDir string, port int) string {
	return conninfo("host", socketDir, "port", strconv.Itoa(port), "user", MonitorUser, "dbname", "postgres",
		"sslmode", "disable", "connect_timeout", "5", "application_name", "moat-monitor")
}

// ManagementParams are the session settings of Moat's own management
// connections. Their commits do not wait for synchronous standbys
// (synchronous_commit=local): the agent's own statements (roles,
// passwords) must not hang on a lost replica, and it applies them again
// on a promoted node. The tenant's statement_timeout and
// idle_in_transaction_session_timeout (design 0021) do not apply to them
// (a CHECKPOINT may take longer than a tenant's limit): the caller's
// context bounds each statement.
func ManagementParams() map[string]string {
	return map[string]string{
		"application_name":                    "moat-agent",
		"synchronous_commit":                  "local",
		"statement_timeout":                   "0",
		"idle_in_transaction_session_timeout": "0",
	}
}

// connect opens a management connection to db as Superuser over the Unix
// socket (peer authentication through the map "moat"), with
// ManagementParams.
func (in *Instance) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(conninfo(
		"host", in.cfg.SocketDir,
		"port", strconv.Itoa(in.cfg.Port),
		"user", Superuser,
		"dbname", db,
		"sslmode", "disable",
		"connect_timeout", "5",
	))
	if err == nil {
		maps.Copy(cfg.RuntimeParams, ManagementParams())
	}
	if err != nil {
		return nil, fmt.Errorf("management connection: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("management connection: %w", err)
	}
	return conn, nil
}

// Bootstrap creates the roles and the database of a new primary: AdminUser
// (LOGIN CREATEDB and pg_monitor, no password until SetPassword), ReplicationUser (LOGIN
// REPLICATION, certificate authentication only), MonitorUser (pg_monitor,
// read-only, for the agent's statistics scrapes) and Database, owned by
// AdminUser. It is idempotent. The server must be running.
func (in *Instance) Bootstrap(ctx context.Context) error {
	conn, err := in.connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	defer conn.Close(context.Background())
	roles := []struct{ name, attrs string }{
		{AdminUser, "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION"},
		{ReplicationUser, "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE"},
	}
	for _, r := range roles {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", r.name).Scan(&n); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		verb := "ALTER"
		if n == 0 {
			verb = "CREATE"
		}
		if _, err := conn.Exec(ctx, verb+" ROLE "+pgx.Identifier{r.name}.Sanitize()+" "+r.attrs); err != nil {
			return fmt.Errorf("bootstrap: %s role %s: %w", strings.ToLower(verb), r.name, err)
		}
	}
	// The admin sees the whole server's activity and replication state
	// (pg_stat_replication, pg_stat_ssl), read-only.
	if _, err := conn.Exec(ctx, "GRANT pg_monitor TO "+pgx.Identifier{AdminUser}.Sanitize()); err != nil {
		return fmt.Errorf("bootstrap: grant pg_monitor: %w", err)
	}
	// The agent's statistics scrapes: pg_monitor, read-only, peer only.
	for _, q := range pgstat.MonitorRoleSQL() {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap: monitoring role: %w", err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", Database).Scan(&n); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if n == 0 {
		q := "CREATE DATABASE " + pgx.Identifier{Database}.Sanitize() + " OWNER " + pgx.Identifier{AdminUser}.Sanitize()
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap: create database: %w", err)
		}
	}
	return nil
}

// SetPassword sets user's password. The SCRAM-SHA-256 verifier is computed
// here, so the password itself never reaches the server (nor its logs).
// Passwords are printable ASCII (SASLprep leaves them unchanged), 1 to 1024
// bytes. Superuser gets no password: it never logs in over the network.
func (in *Instance) SetPassword(ctx context.Context, user, password string) error {
	if !roleRE.MatchString(user) {
		return fmt.Errorf("set password: user %q: %s", user, roleRule)
	}
	if user == Superuser {
		return fmt.Errorf("set password: %s logs in only over the Unix socket and has no password", Superuser)
	}
	v, err := scramVerifier(password, nil)
	if err != nil {
		return fmt.Errorf("set password for %s: %w", user, err)
	}
	conn, err := in.connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("set password for %s: %w", user, err)
	}
	defer conn.Close(context.Background())
	// v holds only base64 characters, '$' and ':'.
	if _, err := conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" PASSWORD '"+v+"'"); err != nil {
		return fmt.Errorf("set password for %s: %w", user, err)
	}
	return nil
}

// scramIterations is PostgreSQL's default (scram_iterations, PostgreSQL 16).
const scramIterations = 4096

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802, RFC 7677), with a random salt when salt is nil.
func scramVerifier(password string, salt []byte) (string, error) {
	if len(password) == 0 || len(password) > 1024 {
		return "", errors.New("password must be 1 to 1024 bytes")
	}
	for i := 0; i < len(password); i++ {
		if c := password[i]; c < 0x20 || c > 0x7e {
			return "", errors.New("password must be printable ASCII")
		}
	}
	if salt == nil {
		salt = make([]byte, 16)
		rand.Read(salt)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt), b64(stored[:]), b64(server)), nil
}

// Reload makes the server read its configuration again (pg_hba.conf, the
// TLS files, moat.conf) and returns once it has: it first checks
// pg_hba.conf, pg_ident.conf and the settings files for errors (PostgreSQL
// would keep the old ones and only log it), then waits until a new
// connection sees a load time later than the request.
func (in *Instance) Reload(ctx context.Context) error {
	conn, err := in.connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	defer conn.Close(context.Background())
	checks := []struct{ what, q string }{
		{"pg_hba.conf", "SELECT line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL"},
		{"pg_ident.conf", "SELECT line_number || ': ' || error FROM pg_ident_file_mappings WHERE error IS NOT NULL"},
		// A setting that needs a restart is not an error here: see
		// PendingRestart.
		{"settings", `SELECT coalesce(sourcefile, '') || ':' || coalesce(sourceline, 0) || ': ' || error FROM pg_file_settings
			WHERE error IS NOT NULL AND error <> 'setting could not be applied' AND error NOT LIKE '%cannot be changed without restarting the server'`},
	}
	for _, c := range checks {
		rows, err := conn.Query(ctx, c.q)
		if err != nil {
			return fmt.Errorf("reload: check %s: %w", c.what, err)
		}
		errs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("reload: check %s: %w", c.what, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("reload: %s has errors; the server keeps its old configuration: %s", c.what, strings.Join(errs, "; "))
		}
	}
	// Any load that starts after this instant reads the files as they are
	// now (the caller wrote them before calling Reload).
	var before time.Time
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&before); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("reload: pg_reload_conf: %v", err)
	}
	// The postmaster reloads, then forks new backends with the new load
	// time: a new connection seeing it is served under the new rules.
	for {
		c, err := in.connect(ctx, "postgres")
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		var after time.Time
		err = c.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&after)
		c.Close(context.Background())
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		if after.After(before) {
			in.log.Info("postgres reloaded", "data_dir", in.cfg.DataDir)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reload: not confirmed: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// PendingRestart reports whether settings written since the server started
// take effect only after a restart (port, listen_addresses, shared_buffers,
// ...). Reload applies the others.
func (in *Instance) PendingRestart(ctx context.Context) (bool, error) {
	conn, err := in.connect(ctx, "postgres")
	if err != nil {
		return false, fmt.Errorf("pending restart: %w", err)
	}
	defer conn.Close(context.Background())
	var pending bool
	if err := conn.QueryRow(ctx, "SELECT count(*) > 0 FROM pg_settings WHERE pending_restart").Scan(&pending); err != nil {
		return false, fmt.Errorf("pending restart: %w", err)
	}
	return pending, nil
}

// Access is what a client session must still have to be kept.
type Access struct {
	// Allowed are the sources admitted.
	Allowed []netip.Prefix
	// Local, when set, are the node's own addresses: a session that came
	// in on another (one the node no longer has, after a detach or a
	// move) is ended, whatever its source.
	Local []netip.Addr
}

// TerminateSessions ends the client sessions acc no longer admits: from a
// source in none of acc.Allowed, or to an address not in acc.Local. It
// returns how many it ended. Sessions over the Unix socket and
// replication connections are left alone.
func (in *Instance) TerminateSessions(ctx context.Context, acc Access) (int, error) {
	conn, err := in.connect(ctx, "postgres")
	if err != nil {
		return 0, fmt.Errorf("terminate sessions: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT pid, host(client_addr) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND client_addr IS NOT NULL AND pid <> pg_backend_pid()`)
	if err != nil {
		return 0, fmt.Errorf("terminate sessions: %w", err)
	}
	type session struct {
		pid  int32
		addr string
	}
	sessions, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session, error) {
		var s session
		return s, r.Scan(&s.pid, &s.addr)
	})
	if err != nil {
		return 0, fmt.Errorf("terminate sessions: %w", err)
	}
	var local map[int32]netip.Addr
	if len(acc.Local) > 0 && len(sessions) > 0 {
		pids := make([]int32, len(sessions))
		for i, s := range sessions {
			pids[i] = s.pid
		}
		if pm, ok := in.pid(); ok {
			if local, err = serverAddrs(pm, in.cfg.Port, pids); err != nil {
				return 0, fmt.Errorf("terminate sessions: %w", err)
			}
		}
	}
	n := 0
	for _, s := range sessions {
		a, err := netip.ParseAddr(s.addr)
		to, known := local[s.pid]
		if err == nil && inside(a, acc.Allowed) && (!known || slices.Contains(acc.Local, to)) {
			continue
		}
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", s.pid).Scan(&ok); err != nil {
			return n, fmt.Errorf("terminate sessions: pid %d: %w", s.pid, err)
		}
		if ok {
			n++
		}
	}
	if n > 0 {
		in.log.Info("postgres sessions terminated", "data_dir", in.cfg.DataDir, "count", n)
	}
	return n, nil
}
