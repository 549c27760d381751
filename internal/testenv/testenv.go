// Package testenv is the one place that decides whether a test's
// requirements are met on this machine: root, a real PostgreSQL, a command
// on PATH. A missing requirement skips the test with the reason locally and
// fails it when the environment variable CI is "true", where every test must
// run (Go's own src/internal/testenv is the model).
//
// It also has the goroutine-leak check used by the server and agent tests.
// Only tests and test helpers import it.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where a missing
// requirement is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable ends tb because a requirement is missing: a skip with the
// reason locally, a failure under CI=true.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("%s (CI=true: failing instead of skipping)", reason)
	}
	tb.Skip(reason)
}

// MustHaveRoot ends tb unless it runs as root (namespaces, nftables, chown,
// running PostgreSQL as its own user).
func MustHaveRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root")
	}
}

// MustHaveCommand ends tb unless name is on PATH, and returns its path.
func MustHaveCommand(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "needs the %s command: %v", name, err)
	}
	return p
}

// MustNotBeShort skips tb (never fails it) under `go test -short`, which asks
// for unit tests only.
func MustNotBeShort(tb testing.TB, why string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("-short: %s", why)
	}
}

// ErrNoPostgres is returned by PGBinDir when no PostgreSQL server binaries
// are found.
var ErrNoPostgres = errors.New("no PostgreSQL server binaries (install postgresql-15, or set MOAT_PG_BINDIR)")

// PGBinDir returns the directory of the PostgreSQL server binaries:
// MOAT_PG_BINDIR, else `pg_config --bindir` (Debian keeps them off PATH).
func PGBinDir() (string, error) {
	dir := os.Getenv("MOAT_PG_BINDIR")
	if dir == "" {
		out, err := exec.Command("pg_config", "--bindir").Output()
		if err != nil {
			return "", fmt.Errorf("pg_config --bindir: %w: %w", err, ErrNoPostgres)
		}
		dir = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Join(dir, "initdb"), ErrNoPostgres)
	}
	return dir, nil
}

// MustHavePostgres ends tb unless it can run a real PostgreSQL: root (the
// server runs as the postgres user), the server binaries and that user. It
// returns the binaries' directory.
func MustHavePostgres(tb testing.TB) string {
	tb.Helper()
	MustHaveRoot(tb)
	dir, err := PGBinDir()
	if err != nil {
		Unavailable(tb, "needs PostgreSQL: %v", err)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		Unavailable(tb, "needs the postgres system user: %v", err)
	}
	return dir
}
