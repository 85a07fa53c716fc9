package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/drover-ci/drover"
)

// DB is the database/sql implementation of Store. Open makes one.
type DB struct {
	d *dialect
	// rw takes every write, and every read that must see a transaction's
	// own writes; ro takes plain reads. They may be the same pool.
	rw, ro *sql.DB
	// listen is the parsed DSN Listen connects with, on an engine whose
	// masters share the database; nil on SQLite. See conns.
	listen *pgx.ConnConfig
	// channel is the site's NOTIFY channel, once asked (see siteChannel).
	chanMu  sync.Mutex
	channel string

	// closing is cancelled by Close, ending every Listen.
	closing     context.Context
	stopClosing context.CancelFunc

	// rwStmts and roStmts cache prepared statements of rw and ro on an
	// engine that gains by it (SQLite); nil otherwise. See prep.
	rwStmts, roStmts *stmtCache

	// checkpoint is SQLite's background checkpointer's connection (see
	// checkpointLoop), and bg waits for that goroutine.
	checkpoint *sql.DB
	bg         sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*DB)(nil)

// Open opens (creating if needed) the database named by dsn and brings its
// schema up to date.
//
// A dsn that is a file path, or "sqlite:" followed by one, is a SQLite
// database; "sqlite::memory:" (or ":memory:") is a private in-memory one,
// for tests.
//
// A "postgres://" or "postgresql://" URL names a PostgreSQL database, with
// libpq's parameters: postgres://user:password@host:5432/dbname?sslmode=
// disable&connect_timeout=5&search_path=drover. A malformed URL is Invalid;
// a server that cannot be reached, or refuses the login, is Unavailable.
// Several masters may open one PostgreSQL database at once: migrations
// take turns, claims share the queue, and Notify reaches every Listen.
//
// Open refuses, with a Conflict error, a database whose schema is newer
// than this binary knows.
func Open(ctx context.Context, dsn string) (*DB, error) {
	d, target, err := selectEngine(dsn)
	if err != nil {
		return nil, err
	}
	return openDialect(ctx, d, target)
}

// openDialect is Open once the engine is known: it connects to target
// with d and migrates.
func openDialect(ctx context.Context, d *dialect, target string) (*DB, error) {
	ms, err := loadMigrations(d.migrations)
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", d.name, err)
	}
	c, err := d.open(target)
	if err != nil {
		if drover.KindOf(err) != drover.Internal {
			return nil, fmt.Errorf("open %s store: %w", d.name, err)
		}
		return nil, drover.Errorf(drover.Unavailable, "open %s store: %w", d.name, err)
	}
	rw, ro := c.rw, c.ro
	db := &DB{d: d, rw: rw, ro: ro, listen: c.listen, checkpoint: c.checkpoint}
	if d.prepare {
		db.rwStmts, db.roStmts = newStmtCache(rw), newStmtCache(ro)
	}
	db.closing, db.stopClosing = context.WithCancel(context.Background())
	if err := rw.PingContext(ctx); err != nil {
		db.Close()
		return nil, drover.Errorf(drover.Unavailable, "open %s store: %w", d.name, err)
	}
	if err := migrate(ctx, d, rw, ms); err != nil {
		db.Close()
		if drover.KindOf(err) != drover.Internal {
			return nil, err
		}
		return nil, fmt.Errorf("open %s store: %w", d.name, err)
	}
	if err := ro.PingContext(ctx); err != nil {
		db.Close()
		return nil, drover.Errorf(drover.Unavailable, "open %s store: %w", d.name, err)
	}
	if db.checkpoint != nil {
		db.bg.Add(1)
		go func() { // owned: Close ends it and waits
			defer db.bg.Done()
			checkpointLoop(db.closing, db.checkpoint)
		}()
	}
	return db, nil
}

// Shared reports whether dsn names a database several masters may share
// (PostgreSQL), which makes them a site.
func Shared(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// selectEngine picks the dialect for dsn and returns what its open wants.
func selectEngine(dsn string) (*dialect, string, error) {
	switch {
	case dsn == "":
		return nil, "", drover.Errorf(drover.Invalid, "open store: empty database name")
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return newPostgres(), dsn, nil
	}
	path := dsn
	if rest, ok := strings.CutPrefix(dsn, "sqlite://"); ok {
		path = rest
	} else if rest, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		path = rest
	}
	if path == "" {
		return nil, "", drover.Errorf(drover.Invalid, "open store: %q names no SQLite file", dsn)
	}
	return newSQLite(), path, nil
}

// Close closes the database and ends every Listen. It is safe to call
// more than once; calls to other methods after Close fail with
// Unavailable.
func (s *DB) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stopClosing()
		s.bg.Wait()
		if s.rwStmts != nil {
			s.rwStmts.close()
			s.roStmts.close()
		}
		var errs []error
		if s.ro != s.rw {
			errs = append(errs, s.ro.Close())
		}
		errs = append(errs, s.rw.Close())
		if s.checkpoint != nil {
			errs = append(errs, s.checkpoint.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close %s store: %w", s.d.name, err)
		}
	})
	return s.closeErr
}

// errClosed is returned by every method after Close.
func (s *DB) errClosed() error {
	return drover.Errorf(drover.Unavailable, "store is closed")
}

// q rewrites query for the engine.
func (s *DB) q(query string) string { return s.d.rebind(query) }

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader returns the pool for plain reads.
func (s *DB) reader() (queryer, error) {
	if s.closed.Load() {
		return nil, s.errClosed()
	}
	return s.ro, nil
}

// writer returns the pool for single-statement writes.
func (s *DB) writer() (queryer, error) {
	if s.closed.Load() {
		return nil, s.errClosed()
	}
	return s.rw, nil
}

// inTx runs fn in a write transaction and commits it when fn returns nil.
// On SQLite the transaction begins IMMEDIATE (see openSQLite), so fn's
// reads already hold the write lock and what it decides from them stays
// true until commit.
func (s *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.closed.Load() {
		return s.errClosed()
	}
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	err = fn(tx)
	if err != nil {
		tx.Rollback()
	} else if err = tx.Commit(); err != nil {
		err = fmt.Errorf("commit: %w", err)
	}
	if s.rwStmts != nil {
		// The connection is free again: prepare what fn met unprepared.
		s.rwStmts.prepareMissed(context.WithoutCancel(ctx))
	}
	return err
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// collect runs a query and scans each row with scan.
func collect[T any](ctx context.Context, q queryer, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// mustAffect turns an UPDATE or DELETE that matched no row into a NotFound
// error made by notFound.
func mustAffect(res sql.Result, notFound func() error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound()
	}
	return nil
}

// placeholders returns "?, ?, …" with n marks, for IN lists.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// defaultLimit is the page size of lists whose filter leaves Limit zero.
const defaultLimit = 100

func limitOr(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}
