package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache keeps prepared statements of one pool by query text. SQLite
// (modernc.org/sqlite) parses a query every time it runs one that is not
// prepared, which costs more than running the small statements of a
// build's start and end; pgx caches statements itself, so PostgreSQL
// needs none.
//
// A statement is prepared on the pool, which takes a connection. Inside a
// transaction that connection may be the transaction's own (SQLite's
// single writer), so a query first met in a transaction runs unprepared
// and is prepared once the transaction has ended (see DB.inTx); later
// transactions use it through Tx.StmtContext, which reuses the statement
// prepared on the transaction's connection.
//
// Only queries whose text is fixed go through the cache (see DB.prep):
// every text is kept until Close.
type stmtCache struct {
	pool *sql.DB

	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	missed map[string]bool // met in a transaction before being prepared
	failed map[string]bool // could not be prepared: always run unprepared
	closed bool
}

func newStmtCache(pool *sql.DB) *stmtCache {
	return &stmtCache{pool: pool, stmts: map[string]*sql.Stmt{}, missed: map[string]bool{}, failed: map[string]bool{}}
}

// get returns the statement for query, or nil.
func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

// miss notes a query run unprepared in a transaction.
func (c *stmtCache) miss(query string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.failed[query] {
		c.missed[query] = true
	}
}

// prepare returns the statement for query, preparing it on the pool if
// need be; nil if it cannot be prepared (the caller runs it unprepared).
// Never call it while holding the pool's only connection.
func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	st, known, failed := c.stmts[query], c.stmts[query] != nil, c.failed[query] || c.closed
	c.mu.Unlock()
	if known || failed {
		return st
	}
	st, err := c.pool.PrepareContext(ctx, query)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.missed, query)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			c.failed[query] = true
		}
		return nil
	case c.closed:
		st.Close()
		return nil
	case c.stmts[query] != nil: // prepared meanwhile by another caller
		st.Close()
		return c.stmts[query]
	}
	c.stmts[query] = st
	return st
}

// prepareMissed prepares the queries met unprepared in transactions.
func (c *stmtCache) prepareMissed(ctx context.Context) {
	c.mu.Lock()
	var todo []string
	for q := range c.missed {
		todo = append(todo, q)
	}
	c.mu.Unlock()
	for _, q := range todo {
		c.prepare(ctx, q)
	}
}

// close closes every statement; later prepares prepare nothing.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
}

// prep returns q (a pool of s, or a transaction on s.rw) running its
// queries as prepared statements where the engine gains by it. Pass it
// only queries whose text is fixed.
func (s *DB) prep(q queryer) queryer {
	if s.rwStmts == nil {
		return q
	}
	switch q := q.(type) {
	case *sql.Tx:
		return txStmts{tx: q, c: s.rwStmts}
	case *sql.DB:
		switch q {
		case s.rw:
			return poolStmts{c: s.rwStmts}
		case s.ro:
			return poolStmts{c: s.roStmts}
		}
	}
	return q
}

// poolStmts runs queries on a pool as its cache's prepared statements.
type poolStmts struct{ c *stmtCache }

func (p poolStmts) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.c.prepare(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.c.pool.ExecContext(ctx, query, args...)
}

func (p poolStmts) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.c.prepare(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.c.pool.QueryContext(ctx, query, args...)
}

func (p poolStmts) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.c.prepare(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.c.pool.QueryRowContext(ctx, query, args...)
}

// txStmts runs queries in a transaction as prepared statements once the
// cache has them (see stmtCache).
type txStmts struct {
	tx *sql.Tx
	c  *stmtCache
}

func (t txStmts) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.c.get(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	t.c.miss(query)
	return nil
}

func (t txStmts) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t txStmts) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txStmts) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}
