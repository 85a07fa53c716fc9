package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/drover-ci/drover"
)

//go:embed migrations/postgres/*.sql
var postgresFiles embed.FS

// PostgreSQL error codes the store tells apart (SQLSTATE, Appendix A of
// the PostgreSQL manual).
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// Advisory lock keys. The migration lock is a single 64-bit key; builder
// locks use the two-key form, whose key space PostgreSQL keeps apart from
// the single-key one, so no builder name can collide with the migrator.
// The values are arbitrary but fixed: every master sharing a database
// must agree on them.
const (
	// pgMigrateLock is "drover" in ASCII.
	pgMigrateLock = 0x64726f766572
	// pgBuilderLockClass is the first key of a builder's lock; the
	// second is hashtext(builder).
	pgBuilderLockClass = 0x64726f76
)

// Pool settings. A master's store traffic is short transactions from the
// dispatcher, the worker hub and API handlers; a few dozen connections
// serve it, and staying well under PostgreSQL's default max_connections
// (100) leaves room for several masters on one server.
const (
	// pgMaxOpenPerCPU scales the pool with the cores that issue queries.
	pgMaxOpenPerCPU = 4
	pgMinOpen       = 8
	pgMaxOpen       = 32
	pgMaxIdle       = 8
	// Connections are recycled so that a failover, a DNS change or a
	// server-side setting reaches every connection in bounded time.
	pgConnMaxLifetime = 30 * time.Minute
	pgConnMaxIdleTime = 5 * time.Minute
	// pgConnectTimeout bounds the whole connection handshake (DNS, TCP,
	// TLS, authentication) when the DSN sets no connect_timeout, so that a
	// master pointed at an unreachable server fails at start instead of
	// hanging on the operating system's TCP timeout.
	pgConnectTimeout = 10 * time.Second
)

// newPostgres returns the PostgreSQL dialect, served by pgx through its
// database/sql driver.
func newPostgres() *dialect {
	migrations, err := fs.Sub(postgresFiles, "migrations/postgres")
	if err != nil {
		// The directory is embedded at build time; failing here is a
		// build defect, not a runtime condition.
		panic(fmt.Sprintf("store: embedded postgres migrations: %v", err))
	}
	return &dialect{
		name:       "postgres",
		migrations: migrations,
		numbered:   true,
		skipLocked: " FOR UPDATE SKIP LOCKED",
		forShare:   " FOR SHARE",
		nowNanos:   "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000)::bigint",
		// Claims for one builder take turns from reading the highest
		// build number to commit, so two masters never pick the same
		// number. Without it they would both insert it, one would fail on
		// UNIQUE (builder, number) and retry, and under a burst a claim
		// could lose every retry.
		lockBuilder:   `SELECT pg_advisory_xact_lock(` + fmt.Sprint(int64(pgBuilderLockClass)) + `, hashtext(?))`,
		lockMigration: `SELECT pg_advisory_xact_lock(` + fmt.Sprint(int64(pgMigrateLock)) + `)`,
		isUnique:      func(err error) bool { return pgCode(err) == pgUniqueViolation },
		isForeignKey:  func(err error) bool { return pgCode(err) == pgForeignKeyViolation },
		open:          openPostgres,
	}
}

// pgCode returns the SQLSTATE of a PostgreSQL error in err's chain, or "".
func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// openPostgres opens a connection pool for dsn, a postgres:// or
// postgresql:// URL with any of libpq's parameters (sslmode,
// connect_timeout, search_path and other runtime parameters, …). Reads and
// writes share the pool: PostgreSQL has no single-writer limit. Listen
// connects with the same settings.
func openPostgres(dsn string) (conns, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from its parse errors.
		return conns{}, drover.Errorf(drover.Invalid, "postgres DSN: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(min(pgMaxOpen, max(pgMinOpen, pgMaxOpenPerCPU*runtime.GOMAXPROCS(0))))
	db.SetMaxIdleConns(pgMaxIdle)
	db.SetConnMaxLifetime(pgConnMaxLifetime)
	db.SetConnMaxIdleTime(pgConnMaxIdleTime)
	return conns{rw: db, ro: db, listen: cfg}, nil
}

// lockBuilder takes, when the engine needs it, the lock that makes
// claims for builder take turns until tx ends. See dialect.lockBuilder.
func (s *DB) lockBuilder(ctx context.Context, tx *sql.Tx, builder string) error {
	if s.d.lockBuilder == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, s.q(s.d.lockBuilder), builder); err != nil {
		return fmt.Errorf("lock builder %s: %w", builder, err)
	}
	return nil
}
