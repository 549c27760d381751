// Package sqlitestore is Moat's embedded store: store.Store in one SQLite
// file (modernc.org/sqlite, no cgo), for a control plane of one server.
//
// The file is in WAL mode, so reads never wait for the writer. Read-write
// transactions are serialized: in this process in arrival order on one
// write connection, and against other processes by BEGIN IMMEDIATE with a
// busy timeout. The schema is migrated (goose, embedded) at Open.
// WaitRevision wakes at once on this process's commits and, by polling
// while someone waits, within PollInterval on another process's.
//
// Only the CLI wiring and tests import it; everything else uses store.Store.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the "sqlite" driver

	"github.com/moatdb/moat/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune a Store. The zero value is the production setting.
type Options struct {
	// BusyTimeout is how long a write waits for another process's write
	// lock before it fails; 0 means 5s.
	BusyTimeout time.Duration
	// ReadConns caps concurrent read-only transactions; 0 means 4.
	ReadConns int
	// PollInterval is how soon WaitRevision notices a commit by another
	// process on the same file; 0 means 500ms.
	PollInterval time.Duration
	// NoSync skips fsync (synchronous=OFF): an operating-system crash may
	// lose the last commits. For tests.
	NoSync bool
}

// Store is a store.Store in one SQLite file.
type Store struct {
	*sqlstore.Store
}

// Open opens (creating if need be) the database at path and migrates it.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite: bad path %q", path)
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	syncMode := "FULL"
	if opts.NoSync {
		syncMode = "OFF"
	}
	params := "?_pragma=busy_timeout(" + strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(" + syncMode + ")"
	write, err := sql.Open("sqlite", path+params+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", path+params+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	read.SetMaxOpenConns(opts.ReadConns)
	read.SetMaxIdleConns(opts.ReadConns)
	read.SetConnMaxIdleTime(0)
	if err := read.PingContext(ctx); err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &Store{sqlstore.New(sqlstore.Config{
		Dialect: sqlstore.Dialect{
			View:         sql.TxOptions{ReadOnly: true},
			PollInterval: opts.PollInterval,
		},
		Write: write,
		Read:  read,
	})}, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		var partial *goose.PartialError
		if errors.As(err, &partial) && partial.Failed != nil {
			return fmt.Errorf("migrate: %s: %w", partial.Failed.Source.Path, partial.Err)
		}
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
