package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/sqlite/*.sql
var sqliteFiles embed.FS

// sqliteBusyTimeout is how long, in milliseconds, a connection waits for a
// lock held by another process (a second master, `drover` CLI tools) before
// failing with SQLITE_BUSY. Writers in this process queue on the single
// write connection instead, so this only covers other processes and
// checkpoints; five seconds outlasts any transaction the store runs.
const sqliteBusyTimeout = 5000

// newSQLite returns the SQLite dialect, served by modernc.org/sqlite (pure
// Go, so the default build needs no cgo).
func newSQLite() *dialect {
	migrations, err := fs.Sub(sqliteFiles, "migrations/sqlite")
	if err != nil {
		// The directory is embedded at build time; failing here is a
		// build defect, not a runtime condition.
		panic(fmt.Sprintf("store: embedded sqlite migrations: %v", err))
	}
	return &dialect{
		name: "sqlite",
		// julianday keeps milliseconds, enough for heartbeats.
		nowNanos:   "CAST((julianday('now') - 2440587.5) * 86400000000000.0 AS INTEGER)",
		migrations: migrations,
		isUnique: func(err error) bool {
			c := sqliteCode(err)
			return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
		},
		isForeignKey: func(err error) bool {
			return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
		},
		open:    openSQLite,
		prepare: true,
	}
}

func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

// openSQLite opens the database file path as two pools: one connection
// for writes and several for reads. SQLite allows one writer at a time;
// with one write connection, writers wait their turn in database/sql,
// honouring their contexts, and every write transaction begins IMMEDIATE
// so that it takes the lock before reading, never upgrading a read lock
// mid-transaction (the classic SQLITE_BUSY deadlock). In WAL mode readers
// never block the writer nor each other.
//
// ":memory:" is one private database per connection, so it gets a single
// connection shared by reads and writes; it is meant for tests.
func openSQLite(path string) (conns, error) {
	pragmas := []string{
		fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout),
		"foreign_keys(1)",
	}
	if path == ":memory:" {
		q := sqliteQuery(append(pragmas, "synchronous(NORMAL)"), "immediate")
		db, err := sql.Open("sqlite", "file::memory:?"+q)
		if err != nil {
			return conns{}, fmt.Errorf("open sqlite memory database: %w", err)
		}
		pinOneConn(db)
		return conns{rw: db, ro: db}, nil
	}

	abs, err := filepath.Abs(path)
	if err != nil {
		return conns{}, fmt.Errorf("sqlite path %q: %w", path, err)
	}
	// The file: URI form, with the path escaped, keeps a path holding
	// '?' or '#' from being read as query parameters.
	uri := func(query string) string {
		p := filepath.ToSlash(abs)
		if !strings.HasPrefix(p, "/") {
			p = "/" + p // Windows: C:/x → /C:/x, as SQLite's URI parser expects
		}
		return (&url.URL{Scheme: "file", Path: p, RawQuery: query}).String()
	}

	// SQLite checkpoints the WAL on the commit that fills it (every
	// thousand pages or so), and that commit waits for the database
	// file's fsync: one write in thirty took 20 ms instead of one. The
	// writer never checkpoints; a connection of its own does, in the
	// background.
	rw, err := sql.Open("sqlite", uri(sqliteQuery(
		append(pragmas, "journal_mode(WAL)", "synchronous(NORMAL)", "wal_autocheckpoint(0)"), "immediate")))
	if err != nil {
		return conns{}, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	pinOneConn(rw)
	ck, err := sql.Open("sqlite", uri(sqliteQuery(pragmas, "")))
	if err != nil {
		rw.Close()
		return conns{}, fmt.Errorf("open sqlite %s for checkpoints: %w", abs, err)
	}
	pinOneConn(ck)

	ro, err := sql.Open("sqlite", uri(sqliteQuery(append(pragmas, "query_only(1)"), "")))
	if err != nil {
		rw.Close()
		ck.Close()
		return conns{}, fmt.Errorf("open sqlite %s for reading: %w", abs, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	ro.SetMaxOpenConns(readers)
	ro.SetMaxIdleConns(readers)
	return conns{rw: rw, ro: ro, checkpoint: ck}, nil
}

// checkpointEvery is how often the WAL is copied into the database. A
// passive checkpoint waits for no one and no one waits for it; between
// two the WAL grows by a tenth of a second of writes, about what SQLite's
// own automatic checkpoint would let it grow by.
const checkpointEvery = 100 * time.Millisecond

// checkpointLoop checkpoints the WAL through ck until ctx ends, and once
// more at the end, so a cleanly closed database leaves a short WAL.
func checkpointLoop(ctx context.Context, ck *sql.DB) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_, _ = ck.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`)
			return
		case <-t.C:
			// A failure (busy, a full disk) is tried again next tick; the
			// WAL only grows meanwhile.
			_, _ = ck.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
		}
	}
}

// pinOneConn limits db to one connection that is never closed for age or
// idleness: for the write pool, the single writer; for ":memory:", the
// database itself.
func pinOneConn(db *sql.DB) {
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
}

// sqliteQuery builds the DSN query of modernc.org/sqlite. Pragmas go in
// the DSN rather than being run once after opening so that every
// connection the pool makes, now or after a reconnect, has them.
func sqliteQuery(pragmas []string, txlock string) string {
	v := url.Values{}
	for _, p := range pragmas {
		v.Add("_pragma", p)
	}
	if txlock != "" {
		v.Set("_txlock", txlock)
	}
	return v.Encode()
}
