package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to manage test schemas behind the store's back

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/store/storetest"
)

// defaultTestPostgres is the server scripts/test makes sure of: the local
// one, trusting connections from 127.0.0.1.
const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testPostgres is a PostgreSQL server the tests may create schemas in.
type testPostgres struct {
	dsn   string  // as given, a postgres:// URL
	admin *sql.DB // for CREATE and DROP SCHEMA
}

// postgresServer connects to $DROVER_TEST_POSTGRES, or to the local
// server as user postgres and then root. It skips t when no server
// answers, or fails it on CI, where the server is part of the setup.
func postgresServer(t *testing.T) *testPostgres {
	t.Helper()
	candidates := []string{os.Getenv("DROVER_TEST_POSTGRES")}
	if candidates[0] == "" {
		candidates = []string{defaultTestPostgres, strings.Replace(defaultTestPostgres, "//postgres@", "//root@", 1)}
	}
	var errs []string
	for _, dsn := range candidates {
		db, err := pingPostgres(dsn)
		if err == nil {
			t.Cleanup(func() { db.Close() })
			return &testPostgres{dsn: dsn, admin: db}
		}
		errs = append(errs, fmt.Sprintf("%s: %v", dsn, err))
	}
	msg := "no PostgreSQL to test against (set DROVER_TEST_POSTGRES to a postgres:// URL): " + strings.Join(errs, "; ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return nil
}

func pingPostgres(dsn string) (*sql.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// schema creates a schema of its own for t, dropped when t ends, and
// returns a DSN whose connections use it, so that tests running in
// parallel on one database never see each other's tables.
func (p *testPostgres) schema(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	name := "drover_test_" + hex.EncodeToString(b)
	if _, err := p.admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatalf("create schema %s: %v", name, err)
	}
	// Registered before the test opens its stores, so it runs after
	// their Close (cleanups run last first): DROP waits for no one.
	t.Cleanup(func() {
		if _, err := p.admin.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	u, err := url.Parse(p.dsn)
	if err != nil {
		t.Fatalf("DROVER_TEST_POSTGRES must be a postgres:// URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestPostgres(t *testing.T) {
	pg := postgresServer(t)
	storetest.RunSuite(t, func(t *testing.T) store.Store {
		return openTemp(t, pg.schema(t))
	})
}

// TestPostgresTwoMasters races claimers on two stores (two masters) over
// one queue: each request is claimed exactly once, and every builder's
// numbers count 1…n with no gap or repeat.
func TestPostgresTwoMasters(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	ctx := context.Background()
	masters := []*store.DB{openTemp(t, dsn), openTemp(t, dsn)}

	const (
		builders     = 3
		perBuilder   = 15
		perMaster    = 4 // dispatching goroutines on each master
		claimsPerReq = 2 // passes each goroutine makes over the queue
	)
	var reqs []*drover.BuildRequest
	for b := range builders {
		for range perBuilder {
			reqs = append(reqs, &drover.BuildRequest{Builder: fmt.Sprintf("b%d", b)})
		}
	}
	mustDo(t, masters[0].AddRequests(ctx, reqs))

	var (
		mu      sync.Mutex
		claimed = map[int64][]*drover.Build{}
	)
	var wg sync.WaitGroup
	for m, db := range masters {
		for g := range perMaster {
			wg.Go(func() {
				worker := fmt.Sprintf("m%d-w%d", m, g)
				for range claimsPerReq {
					// Each goroutine walks the queue in its own order,
					// as dispatchers with different workers would.
					for i := range reqs {
						r := reqs[(i*(2*g+1)+m*7)%len(reqs)]
						b := &drover.Build{Worker: worker}
						err := db.ClaimRequest(ctx, r.ID, b)
						switch {
						case err == nil:
							mu.Lock()
							claimed[r.ID] = append(claimed[r.ID], b)
							mu.Unlock()
						case drover.KindOf(err) != drover.Conflict:
							t.Errorf("master %d: claim %d: %v", m, r.ID, err)
						}
					}
				}
			})
		}
	}
	wg.Wait()

	numbers := map[string][]int{}
	for _, r := range reqs {
		bs := claimed[r.ID]
		if len(bs) != 1 {
			t.Fatalf("request %d claimed %d times", r.ID, len(bs))
		}
		numbers[r.Builder] = append(numbers[r.Builder], bs[0].Number)
	}
	want := make([]int, perBuilder)
	for i := range want {
		want[i] = i + 1
	}
	for builder, ns := range numbers {
		slices.Sort(ns)
		if !slices.Equal(ns, want) {
			t.Fatalf("build numbers of %s: %v, want %v", builder, ns, want)
		}
	}
	// Both masters read the same queue: nothing is left pending, and the
	// other master sees every build.
	pending, err := masters[1].ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	mustDo(t, err)
	all, err := masters[1].ListBuilds(ctx, drover.BuildFilter{Limit: 1000})
	mustDo(t, err)
	if len(pending) != 0 || len(all) != len(reqs) {
		t.Fatalf("after the race: %d requests pending and %d builds, want 0 and %d", len(pending), len(all), len(reqs))
	}
}

// TestPostgresConcurrentMigrate starts several masters at once on an
// empty schema: the migration lock lets one migrate while the others
// wait and then find the schema current.
func TestPostgresConcurrentMigrate(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	const masters = 5
	errs := make([]error, masters)
	var wg sync.WaitGroup
	for i := range masters {
		wg.Go(func() {
			db, err := store.Open(context.Background(), dsn)
			if err == nil {
				err = db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("master %d: %v", i, err)
		}
	}

	files, err := filepath.Glob("migrations/postgres/*.sql")
	mustDo(t, err)
	var n, distinct int
	if err := pg.admin.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version) FROM `+schemaOf(t, dsn)+`.schema_migrations`).
		Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != len(files) || distinct != n {
		t.Fatalf("schema_migrations has %d rows (%d versions), want %d", n, distinct, len(files))
	}
	db := openTemp(t, dsn)
	mustDo(t, db.UpsertWorker(context.Background(), &drover.Worker{Name: "w"}))
}

func TestPostgresTooNewSchemaRefused(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	mustDo(t, err)
	mustDo(t, db.Close())
	if _, err := pg.admin.Exec(`INSERT INTO ` + schemaOf(t, dsn) + `.schema_migrations (version, name, applied)
		VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(ctx, dsn)
	if err == nil {
		t.Fatal("opened a database with a schema from the future")
	}
	if drover.KindOf(err) != drover.Conflict || !strings.Contains(err.Error(), "9999") {
		t.Fatalf("got %v (kind %s), want a Conflict naming version 9999", err, drover.KindOf(err))
	}
}

// TestPostgresReopen shows that a second open of a migrated schema (a
// master's restart) keeps the data and the build numbering.
func TestPostgresReopen(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	mustDo(t, err)
	req := &drover.BuildRequest{Builder: "linux"}
	mustDo(t, db.AddRequests(ctx, []*drover.BuildRequest{req}))
	b := &drover.Build{Worker: "w"}
	mustDo(t, db.ClaimRequest(ctx, req.ID, b))
	mustDo(t, db.Close())

	db = openTemp(t, dsn)
	if got, err := db.GetBuildByNumber(ctx, "linux", 1); err != nil || got.ID != b.ID {
		t.Fatalf("build after reopen: %+v, %v", got, err)
	}
	req2 := &drover.BuildRequest{Builder: "linux"}
	mustDo(t, db.AddRequests(ctx, []*drover.BuildRequest{req2}))
	b2 := &drover.Build{Worker: "w"}
	mustDo(t, db.ClaimRequest(ctx, req2.ID, b2))
	if b2.Number != 2 || b2.ID <= b.ID || req2.ID <= req.ID {
		t.Fatalf("after reopen: build %+v of request %d, want number 2 and new IDs", b2, req2.ID)
	}
}

// TestPostgresOpenErrors checks the kinds of errors of PostgreSQL DSNs
// that need no server.
func TestPostgresOpenErrors(t *testing.T) {
	tests := []struct {
		dsn  string
		want drover.Kind
	}{
		// Port 1 on loopback refuses at once.
		{"postgres://drover@127.0.0.1:1/drover?sslmode=disable&connect_timeout=2", drover.Unavailable},
		{"postgresql://drover:secret@127.0.0.1:1/drover?sslmode=disable", drover.Unavailable},
		{"postgres://drover@127.0.0.1:5432/drover?sslmode=bogus", drover.Invalid},
		{"postgres://drover@127.0.0.1:5432/drover?connect_timeout=soon", drover.Invalid},
		{"postgres://drover:secret@127.0.0.1:notaport/drover", drover.Invalid},
	}
	for _, tc := range tests {
		t.Run(tc.dsn, func(t *testing.T) {
			db, err := store.Open(context.Background(), tc.dsn)
			if err == nil {
				db.Close()
				t.Fatalf("opened %q, want a %s error", tc.dsn, tc.want)
			}
			if got := drover.KindOf(err); got != tc.want {
				t.Fatalf("open %q: %v (kind %s), want kind %s", tc.dsn, err, got, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// schemaOf returns the search_path of dsn, the schema a test made.
func schemaOf(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	mustDo(t, err)
	return u.Query().Get("search_path")
}

// TestPostgresBuildNumberRetry makes a claim pick a build number that a
// concurrent transaction (another master, without the builder lock)
// holds but has not committed: the claim waits on UNIQUE (builder,
// number), fails when the other commits, and retries with the next number.
func TestPostgresBuildNumberRetry(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	ctx := context.Background()
	db, err := store.OpenWithoutBuilderLock(ctx, dsn)
	mustDo(t, err)
	t.Cleanup(func() { db.Close() })
	req := &drover.BuildRequest{Builder: "linux"}
	mustDo(t, db.AddRequests(ctx, []*drover.BuildRequest{req}))

	schema := schemaOf(t, dsn)
	other, err := pg.admin.BeginTx(ctx, nil)
	mustDo(t, err)
	defer other.Rollback()
	var otherReq int64
	if err := other.QueryRow(`INSERT INTO ` + schema + `.build_requests (builder, state, submitted)
		VALUES ('linux', 'claimed', 0) RETURNING id`).Scan(&otherReq); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(`INSERT INTO `+schema+`.builds (builder, number, request_id, state, started)
		VALUES ('linux', 1, $1, 'running', 0)`, otherReq); err != nil {
		t.Fatal(err)
	}

	b := &drover.Build{Worker: "w"}
	done := make(chan error, 1)
	go func() { done <- db.ClaimRequest(ctx, req.ID, b) }()

	// Commit only once the claim waits on the uncommitted number, so the
	// test takes the retry path every time rather than by luck.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := pg.admin.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO builds%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim never waited on the other transaction's build number")
		}
		select {
		case err := <-done:
			t.Fatalf("the claim finished without waiting: %v, %+v", err, b)
		case <-time.After(10 * time.Millisecond):
		}
	}
	mustDo(t, other.Commit())
	if err := <-done; err != nil {
		t.Fatalf("claim after losing its number: %v", err)
	}
	if b.Number != 2 {
		t.Fatalf("claim got number %d, want 2 (1 was taken)", b.Number)
	}
	got, err := db.GetRequest(ctx, req.ID)
	mustDo(t, err)
	if got.State != drover.RequestClaimed || got.Tries != 1 {
		t.Fatalf("request after a retried claim: %+v, want claimed once", got)
	}
}

// withAppName returns dsn with its connections named name in
// pg_stat_activity, so that a test can find them among those of other
// tests sharing the server.
func withAppName(t *testing.T, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	mustDo(t, err)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// inbox collects the notices a Listen receives whose payload starts with
// prefix; other tests sharing the database send notices too.
type inbox struct {
	prefix string
	mu     sync.Mutex
	got    map[string]int
	lost   int
}

func (b *inbox) receive(p []byte) {
	if !strings.HasPrefix(string(p), b.prefix) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got[string(p)]++
}

func (b *inbox) lose() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lost++
}

func (b *inbox) has(p string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got[p] > 0
}

func (b *inbox) losses() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lost
}

// eventually polls cond every 10 ms until it holds, failing t after 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostgresNotify has one master listen and another notify on one
// database: notices arrive, and when the listener's connection is killed
// Listen reconnects, reports the gap with lost, and notices arrive again.
func TestPostgresNotify(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	b := make([]byte, 8)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	appName := "drover_test_listen_" + tag
	listener := openTemp(t, withAppName(t, dsn, appName))
	sender := openTemp(t, dsn)
	ctx := context.Background()

	box := &inbox{prefix: tag + ":", got: map[string]int{}}
	lctx, stop := context.WithCancel(ctx)
	var listenErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		listenErr = listener.Listen(lctx, box.receive, box.lose)
	}()
	t.Cleanup(func() {
		stop()
		<-exited
	})

	// Listen has no "ready" signal: notify until one arrives.
	ready := tag + ":ready"
	eventually(t, "the listener to hear a notice", func() bool {
		mustDo(t, sender.Notify(ctx, []byte(ready)))
		time.Sleep(20 * time.Millisecond)
		return box.has(ready)
	})
	for i := range 3 {
		p := fmt.Sprintf("%s:event %d", tag, i)
		mustDo(t, sender.Notify(ctx, []byte(p)))
		eventually(t, p, func() bool { return box.has(p) })
	}
	// The listener's own notices come back too.
	own := tag + ":own"
	mustDo(t, listener.Notify(ctx, []byte(own)))
	eventually(t, own, func() bool { return box.has(own) })

	err := sender.Notify(ctx, []byte(tag+":"+strings.Repeat("x", store.MaxNotifyPayload)))
	if drover.KindOf(err) != drover.Invalid {
		t.Fatalf("oversize notice: %v, want an Invalid error", err)
	}
	if n := box.losses(); n != 0 {
		t.Fatalf("lost called %d times on a healthy connection", n)
	}

	// Kill the listener's backends, its listening connection and its
	// idle pool: Listen must notice, reconnect and say that it may have
	// missed notices.
	var killed int
	if err := pg.admin.QueryRow(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, appName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("found no backend of the listener to kill")
	}
	eventually(t, "lost after the connection was killed", func() bool { return box.losses() > 0 })
	// lost is called once Listen listens again: a notice sent now arrives.
	after := tag + ":after"
	mustDo(t, sender.Notify(ctx, []byte(after)))
	eventually(t, after, func() bool { return box.has(after) })

	stop()
	select {
	case <-exited:
		if listenErr != nil {
			t.Fatalf("Listen after its context ended: %v, want nil", listenErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Listen did not return after its context ended")
	}
}

// Notices stay within their site: a site in another schema of the same
// database does not hear them, though NOTIFY channels are database-wide.
func TestPostgresNotifyStaysInItsSchema(t *testing.T) {
	pg := postgresServer(t)
	b := make([]byte, 8)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	here, there := openTemp(t, pg.schema(t)), openTemp(t, pg.schema(t))
	ctx := context.Background()
	boxHere := &inbox{prefix: tag + ":", got: map[string]int{}}
	boxThere := &inbox{prefix: tag + ":", got: map[string]int{}}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, l := range []struct {
		db  store.Store
		box *inbox
	}{{here, boxHere}, {there, boxThere}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.db.Listen(lctx, l.box.receive, l.box.lose)
		}()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	eventually(t, "both listeners to hear their own site", func() bool {
		mustDo(t, here.Notify(ctx, []byte(tag+":here")))
		mustDo(t, there.Notify(ctx, []byte(tag+":there")))
		time.Sleep(20 * time.Millisecond)
		return boxHere.has(tag+":here") && boxThere.has(tag+":there")
	})
	if boxHere.has(tag+":there") || boxThere.has(tag+":here") {
		t.Fatal("a notice crossed to a site in another schema")
	}
}

// TestPostgresAdoptRace has two masters, each with several goroutines,
// race to adopt the running builds of a dead one: each build goes to
// exactly one of them.
func TestPostgresAdoptRace(t *testing.T) {
	pg := postgresServer(t)
	dsn := pg.schema(t)
	ctx := context.Background()
	masters := []*store.DB{openTemp(t, dsn), openTemp(t, dsn)}

	const (
		builds    = 20
		perMaster = 4
	)
	var ids []int64
	for range builds {
		req := &drover.BuildRequest{Builder: "linux"}
		mustDo(t, masters[0].AddRequests(ctx, []*drover.BuildRequest{req}))
		b := &drover.Build{Worker: "w", Master: "dead"}
		mustDo(t, masters[0].ClaimRequest(ctx, req.ID, b))
		ids = append(ids, b.ID)
	}

	var (
		mu  sync.Mutex
		won = map[int64][]string{}
	)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for m, db := range masters {
		for g := range perMaster {
			wg.Go(func() {
				me := fmt.Sprintf("m%d", m) // the goroutines of a master are one master
				<-start
				for i := range ids {
					id := ids[(i*(2*g+1)+m*7)%len(ids)]
					ok, err := db.AdoptBuild(ctx, id, "dead", me)
					if err != nil {
						t.Errorf("%s adopts build %d: %v", me, id, err)
						return
					}
					if ok {
						mu.Lock()
						won[id] = append(won[id], me)
						mu.Unlock()
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()

	for _, id := range ids {
		if len(won[id]) != 1 {
			t.Fatalf("build %d adopted %d times (%v), want once", id, len(won[id]), won[id])
		}
		b, err := masters[1].GetBuild(ctx, id)
		mustDo(t, err)
		if b.Master != won[id][0] {
			t.Fatalf("build %d is driven by %q, but %q was told it won", id, b.Master, won[id][0])
		}
	}
}
