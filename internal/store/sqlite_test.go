package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/store/storetest"
)

func openTemp(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSQLite(t *testing.T) {
	storetest.RunSuite(t, func(t *testing.T) store.Store {
		return openTemp(t, filepath.Join(t.TempDir(), "state.sqlite"))
	})
}

func TestSQLiteMemory(t *testing.T) {
	storetest.RunSuite(t, func(t *testing.T) store.Store {
		return openTemp(t, "sqlite::memory:")
	})
}

// TestReopen shows that everything written survives closing and opening
// the file again, including the per-builder build numbering.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	db, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	c := &drover.Change{Repository: "r", Revision: "abc"}
	req := &drover.BuildRequest{Builder: "linux", Properties: drover.Properties{"a": "b"}}
	b := &drover.Build{Worker: "w"}
	l := &drover.Log{Name: "stdio"}
	steps := []drover.Step{{Index: 0, Name: "checkout"}}
	mustDo(t, db.AddChange(ctx, c))
	mustDo(t, db.AddRequests(ctx, []*drover.BuildRequest{req}))
	mustDo(t, db.ClaimRequest(ctx, req.ID, b))
	steps[0].BuildID, l.BuildID = b.ID, b.ID
	mustDo(t, db.Builds("").AddSteps(ctx, steps))
	mustDo(t, db.Builds("").AddLog(ctx, l))
	mustDo(t, db.UpsertWorker(ctx, &drover.Worker{Name: "w", Connected: true}))
	mustDo(t, db.AddToken(ctx, &drover.Token{ID: "t", Kind: drover.TokenAPI, Hash: "h", UsesLeft: -1}))
	mustDo(t, db.Close())

	db = openTemp(t, path)
	if _, err := db.GetChange(ctx, c.ID); err != nil {
		t.Errorf("change: %v", err)
	}
	if got, err := db.GetRequest(ctx, req.ID); err != nil || got.State != drover.RequestClaimed || got.Properties["a"] != "b" {
		t.Errorf("request: %+v, %v", got, err)
	}
	if got, err := db.GetBuildByNumber(ctx, "linux", 1); err != nil || got.ID != b.ID {
		t.Errorf("build: %+v, %v", got, err)
	}
	if got, err := db.ListSteps(ctx, b.ID); err != nil || len(got) != 1 {
		t.Errorf("steps: %+v, %v", got, err)
	}
	if _, err := db.GetLog(ctx, l.ID); err != nil {
		t.Errorf("log: %v", err)
	}
	if got, err := db.GetWorker(ctx, "w"); err != nil || !got.Connected {
		t.Errorf("worker: %+v, %v", got, err)
	}
	if _, err := db.GetToken(ctx, "t"); err != nil {
		t.Errorf("token: %v", err)
	}
	req2 := &drover.BuildRequest{Builder: "linux"}
	mustDo(t, db.AddRequests(ctx, []*drover.BuildRequest{req2}))
	b2 := &drover.Build{Worker: "w"}
	mustDo(t, db.ClaimRequest(ctx, req2.ID, b2))
	if b2.Number != 2 || b2.ID <= b.ID {
		t.Errorf("build after reopen: %+v, want number 2 and a new ID", b2)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rawSQLite opens the file behind the store's back, to inspect or tamper.
func rawSQLite(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	for range 3 {
		db, err := store.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		mustDo(t, db.Close())
	}
	raw := rawSQLite(t, path)
	var n, distinct int
	if err := raw.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("migrations/sqlite/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) || distinct != n {
		t.Fatalf("schema_migrations has %d rows (%d versions) after three opens, want %d", n, distinct, len(files))
	}
}

func TestTooNewSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	mustDo(t, db.Close())
	raw := rawSQLite(t, path)
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, name, applied) VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(ctx, path)
	if err == nil {
		t.Fatal("opened a database with a schema from the future")
	}
	if drover.KindOf(err) != drover.Conflict || !strings.Contains(err.Error(), "9999") || !strings.Contains(err.Error(), "upgrade drover") {
		t.Fatalf("got %v (kind %s), want a Conflict naming version 9999 and asking for an upgrade", err, drover.KindOf(err))
	}
}

func TestSQLiteSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	openTemp(t, path)
	raw := rawSQLite(t, path)
	var mode string
	if err := raw.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
	// The same file opened twice (a second master, a CLI tool) works: the
	// second open finds the schema in place.
	second := openTemp(t, path)
	if _, err := second.ListWorkers(ctx); err != nil {
		t.Fatal(err)
	}
}

// The writer never checkpoints the WAL (that made one commit in thirty
// wait for an fsync of the database file); a background connection does,
// so the WAL does not grow without end: the database file takes in what
// it holds within seconds.
func TestSQLiteCheckpointsInTheBackground(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	db := openTemp(t, path)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	var reqs []*drover.BuildRequest
	for i := range 2000 {
		reqs = append(reqs, &drover.BuildRequest{Builder: "b", Reason: strings.Repeat("x", 200) + string(rune('a'+i%26))})
	}
	mustDo(t, db.AddRequests(ctx, reqs))
	deadline := time.Now().Add(10 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 10 s after writes: the WAL was not checkpointed", before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOpenDSN(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		dsn      string
		wantKind drover.Kind // Internal: must open
		file     string      // a file that must exist afterwards
	}{
		{dsn: filepath.Join(dir, "plain.sqlite"), file: "plain.sqlite"},
		{dsn: "sqlite:" + filepath.Join(dir, "prefixed.sqlite"), file: "prefixed.sqlite"},
		{dsn: "sqlite://" + filepath.Join(dir, "url.sqlite"), file: "url.sqlite"},
		{dsn: filepath.Join(dir, "odd?name#x.sqlite"), file: "odd?name#x.sqlite"},
		{dsn: ":memory:"},
		{dsn: "", wantKind: drover.Invalid},
		{dsn: "sqlite:", wantKind: drover.Invalid},
		// PostgreSQL URLs go to the PostgreSQL engine, which finds no
		// server on port 1 (see postgres_test.go for the rest).
		{dsn: "postgres://drover@127.0.0.1:1/drover?sslmode=disable", wantKind: drover.Unavailable},
		{dsn: "postgresql://drover@127.0.0.1:1/drover?sslmode=disable", wantKind: drover.Unavailable},
		{dsn: "postgres://drover@127.0.0.1/drover?sslmode=sometimes", wantKind: drover.Invalid},
		{dsn: filepath.Join(dir, "no-such-dir", "x.sqlite"), wantKind: drover.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.dsn, func(t *testing.T) {
			db, err := store.Open(ctx, tc.dsn)
			if tc.wantKind != drover.Internal {
				if err == nil {
					db.Close()
					t.Fatalf("opened %q, want a %s error", tc.dsn, tc.wantKind)
				}
				if got := drover.KindOf(err); got != tc.wantKind {
					t.Fatalf("open %q: %v (kind %s), want kind %s", tc.dsn, err, got, tc.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatalf("open %q: %v", tc.dsn, err)
			}
			t.Cleanup(func() { db.Close() })
			if _, err := db.ListBuilds(ctx, drover.BuildFilter{}); err != nil {
				t.Fatal(err)
			}
			if tc.file != "" {
				if _, err := os.Stat(filepath.Join(dir, tc.file)); err != nil {
					t.Fatalf("database file: %v", err)
				}
			}
		})
	}
}

func TestOpenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := store.Open(ctx, filepath.Join(t.TempDir(), "state.sqlite"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("open with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestTimesOutOfRange(t *testing.T) {
	db := openTemp(t, filepath.Join(t.TempDir(), "state.sqlite"))
	err := db.AddChange(context.Background(), &drover.Change{When: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if drover.KindOf(err) != drover.Invalid {
		t.Fatalf("storing a time beyond int64 nanoseconds: %v, want an Invalid error", err)
	}
}

// TestSQLiteNotifyNowhere shows that on SQLite, one master per database,
// notices reach no one, and Listen only waits for its context.
func TestSQLiteNotifyNowhere(t *testing.T) {
	db := openTemp(t, filepath.Join(t.TempDir(), "state.sqlite"))
	ctx, cancel := context.WithCancel(context.Background())
	var heard, lost atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- db.Listen(ctx, func([]byte) { heard.Add(1) }, func() { lost.Add(1) })
	}()
	mustDo(t, db.Notify(ctx, []byte("hello")))
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Listen after its context ended: %v, want nil", err)
	}
	if heard.Load() != 0 || lost.Load() != 0 {
		t.Fatalf("SQLite Listen heard %d notices and lost %d times, want none", heard.Load(), lost.Load())
	}
}
