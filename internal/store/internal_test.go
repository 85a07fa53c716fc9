package store

import (
	"strings"
	"testing"
	"testing/fstest"
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
