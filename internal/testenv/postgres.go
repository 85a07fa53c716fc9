package testenv

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
)

// PostgresDSN returns the DSN of a fresh schema in the test PostgreSQL
// server ($DROVER_TEST_POSTGRES, else postgres@127.0.0.1:5432/test), dropped
// at cleanup. Without a server the test fails in CI and is skipped
// elsewhere.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DROVER_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sql.Open("pgx", base)
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s: %v", base, err)
		}
		t.Skipf("no PostgreSQL at %s (%v); scripts/test starts or installs one", base, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "drover_e2e_" + hex.EncodeToString(b)
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		// The master has stopped by now (cleanups run in reverse order),
		// but the server may not yet have ended its sessions, whose locks
		// hold the drop back: retry until it succeeds, for a while.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Logf("schema %s left behind: drop: %v", schema, err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		db.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
