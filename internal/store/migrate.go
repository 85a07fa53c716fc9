package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// migration is one numbered schema change, from a file NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads and orders the migrations in fsys.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, name := range names {
		num, _, ok := strings.Cut(strings.TrimSuffix(path.Base(name), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	return ms, nil
}

// createMigrationsTable is valid on every engine we target.
const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version BIGINT PRIMARY KEY,
	name    TEXT NOT NULL,
	applied BIGINT NOT NULL
)`

// migrate brings the schema of db up to date with ms, each migration in its
// own transaction together with its row in schema_migrations, so that a
// crash leaves the schema at some whole version. It refuses a database
// that has a migration this binary does not know: an older drover must not
// write to a schema it does not understand.
//
// On engines with a migration lock (PostgreSQL), each transaction takes it
// first, so masters starting together on one database migrate one at a
// time; the one that comes second finds the work done.
func migrate(ctx context.Context, d *dialect, db *sql.DB, ms []migration) error {
	err := inMigrationTx(ctx, d, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, createMigrationsTable)
		return err
	})
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, d, db)
	if err != nil {
		return err
	}
	known := map[int]bool{}
	latest := 0
	for _, m := range ms {
		known[m.version] = true
		latest = max(latest, m.version)
	}
	for v := range applied {
		if !known[v] {
			newest := slices.Max(slices.Collect(maps.Keys(applied)))
			return drover.Errorf(drover.Conflict,
				"database schema version %d is newer than this drover knows (%d): upgrade drover", newest, latest)
		}
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if err := applyMigration(ctx, d, db, m); err != nil {
			return err
		}
	}
	return nil
}

func appliedVersions(ctx context.Context, d *dialect, db *sql.DB) (map[int]bool, error) {
	rows, err := db.QueryContext(ctx, d.rebind(`SELECT version FROM schema_migrations`))
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return applied, nil
}

func applyMigration(ctx context.Context, d *dialect, db *sql.DB, m migration) error {
	err := inMigrationTx(ctx, d, db, func(tx *sql.Tx) error {
		// Another process may have applied it since we looked; the check
		// and the change are in one transaction (holding the migration
		// lock where the engine has one), so only one of them does.
		var n int
		if err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`),
			m.version, m.name, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	return nil
}

// inMigrationTx runs fn in a transaction that first takes d's migration
// lock, if it has one, and commits when fn returns nil.
func inMigrationTx(ctx context.Context, d *dialect, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if d.lockMigration != "" {
		if _, err := tx.ExecContext(ctx, d.lockMigration); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
