package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/drover-ci/drover"
)

func TestRebind(t *testing.T) {
	tests := []struct {
		in, numbered string
	}{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE x = ? AND y = ?", "SELECT a FROM t WHERE x = $1 AND y = $2"},
		{"SELECT '?' FROM t WHERE x = ?", "SELECT '?' FROM t WHERE x = $1"},
		{`SELECT "a?" FROM t WHERE x IN (?, ?, ?)`, `SELECT "a?" FROM t WHERE x IN ($1, $2, $3)`},
		{"UPDATE t SET s = 'it''s?' WHERE id = ?", "UPDATE t SET s = 'it''s?' WHERE id = $1"},
	}
	plain := &dialect{}
	numbered := &dialect{numbered: true}
	for _, tc := range tests {
		if got := plain.rebind(tc.in); got != tc.in {
			t.Errorf("plain rebind(%q) = %q, want it unchanged", tc.in, got)
		}
		if got := numbered.rebind(tc.in); got != tc.numbered {
			t.Errorf("numbered rebind(%q) = %q, want %q", tc.in, got, tc.numbered)
		}
	}
}

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ms, err := loadMigrations(fstest.MapFS{
		"0010_later.sql": file("B"),
		"0002_next.sql":  file("A"),
		"0001_init.sql":  file("0"),
		"README":         file("not a migration"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range ms {
		got = append(got, m.version)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 10 || ms[1].sql != "A" {
		t.Fatalf("loaded %v, want versions 1, 2, 10 in order", got)
	}

	bad := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"no number", fstest.MapFS{"init.sql": file("")}, "NNNN_description"},
		{"zero", fstest.MapFS{"0000_init.sql": file("")}, "NNNN_description"},
		{"duplicate", fstest.MapFS{"0001_a.sql": file(""), "01_b.sql": file("")}, "same version"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadMigrations(tc.fs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestEmbeddedSQLiteMigrations(t *testing.T) {
	ms, err := loadMigrations(newSQLite().migrations)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.version != i+1 {
			t.Fatalf("migration %s has version %d, want %d: versions must count up from 1 with no gap", m.name, m.version, i+1)
		}
	}
}

// TestPostgresMigrationsLineUp checks that the engines' migrations carry
// the same versions and names, so that a schema version means the same
// on both and a fix to one engine's schema is not forgotten in the other.
func TestPostgresMigrationsLineUp(t *testing.T) {
	lite, err := loadMigrations(newSQLite().migrations)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations(newPostgres().migrations)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ms []migration) []string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%d %s", m.version, m.name))
		}
		return out
	}
	if got, want := strings.Join(names(pg), ", "), strings.Join(names(lite), ", "); got != want {
		t.Fatalf("postgres migrations: %s\nsqlite migrations:   %s\nwant the same versions and names", got, want)
	}
}

func TestPostgresErrorClasses(t *testing.T) {
	d := newPostgres()
	wrap := func(code string) error {
		return fmt.Errorf("insert: %w", &pgconn.PgError{Code: code, Message: "violation"})
	}
	tests := []struct {
		name         string
		err          error
		unique, fkey bool
	}{
		{"unique", wrap("23505"), true, false},
		{"foreign key", wrap("23503"), false, true},
		{"check", wrap("23514"), false, false},
		{"not postgres", errors.New("23505"), false, false},
		{"nil", nil, false, false},
	}
	for _, tc := range tests {
		if got := d.isUnique(tc.err); got != tc.unique {
			t.Errorf("%s: isUnique = %v, want %v", tc.name, got, tc.unique)
		}
		if got := d.isForeignKey(tc.err); got != tc.fkey {
			t.Errorf("%s: isForeignKey = %v, want %v", tc.name, got, tc.fkey)
		}
	}
	if q := d.rebind(`SELECT x FROM t WHERE id = ?` + d.skipLocked); q != `SELECT x FROM t WHERE id = $1 FOR UPDATE SKIP LOCKED` {
		t.Errorf("claim query = %q", q)
	}
}

// TestPreparedStatements shows that on SQLite a query of a transaction is
// prepared once that transaction has ended, and that later transactions
// and plain writes run it prepared, on a file database and in memory.
func TestPreparedStatements(t *testing.T) {
	for _, dsn := range []string{filepath.Join(t.TempDir(), "s.sqlite"), ":memory:"} {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		claim := func() *drover.Build {
			t.Helper()
			reqs := []*drover.BuildRequest{{Builder: "b"}}
			if err := s.AddRequests(ctx, reqs); err != nil {
				t.Fatal(err)
			}
			b := &drover.Build{Worker: "w"}
			if err := s.ClaimRequest(ctx, reqs[0].ID, b); err != nil {
				t.Fatal(err)
			}
			return b
		}
		claim()
		s.rwStmts.mu.Lock()
		n, missed := len(s.rwStmts.stmts), len(s.rwStmts.missed)
		s.rwStmts.mu.Unlock()
		if n < 5 || missed != 0 {
			t.Fatalf("%s: after a claim, %d statements prepared and %d waiting", dsn, n, missed)
		}
		b := claim()
		if b.Number != 2 {
			t.Fatalf("%s: second build has number %d", dsn, b.Number)
		}
		st := &drover.Step{BuildID: b.ID, Index: 0, Name: "x"}
		if err := s.Builds("").AddSteps(ctx, []drover.Step{*st}); err != nil {
			t.Fatal(err)
		}
		st.State = drover.StepRunning
		for range 2 { // prepared on the pool, then used
			if err := s.Builds("").UpdateStep(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Builds("").UpdateStep(ctx, st); drover.KindOf(err) != drover.Unavailable {
			t.Fatalf("%s: update after close: %v", dsn, err)
		}
	}
}
