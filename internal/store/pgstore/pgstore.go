// Package pgstore is Moat's store for several server replicas: store.Store
// in one PostgreSQL database (pgx).
//
// Every read-write transaction first locks the desired-state revision's
// row in meta (SELECT … FOR UPDATE), which serializes read-write
// transactions across all servers; read-only ones run at REPEATABLE READ
// and never wait. BumpRevision and BumpHosts send NOTIFY moat_revision,
// delivered at commit: each Store LISTENs on a connection of its own, and
// on each notification reads the hosts' revisions that changed (the change
// feed), so WaitRevision and the affected hosts' WaitHostRevision wake
// within milliseconds of a commit on any server (and it rereads them when
// that connection is re-established, and every few seconds while someone
// waits, in case a notification was missed). The schema is
// migrated (goose, embedded, under an advisory lock) at Open.
//
// Only the CLI wiring and tests import it; everything else uses store.Store.
package pgstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/moatdb/moat/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// channel is the NOTIFY channel of revision changes; the payload is the
// new revision.
const channel = "moat_revision"

// pollInterval is how often WaitRevision rereads the revision in case a
// notification was lost.
const pollInterval = 5 * time.Second

// Store is a store.Store in a PostgreSQL database.
type Store struct {
	*sqlstore.Store
	stopListen context.CancelFunc
	listenDone chan struct{}
}

// Open connects to the database at dsn (a libpq URL or key=value string),
// migrates it, and starts listening for revision changes.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	// Listen before the store serves anyone, so no commit goes unheard.
	conn, err := listen(ctx, cfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	listenCtx, cancel := context.WithCancel(context.Background())
	s := &Store{
		Store: sqlstore.New(sqlstore.Config{
			Dialect: sqlstore.Dialect{
				Numbered:     true,
				View:         sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
				LockSQL:      "SELECT value FROM meta WHERE key = '" + sqlstore.RevisionKey + "' FOR UPDATE",
				NotifySQL:    "SELECT pg_notify('" + channel + "', ?)",
				PollInterval: pollInterval,
			},
			Write: db,
		}),
		stopListen: cancel,
		listenDone: make(chan struct{}),
	}
	go s.listenLoop(listenCtx, cfg, conn)
	return s, nil
}

// Close stops listening and closes the connections.
func (s *Store) Close() error {
	s.stopListen()
	<-s.listenDone
	return s.Store.Close()
}

func listen(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

// listenLoop observes every notification, reconnecting after an error.
func (s *Store) listenLoop(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn) {
	defer close(s.listenDone)
	backoff := 100 * time.Millisecond
	for {
		if conn != nil {
			// Whatever was committed while no one listened.
			if s.Recheck(ctx) == nil {
				backoff = 100 * time.Millisecond
			}
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					break
				}
				if rev, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
					s.Observe(rev)
				}
				// The hosts the commit affected: an error is retried by
				// the next notification or the poll.
				s.Recheck(ctx)
			}
			conn.Close(context.Background())
			conn = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		conn, _ = listen(ctx, cfg) // retried after the backoff
	}
}

func migrate(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableGlobalRegistry(true), goose.WithSessionLocker(locker))
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
