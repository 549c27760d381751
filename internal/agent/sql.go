package agent

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/postgres"
)

// pgInstance is a node's PostgreSQL on a real host: the postgres
// package's Instance, and the agent's own statements over its management
// socket.
type pgInstance struct {
	*postgres.Instance
}

// connect opens a management connection to the server over its Unix
// socket, as the superuser (peer authentication).
func (p pgInstance) connect(ctx context.Context) (*pgx.Conn, error) {
	c := p.Config()
	return connectSocket(ctx, c.SocketDir, c.Port)
}

// connectSocket opens a management connection over the Unix socket in
// socketDir.
func connectSocket(ctx context.Context, socketDir string, port int) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host = socketDir
	cfg.Port = uint16(port)
	cfg.User = postgres.Superuser
	cfg.Database = "postgres"
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	// Its commits do not wait for synchronous standbys, and the tenant's
	// timeouts do not apply to it: see postgres.ManagementParams.
	cfg.RuntimeParams = postgres.ManagementParams()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("management connection: %w", err)
	}
	return conn, nil
}

// closeConn closes a management connection whose work is done. Its
// error is only a goodbye that did not reach the server (the socket is
// closed whatever happens, and the server then ends the session); the
// work's own error is what the caller handles. This is the one place
// the agent drops an error, for that reason.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// exec runs one statement on a management connection of its own.
func (p pgInstance) exec(ctx context.Context, q string) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	_, err = conn.Exec(ctx, q)
	return err
}

// roleRE is a role name the agent accepts (lowercase identifiers).
var roleRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Bootstrap creates the admin user, the database and the replication role
// repl (certificate authentication only) on a primary. Idempotent.
func (p pgInstance) Bootstrap(ctx context.Context, repl string) error {
	if err := p.Instance.Bootstrap(ctx); err != nil {
		return err
	}
	if repl == postgres.ReplicationUser {
		return nil
	}
	if !roleRE.MatchString(repl) {
		return fmt.Errorf("bootstrap: replication user %q is not a plain lowercase identifier", repl)
	}
	conn, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	defer closeConn(conn)
	var k int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", repl).Scan(&k); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	verb := "ALTER"
	if k == 0 {
		verb = "CREATE"
	}
	q := verb + " ROLE " + pgx.Identifier{repl}.Sanitize() + " LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD NULL"
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("bootstrap: replication role %s: %w", repl, err)
	}
	return nil
}

// verifierRE is a SCRAM-SHA-256 verifier as PostgreSQL stores it:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64.
var verifierRE = regexp.MustCompile(`^SCRAM-SHA-256\$([0-9]{1,7}):[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$`)

// checkVerifier checks that verifier is a SCRAM-SHA-256 verifier (so it
// cannot escape its SQL string literal) of at least 4096 iterations, for
// a user that may have a password.
func checkVerifier(user, verifier string) error {
	m := verifierRE.FindStringSubmatch(verifier)
	if m == nil {
		return fmt.Errorf("set password for %s: the verifier is not a SCRAM-SHA-256 verifier", user)
	}
	it, err := strconv.Atoi(m[1])
	if err != nil {
		return fmt.Errorf("set password for %s: iterations: %w", user, err)
	}
	if it < 4096 {
		return fmt.Errorf("set password for %s: the verifier has %d iterations, fewer than 4096", user, it)
	}
	if !roleRE.MatchString(user) || user == postgres.Superuser {
		return fmt.Errorf("set password: user %q cannot be given a password", user)
	}
	return nil
}

// SetVerifier sets user's password from its precomputed SCRAM verifier:
// the password itself never reaches the node.
func (p pgInstance) SetVerifier(ctx context.Context, user, verifier string) error {
	if err := checkVerifier(user, verifier); err != nil {
		return err
	}
	if err := p.exec(ctx, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" PASSWORD '"+verifier+"'"); err != nil {
		return fmt.Errorf("set password for %s: %w", user, err)
	}
	return nil
}

// InRecovery reports pg_is_in_recovery().
func (p pgInstance) InRecovery(ctx context.Context) (bool, error) {
	conn, err := p.connect(ctx)
	if err != nil {
		return false, err
	}
	defer closeConn(conn)
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	return rec, nil
}

// Checkpoint runs CHECKPOINT.
func (p pgInstance) Checkpoint(ctx context.Context) error {
	if err := p.exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}
