package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
)

// testBackend is a real api.Backend over a real SQLite store, with logs
// kept in memory: a log can grow while a page follows it, as a running
// step's log does in a master.
type testBackend struct {
	st       *store.DB
	builders []drover.Builder
	bus      *events.Bus
	elig     []drover.Eligibility
	eligErr  error
	// tokens are the API tokens the backend accepts, for the pages' calls
	// to the real API handler.
	tokens map[string]drover.Role

	mu   sync.Mutex
	logs map[int64]*memLog
	// waiting says why a pending request waits; queueErr, when set, is
	// what Queue fails with.
	waiting  map[int64]drover.QueueEntry
	queueErr error
	locks    []drover.LockState
	// config is the record of loads ConfigStatus reports (its Builders is
	// counted from builders); next is what Reload loads: it swaps with
	// the builders in force, or refuses with next.err.
	config api.ConfigStatus
	next   testConfig
}

// testConfig is one version of the config file: its hash and builders,
// or the loader's error when it is broken.
type testConfig struct {
	hash     string
	builders []drover.Builder
	err      error
}

type memLog struct {
	data     []byte
	complete bool
	// grew is closed and replaced whenever data grows or the log completes,
	// waking followers.
	grew chan struct{}
}

var _ api.Backend = (*testBackend)(nil)

func newTestBackend(t *testing.T) *testBackend {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "state.sqlite"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	b := &testBackend{
		st:      st,
		bus:     &events.Bus{},
		logs:    make(map[int64]*memLog),
		waiting: make(map[int64]drover.QueueEntry),
		tokens:  map[string]drover.Role{adminToken: drover.RoleAdmin, operatorToken: drover.RoleOperator, readerToken: drover.RoleRead},
		config: api.ConfigStatus{
			Path:     "/etc/drover/master.star",
			Hash:     "0123456789abcdef0123456789abcdef",
			LoadedAt: time.Now().Add(-time.Hour),
		},
		next: testConfig{hash: "fedcba9876543210fedcba9876543210"},
	}
	t.Cleanup(func() {
		b.bus.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return b
}

func (b *testBackend) Reader() api.Reader { return b.st }
func (b *testBackend) Title() string      { return "Drover <Test> & Co" }
func (b *testBackend) URL() string        { return "https://ci.example.org/" }

// Builders returns the builders in force; tests set b.builders before
// serving, and Reload swaps them under b.mu.
func (b *testBackend) Builders() []drover.Builder {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builders
}

func (b *testBackend) Builder(name string) (*drover.Builder, bool) {
	for _, bl := range b.Builders() {
		if bl.Name == name {
			return &bl, true
		}
	}
	return nil, false
}

func (b *testBackend) Site(context.Context) (api.SiteStatus, error) {
	return api.SiteStatus{This: "ci1", Masters: []api.MasterStatus{
		{Master: drover.Master{ID: "ci1", URL: "https://ci1.example.org/", WorkersAddr: ":9989"}, Alive: true},
		{Master: drover.Master{ID: "ci2", URL: "https://ci2.example.org/", WorkersAddr: ":9989"}},
	}}, nil
}

func (b *testBackend) ConfigStatus() api.ConfigStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.config
	st.Builders = len(b.builders)
	return st
}

// Reload loads b.next as the master loads its file: a broken one is
// refused with Invalid and recorded; a good one takes over, the config it
// replaces becomes the next to load, and config.loaded is published.
func (b *testBackend) Reload(ctx context.Context) error {
	b.mu.Lock()
	now := time.Now()
	if err := b.next.err; err != nil {
		b.config.LastError, b.config.ErrorAt = err.Error(), now
		b.mu.Unlock()
		return drover.Errorf(drover.Invalid, "config refused: %w", err)
	}
	old := testConfig{hash: b.config.Hash, builders: b.builders}
	b.builders, b.config = b.next.builders, api.ConfigStatus{Path: b.config.Path, Hash: b.next.hash, LoadedAt: now}
	b.next = old
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
	return drover.Errorf(drover.Unauthorized, "the web UI does not write")
}

func (b *testBackend) AddChange(ctx context.Context, c *drover.Change) error {
	return b.st.AddChange(ctx, c)
}

func (b *testBackend) CancelBuild(ctx context.Context, id int64, reason string) error {
	return drover.Errorf(drover.Unauthorized, "the web UI does not write")
}

func (b *testBackend) CancelRequest(ctx context.Context, id int64, reason string) error {
	return drover.Errorf(drover.Unauthorized, "the web UI does not write")
}

func (b *testBackend) Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error) {
	return b.elig, b.eligErr
}

// Tokens the test backend accepts, in the form tokens.New makes.
const (
	adminToken    = "drover_api_ad0000000001_admin-secret"
	operatorToken = "drover_api_0e0000000002_operator-secret"
	readerToken   = "drover_api_4e0000000003_reader-secret"
)

func (b *testBackend) Authenticate(ctx context.Context, token string) (drover.Role, error) {
	role, ok := b.tokens[token]
	if !ok {
		return "", drover.Errorf(drover.Unauthorized, "token not recognised")
	}
	return role, nil
}

// Queue returns the store's pending requests in queue order, each with
// what setWaiting said about it.
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
		e := b.waiting[r.ID]
		e.Request = r
		out = append(out, e)
	}
	return out, nil
}

// setWaiting records why request id waits, and since when it has had no
// eligible worker (zero: it has one).
func (b *testBackend) setWaiting(id int64, why string, noWorkerSince time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting[id] = drover.QueueEntry{Waiting: why, NoWorkerSince: noWorkerSince}
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

// SetAvailability stores an operator's override as the master does, and
// publishes the change so that open pages refresh.
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

func (b *testBackend) Events() *events.Subscription { return b.bus.Subscribe() }

func (b *testBackend) log(id int64) (*memLog, error) {
	l, ok := b.logs[id]
	if !ok {
		return nil, drover.Errorf(drover.NotFound, "no log %d", id)
	}
	return l, nil
}

func (b *testBackend) ReadLog(ctx context.Context, id, offset int64, w io.Writer) error {
	b.mu.Lock()
	l, err := b.log(id)
	var data []byte
	if err == nil && offset < int64(len(l.data)) {
		data = l.data[offset:len(l.data):len(l.data)]
	}
	b.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func (b *testBackend) FollowLog(ctx context.Context, id, offset int64, fn func([]byte) error) error {
	for {
		b.mu.Lock()
		l, err := b.log(id)
		if err != nil {
			b.mu.Unlock()
			return err
		}
		var chunk []byte
		if offset < int64(len(l.data)) {
			chunk = l.data[offset:len(l.data):len(l.data)]
		}
		complete, grew := l.complete, l.grew
		b.mu.Unlock()
		if len(chunk) > 0 {
			if err := fn(chunk); err != nil {
				return err
			}
			offset += int64(len(chunk))
			continue
		}
		if complete {
			return nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// addLog stores a log index entry for a step and holds its bytes.
func (b *testBackend) addLog(t *testing.T, buildID int64, step int, text string, complete bool) drover.Log {
	t.Helper()
	l := drover.Log{BuildID: buildID, StepIndex: step, Name: "stdio", Bytes: int64(len(text)), Complete: complete}
	if err := b.st.Builds("").AddLog(context.Background(), &l); err != nil {
		t.Fatalf("add log: %v", err)
	}
	b.mu.Lock()
	b.logs[l.ID] = &memLog{data: []byte(text), complete: complete, grew: make(chan struct{})}
	b.mu.Unlock()
	return l
}

// appendLog adds text to a live log, as a worker's output would.
func (b *testBackend) appendLog(id int64, text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.logs[id]
	l.data = append(l.data, text...)
	close(l.grew)
	l.grew = make(chan struct{})
}

// completeLog marks a log complete and updates its index entry.
func (b *testBackend) completeLog(t *testing.T, id int64) {
	t.Helper()
	b.mu.Lock()
	l := b.logs[id]
	l.complete = true
	close(l.grew)
	l.grew = make(chan struct{})
	n := int64(len(l.data))
	b.mu.Unlock()
	ctx := context.Background()
	entry, err := b.st.GetLog(ctx, id)
	if err != nil {
		t.Fatalf("get log %d: %v", id, err)
	}
	entry.Bytes, entry.Complete = n, true
	if err := b.st.Builds("").UpdateLog(ctx, entry); err != nil {
		t.Fatalf("update log %d: %v", id, err)
	}
}

// startBuild queues a request for builder and claims it for worker,
// returning the running build.
func (b *testBackend) startBuild(t *testing.T, builder, worker string, started time.Time) *drover.Build {
	t.Helper()
	ctx := context.Background()
	req := &drover.BuildRequest{
		Builder: builder,
		Source:  drover.SourceStamp{Repository: "https://example.org/proj.git", Branch: "main", Revision: "0123456789abcdef0123456789abcdef01234567"},
		Reason:  "change by alice",
	}
	if err := b.st.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatalf("add request: %v", err)
	}
	build := &drover.Build{Builder: builder, Worker: worker, WhyWorker: "eager, least loaded", Reason: req.Reason, Started: started}
	if err := b.st.ClaimRequest(ctx, req.ID, build); err != nil {
		t.Fatalf("claim request: %v", err)
	}
	return build
}

// sseAPI serves the part of the REST API the pages' script uses, as the
// API package documents it: log streams, raw logs and the event stream.
// The web package does not serve these; the master mounts the API beside
// it, and this stands in for it in tests.
func sseAPI(b *testBackend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/logs/{id}/raw", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := b.ReadLog(r.Context(), id, 0, w); err != nil {
			http.Error(w, drover.Message(err), http.StatusNotFound)
		}
	})
	mux.HandleFunc("GET /api/v1/logs/{id}/stream", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		offset, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		if last := r.Header.Get("Last-Event-ID"); last != "" {
			offset, _ = strconv.ParseInt(last, 10, 64)
		}
		fl := startSSE(w)
		err := b.FollowLog(r.Context(), id, offset, func(p []byte) error {
			offset += int64(len(p))
			data, _ := json.Marshal(string(p))
			if _, err := fmt.Fprintf(w, "event: data\nid: %d\ndata: %s\n\n", offset, data); err != nil {
				return err
			}
			fl.Flush()
			return nil
		})
		if err == nil {
			fmt.Fprint(w, "event: end\ndata: {}\n\n")
			fl.Flush()
		}
	})
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		sub := b.Events()
		defer sub.Close()
		fl := startSSE(w)
		for {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					return
				}
				data, _ := json.Marshal(ev)
				fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, data)
				fl.Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

func startSSE(w http.ResponseWriter) http.Flusher {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	return fl
}

// testLogger writes the handler's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
