package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
)

// Test tokens and the roles they carry, in the form tokens.New makes, so
// that writes can record the public id (the part after "api_").
const (
	adminToken    = "drover_api_ad0000000001_admin-secret"
	operatorToken = "drover_api_0e0000000002_operator-secret"
	readerToken   = "drover_api_4e0000000003_reader-secret"
)

// testBackend is a Backend over a real store implementation: reads go to
// the store, writes change the store and publish events as the master
// does, and logs live in memory with live followers.
type testBackend struct {
	st       store.Store
	bus      *events.Bus
	builders []drover.Builder
	tokens   map[string]drover.Role
	logs     *memLogs

	// failEligibility, when set, is returned by Eligibility, to test how
	// internal errors are hidden.
	failEligibility error

	mu sync.Mutex
	// waiting says why each pending request waits; Queue says "waiting
	// for a worker" for the others.
	waiting map[int64]string
	// locks is what Locks returns; set with setLocks.
	locks []drover.LockState
	// queueErr, when set, is returned by Queue.
	queueErr error
	// cfg is the config in force and next is what Reload loads: Reload
	// swaps them, as an operator editing the file back and forth would,
	// unless next.err refuses the load.
	cfg, next testConfig
	// status is the record of loads that ConfigStatus reports.
	status ConfigStatus
}

// testConfig is one version of the config file: its hash and builders,
// or the loader's error when it is broken.
type testConfig struct {
	hash     string
	builders []drover.Builder
	err      error
}

var _ Backend = (*testBackend)(nil)

func (b *testBackend) Reader() Reader { return b.st }
func (b *testBackend) Title() string  { return "Test" }
func (b *testBackend) URL() string    { return "http://ci.example.org/" }

func (b *testBackend) Builders() []drover.Builder {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.builders
}

func (b *testBackend) Builder(name string) (*drover.Builder, bool) {
	for _, bl := range b.Builders() {
		if bl.Name == name {
			return &bl, true
		}
	}
	return nil, false
}

func (b *testBackend) Site(context.Context) (SiteStatus, error) {
	return SiteStatus{This: "test"}, nil
}

func (b *testBackend) ConfigStatus() ConfigStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.status
	st.Builders = len(b.cfg.builders)
	return st
}

// Reload loads b.next as the master loads its file: a broken one is
// refused with Invalid and recorded, a good one takes over (and the one it
// replaces becomes the next to load) and is announced.
func (b *testBackend) Reload(ctx context.Context) error {
	b.mu.Lock()
	now := time.Now().UTC()
	if err := b.next.err; err != nil {
		b.status.LastError, b.status.ErrorAt = err.Error(), now
		b.mu.Unlock()
		return drover.Errorf(drover.Invalid, "config refused: %w", err)
	}
	b.cfg, b.next = b.next, b.cfg
	b.status = ConfigStatus{Path: b.status.Path, Hash: b.cfg.hash, LoadedAt: now}
	b.mu.Unlock()
	b.bus.Publish(events.Event{Type: events.ConfigLoaded})
	return nil
}

// setNextConfig sets what the next Reload loads.
func (b *testBackend) setNextConfig(c testConfig) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next = c
}

func (b *testBackend) Force(ctx context.Context, req *drover.BuildRequest) error {
	if _, ok := b.Builder(req.Builder); !ok {
		return drover.Errorf(drover.NotFound, "no builder %q", req.Builder)
	}
	if err := b.st.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		return fmt.Errorf("add request: %w", err)
	}
	b.bus.Publish(events.Event{Type: events.RequestAdded, Builder: req.Builder, Request: req.ID})
	return nil
}

func (b *testBackend) AddChange(ctx context.Context, c *drover.Change) error {
	if err := b.st.AddChange(ctx, c); err != nil {
		return fmt.Errorf("add change: %w", err)
	}
	b.bus.Publish(events.Event{Type: events.ChangeAdded})
	return nil
}

func (b *testBackend) CancelBuild(ctx context.Context, id int64, reason string) error {
	build, err := b.st.GetBuild(ctx, id)
	if err != nil {
		return err
	}
	if build.State == drover.BuildFinished {
		return drover.Errorf(drover.Conflict, "build %d has finished", id)
	}
	if err := b.st.Builds("").FinishBuild(ctx, id, drover.Cancelled, reason, time.Now().UTC(), false); err != nil {
		return err
	}
	b.bus.Publish(events.Event{Type: events.BuildFinished, BuildID: id, Builder: build.Builder, Result: string(drover.Cancelled)})
	return nil
}

func (b *testBackend) CancelRequest(ctx context.Context, id int64, reason string) error {
	if err := b.st.CancelRequest(ctx, id, reason); err != nil {
		return err
	}
	b.bus.Publish(events.Event{Type: events.RequestChanged, Request: id})
	return nil
}

func (b *testBackend) Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error) {
	if b.failEligibility != nil {
		return nil, b.failEligibility
	}
	bl, ok := b.Builder(builder)
	if !ok {
		return nil, drover.Errorf(drover.NotFound, "no builder %q", builder)
	}
	ws, err := b.st.ListWorkers(ctx)
	if err != nil {
		return nil, err
	}
	var out []drover.Eligibility
	for _, w := range ws {
		out = append(out, drover.CheckEligibility(bl, w.Name, w.Facts))
	}
	return out, nil
}

// Queue returns the pending requests of the store in queue order, with
// the reasons set in b.waiting.
func (b *testBackend) Queue(ctx context.Context) ([]drover.QueueEntry, error) {
	b.mu.Lock()
	qerr := b.queueErr
	b.mu.Unlock()
	if qerr != nil {
		return nil, qerr
	}
	reqs, err := b.st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return nil, fmt.Errorf("list pending requests: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]drover.QueueEntry, 0, len(reqs))
	for _, r := range reqs {
		why, ok := b.waiting[r.ID]
		if !ok {
			why = "waiting for a worker"
		}
		out = append(out, drover.QueueEntry{Request: r, Waiting: why})
	}
	return out, nil
}

func (b *testBackend) setWaiting(id int64, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting == nil {
		b.waiting = make(map[int64]string)
	}
	b.waiting[id] = why
}

func (b *testBackend) Locks() []drover.LockState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.locks)
}

func (b *testBackend) setLocks(ls []drover.LockState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.locks = ls
}

// SetAvailability stores an operator's override as the master does and
// publishes the change.
func (b *testBackend) SetAvailability(ctx context.Context, worker string, a drover.Availability, reason, by string) error {
	var o *drover.AvailabilityOverride
	if a != "" {
		if _, err := drover.ParseAvailability(string(a)); err != nil {
			return err
		}
		o = &drover.AvailabilityOverride{Availability: a, Reason: reason, By: by, At: time.Now().UTC()}
	}
	if err := b.st.SetAvailabilityOverride(ctx, worker, o); err != nil {
		return fmt.Errorf("set availability override: %w", err)
	}
	b.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	return nil
}

// SetApproval stores an admin's verdict as the master does and publishes
// the change.
func (b *testBackend) SetApproval(ctx context.Context, worker, approval, by string) error {
	if err := b.st.SetApproval(ctx, worker, approval, by, time.Now()); err != nil {
		return fmt.Errorf("set approval: %w", err)
	}
	b.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	return nil
}

func (b *testBackend) Authenticate(ctx context.Context, token string) (drover.Role, error) {
	role, ok := b.tokens[token]
	if !ok {
		return "", drover.Errorf(drover.Unauthorized, "token not recognised")
	}
	return role, nil
}

func (b *testBackend) Events() *events.Subscription { return b.bus.Subscribe() }

func (b *testBackend) ReadLog(ctx context.Context, id int64, offset int64, w io.Writer) error {
	return b.logs.read(id, offset, w)
}

func (b *testBackend) FollowLog(ctx context.Context, id int64, offset int64, fn func([]byte) error) error {
	return b.logs.follow(ctx, id, offset, fn)
}

// memLogs holds log bytes in memory and wakes followers on each append.
type memLogs struct {
	st     store.Store
	active atomic.Int32 // followers running now, to see that streams stop

	mu   sync.Mutex
	logs map[int64]*memLog
}

type memLog struct {
	data     []byte
	complete bool
	changed  chan struct{} // closed and replaced on every change
}

func (m *memLogs) getLocked(id int64) *memLog {
	l, ok := m.logs[id]
	if !ok {
		l = &memLog{changed: make(chan struct{})}
		m.logs[id] = l
	}
	return l
}

// append adds p to log id, or completes it when done, and updates its
// index entry in the store as the log store does.
func (m *memLogs) append(ctx context.Context, id int64, p []byte, done bool) error {
	m.mu.Lock()
	l := m.getLocked(id)
	l.data = append(l.data, p...)
	l.complete = l.complete || done
	entry := drover.Log{ID: id, Bytes: int64(len(l.data)), Complete: l.complete}
	close(l.changed)
	l.changed = make(chan struct{})
	m.mu.Unlock()
	return m.st.Builds("").UpdateLog(ctx, &entry)
}

func (m *memLogs) read(id, offset int64, w io.Writer) error {
	m.mu.Lock()
	l := m.getLocked(id)
	if offset > int64(len(l.data)) {
		m.mu.Unlock()
		return drover.Errorf(drover.Invalid, "offset %d is past the end of log %d (%d bytes)", offset, id, len(l.data))
	}
	p := l.data[offset:len(l.data):len(l.data)]
	m.mu.Unlock()
	_, err := w.Write(p)
	return err
}

func (m *memLogs) follow(ctx context.Context, id, offset int64, fn func([]byte) error) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	for {
		m.mu.Lock()
		l := m.getLocked(id)
		if offset > int64(len(l.data)) {
			m.mu.Unlock()
			return drover.Errorf(drover.Invalid, "offset %d is past the end of log %d", offset, id)
		}
		p := l.data[offset:len(l.data):len(l.data)]
		complete, changed := l.complete, l.changed
		m.mu.Unlock()
		if len(p) > 0 {
			if err := fn(p); err != nil {
				return err
			}
			offset += int64(len(p))
			continue // it may have grown meanwhile
		}
		if complete {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// syncBuffer collects what the handler logs; handlers log from server
// goroutines while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a running API over a testBackend, with a client per role.
type fixture struct {
	b   *testBackend
	st  store.Store
	srv *httptest.Server
	log *syncBuffer

	admin, op, reader, anon *Client
}

// newTestStore returns a real, empty SQLite store for one test.
func newTestStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "state.sqlite"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// testBuilders is the config in force in the tests.
func testBuilders(t testing.TB) []drover.Builder {
	t.Helper()
	linux, err := drover.ParseRequirement("os", "linux")
	if err != nil {
		t.Fatal(err)
	}
	gcc, err := drover.ParseRequirement("gcc", ">= 9")
	if err != nil {
		t.Fatal(err)
	}
	return []drover.Builder{
		{
			Name:     "linux-gcc",
			Requires: []drover.Requirement{linux, gcc},
			Classes:  map[string]string{"compiler": "gcc"},
			Stable:   true,
			Steps:    []drover.StepSpec{{Kind: drover.StepShell, Name: "compile", Command: []string{"make"}, Shell: true}},
		},
		{
			Name:  "docs",
			Steps: []drover.StepSpec{{Kind: drover.StepShell, Name: "build", Command: []string{"make", "docs"}}},
		},
	}
}

// newTestBackend returns a backend over an empty store with the test
// builders and tokens.
func newTestBackend(t testing.TB) *testBackend {
	t.Helper()
	st := newTestStore(t)
	bus := &events.Bus{}
	t.Cleanup(bus.Close)
	builders := testBuilders(t)
	return &testBackend{
		st:     st,
		bus:    bus,
		tokens: map[string]drover.Role{adminToken: drover.RoleAdmin, operatorToken: drover.RoleOperator, readerToken: drover.RoleRead},
		logs:   &memLogs{st: st, logs: make(map[int64]*memLog)},
		cfg:    testConfig{hash: "1111aaaa2222bbbb3333cccc4444dddd", builders: builders},
		next:   testConfig{hash: "5555eeee6666ffff7777aaaa8888bbbb", builders: builders[:1]},
		status: ConfigStatus{
			Path:     "/etc/drover/master.star",
			Hash:     "1111aaaa2222bbbb3333cccc4444dddd",
			LoadedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		},
	}
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	b := newTestBackend(t)
	st := b.st
	logBuf := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(NewHandler(b, logger, opts))
	// Streams end when their clients go; close those before the server
	// waits for its handlers.
	t.Cleanup(srv.Close)
	t.Cleanup(srv.CloseClientConnections)
	f := &fixture{b: b, st: st, srv: srv, log: logBuf}
	f.admin = f.client(adminToken)
	f.op = f.client(operatorToken)
	f.reader = f.client(readerToken)
	f.anon = f.client("")
	return f
}

func (f *fixture) client(token string) *Client {
	c := NewClient(f.srv.URL+"/", token)
	c.HTTP = f.srv.Client()
	c.pollInterval = 10 * time.Millisecond
	return c
}

// addWorker stores a connected worker with facts.
func (f *fixture) addWorker(t *testing.T, name string, facts drover.Facts) {
	t.Helper()
	w := &drover.Worker{Name: name, Facts: facts, Availability: drover.Eager, Connected: true, OS: "linux", Arch: "amd64"}
	if err := f.st.UpsertWorker(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}

// startBuild forces builder, claims the request for worker as the
// dispatcher would, and gives the build one running step with a log.
func (f *fixture) startBuild(t *testing.T, builder, worker string) (*drover.Build, *drover.Log) {
	t.Helper()
	ctx := context.Background()
	req := &drover.BuildRequest{Builder: builder, Reason: "test", Source: drover.SourceStamp{Branch: "main", Revision: "abc123"}}
	if err := f.b.Force(ctx, req); err != nil {
		t.Fatal(err)
	}
	return f.claim(t, req.ID, worker)
}

// claim starts a build for pending request id on worker.
func (f *fixture) claim(t *testing.T, id int64, worker string) (*drover.Build, *drover.Log) {
	t.Helper()
	ctx := context.Background()
	req, err := f.st.GetRequest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Builder: req.Builder, Worker: worker, Reason: req.Reason, Started: time.Now().UTC()}
	if err := f.st.ClaimRequest(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	steps := []drover.Step{{BuildID: b.ID, Index: 0, Name: "compile", State: drover.StepRunning, Started: time.Now().UTC()}}
	if err := f.st.Builds("").AddSteps(ctx, steps); err != nil {
		t.Fatal(err)
	}
	l := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	if err := f.st.Builds("").AddLog(ctx, l); err != nil {
		t.Fatal(err)
	}
	return b, l
}

// finish ends build id with result; requeue sends its request back.
func (f *fixture) finish(t *testing.T, id int64, result drover.Result, requeue bool) {
	t.Helper()
	if err := f.st.Builds("").FinishBuild(context.Background(), id, result, "done", time.Now().UTC(), requeue); err != nil {
		t.Error(err) // may run in a goroutine: no Fatal
	}
}

// appendLog adds text to log id, completing it when done.
func (f *fixture) appendLog(t *testing.T, id int64, text string, done bool) {
	t.Helper()
	if err := f.b.logs.append(context.Background(), id, []byte(text), done); err != nil {
		t.Error(err)
	}
}

// storeAll selects every request.
func storeAll() drover.RequestFilter { return drover.RequestFilter{} }
