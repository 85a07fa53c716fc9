package store

import (
	"database/sql"
	"io/fs"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// dialect is everything that differs between SQL engines. The queries in
// this package are written once, with "?" placeholders and SQL that SQLite
// and PostgreSQL both accept (RETURNING, ON CONFLICT, CASE); an engine is a
// value of this type plus a migrations directory.
type dialect struct {
	// name is the engine's name in errors and in the migrations directory.
	name string
	// migrations holds the engine's numbered NNNN_name.sql files.
	migrations fs.FS
	// numbered says the engine wants $1, $2… placeholders instead of ?.
	numbered bool
	// skipLocked is appended to a SELECT that locks the request it is
	// about to claim, so that masters sharing one queue pass over rows
	// another one holds instead of waiting for them. SQLite needs nothing:
	// a writing transaction already holds the whole database.
	skipLocked string
	// nowNanos is an SQL expression for the database's clock now, in
	// nanoseconds since the Unix epoch (how the store keeps times), for
	// heartbeats: the masters of a site share the database's clock, not
	// each other's.
	nowNanos string
	// forShare is appended to a SELECT of a build's row that must hold
	// off a concurrent update of it (an adoption) until the transaction
	// ends. SQLite needs nothing: its writers take turns already.
	forShare string
	// lockBuilder, when set, is a statement taking one argument, a
	// builder's name, that makes claims for that builder take turns until
	// their transactions end, so that each reads the highest build number
	// the previous one wrote. SQLite needs nothing: its write lock
	// already serializes every claim.
	lockBuilder string
	// lockMigration, when set, runs first in every migration transaction
	// and holds off other processes migrating the same database until it
	// ends, so that two masters starting at once do not both create a
	// table. SQLite needs nothing: its write transactions are IMMEDIATE.
	lockMigration string
	// prepare says queries of fixed text gain by being prepared once per
	// connection (see stmtCache): the engine's driver does not cache them.
	prepare bool
	// isUnique and isForeignKey classify constraint violations, which the
	// store reports as Conflict and NotFound.
	isUnique     func(error) bool
	isForeignKey func(error) bool
	// open connects to the database.
	open func(dsn string) (conns, error)
}

// conns is what a dialect's open makes.
type conns struct {
	// Writes go to rw and reads to ro. An engine with one writer (SQLite)
	// gives rw a single connection so that writers queue in Go rather than
	// spin on the file lock; an engine without that limit returns the same
	// pool twice.
	rw, ro *sql.DB
	// listen, on an engine several masters can share (PostgreSQL), is the
	// parsed DSN from which Listen makes its own connection; nil on an
	// engine with one master per database (SQLite).
	listen *pgx.ConnConfig
	// checkpoint, on SQLite in WAL mode, is a connection that copies the
	// write-ahead log into the database in the background (see
	// checkpointLoop), so that no writer pays for it; nil otherwise.
	checkpoint *sql.DB
}

// rebind rewrites the "?" placeholders of query for d. Question marks in
// string literals and quoted identifiers are left alone.
func (d *dialect) rebind(query string) string {
	if !d.numbered || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
