package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/dispatch"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/workerhub"
)

// runnerStore is what the build runner reads from the store, and the
// queue writes a sharded step makes (its parts are requests of their own).
type runnerStore interface {
	GetBuild(ctx context.Context, id int64) (*drover.Build, error)
	ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error)
	GetRequest(ctx context.Context, id int64) (*drover.BuildRequest, error)
	ListSteps(ctx context.Context, buildID int64) ([]drover.Step, error)
	ListLogs(ctx context.Context, buildID int64) ([]drover.Log, error)
	AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error
	CancelRequest(ctx context.Context, id int64, reason string) error
}

// storeTimeout bounds each store call the runner makes for a build: a
// call that takes longer is failing (the database is stuck or gone). The
// build logs it and goes on, or ends; a build whose end could not be
// written stays running in the store for recovery to settle.
const storeTimeout = 30 * time.Second

// errLetGo is why a build stops being driven by this master while its
// command runs on: the master is stopping, its heartbeat lapsed, or
// another master of the site took the build over. Nothing is recorded as
// ended; whoever drives the build next re-attaches it.
var errLetGo = errors.New("this master lets go of the build")

var errMasterStopping = fmt.Errorf("master stopping: %w", errLetGo)

// errCancelled is why a build stops when someone cancelled it.
var errCancelled = errors.New("cancelled")

// runner drives builds step by step: it owns a build from its claim (or
// its adoption) until it writes the build's final state, or lets go of it.
// Every write of a build's state carries this master's ID (writes), so a
// build another master took over refuses this one's late writes.
type runner struct {
	store  runnerStore
	writes store.BuildWriter
	logs   *logstore.Dir
	hub    *workerhub.Hub
	bus    *events.Bus
	locks  *lockManager
	cfg    func() *config.Config
	facts  func(*workerhub.Session) drover.Facts
	kick   func() // wakes the dispatcher: a build ended, a lock was freed
	met    *metrics
	now    func() time.Time
	logger *slog.Logger
	// passCancel asks the master that drives build id (another of the
	// site) to cancel it; false when no other master drives it.
	passCancel func(ctx context.Context, b *drover.Build, reason string) bool

	// base is the context builds run under: the master's life.
	base context.Context
	wg   sync.WaitGroup // one per build goroutine

	mu        sync.Mutex
	builds    map[int64]*buildRun // running builds by ID
	running   map[string]int      // running builds per worker
	checkouts map[string]map[string]bool
	closed    bool          // stopping: no build starts
	idle      chan struct{} // closed when builds becomes empty, replaced when it is not
}

func newRunner() *runner {
	idle := make(chan struct{})
	close(idle)
	return &runner{builds: map[int64]*buildRun{}, running: map[string]int{}, checkouts: map[string]map[string]bool{}, idle: idle}
}

// start runs a claimed build in its own goroutine, owned by r.wg.
// started is its start when the claim stored it, else nil.
func (r *runner) start(b drover.Build, builder drover.Builder, started *store.BuildStart) {
	ctx, cancel := context.WithCancelCause(r.base)
	br := &buildRun{r: r, build: b, builder: builder, ctx: ctx, cancel: cancel, started: started}
	// Known at once, so the next dispatch round already sees this worker
	// as running a part of its group.
	br.group = requestGroup(b.Properties)
	r.launch(br, br.run)
}

// launch registers br and runs fn for it, unless the runner is stopping:
// then the build is left as it is in the store (claimed and running), for
// the next start's recovery.
func (r *runner) launch(br *buildRun, fn func()) {
	b := br.build
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		br.cancel(errMasterStopping)
		r.locks.release(b.ID, dispatch.AllSteps)
		return
	}
	r.wg.Add(1) // under mu, so it never races stop's Wait
	if len(r.builds) == 0 {
		r.idle = make(chan struct{})
	}
	r.builds[b.ID] = br
	r.running[b.Worker]++
	if r.checkouts[b.Worker] == nil {
		r.checkouts[b.Worker] = map[string]bool{}
	}
	r.checkouts[b.Worker][b.Builder] = true
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer br.cancel(nil)
		fn()
		r.locks.release(b.ID, dispatch.AllSteps)
		r.mu.Lock()
		delete(r.builds, b.ID)
		r.running[b.Worker]--
		if len(r.builds) == 0 {
			close(r.idle)
		}
		r.mu.Unlock()
		r.kick()
	}()
}

// has reports whether build id runs here.
func (r *runner) has(id int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.builds[id]
	return ok
}

// count is how many builds run here.
func (r *runner) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.builds)
}

// idleC is closed once no build runs here (at the time of the call).
func (r *runner) idleC() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idle
}

// load is what dispatch needs of the running builds: per worker, how many
// it runs, which builders' checkouts it holds and which shard groups it
// runs a part of; and per builder, how many run here.
func (r *runner) load() (running map[string]int, checkouts map[string]map[string]bool, groups map[string]map[string]bool, byBuilder map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	running = make(map[string]int, len(r.running))
	for w, n := range r.running {
		running[w] = n
	}
	checkouts = make(map[string]map[string]bool, len(r.checkouts))
	for w, c := range r.checkouts {
		checkouts[w] = c // only added to under mu, never removed: read-only for dispatch
	}
	groups, byBuilder = map[string]map[string]bool{}, map[string]int{}
	for _, br := range r.builds {
		byBuilder[br.build.Builder]++
		if g := br.currentGroup(); g != "" {
			if groups[br.build.Worker] == nil {
				groups[br.build.Worker] = map[string]bool{}
			}
			groups[br.build.Worker][g] = true
		}
	}
	return running, checkouts, groups, byBuilder
}

// letGo stops driving every running build (their commands run on) and
// waits until none runs here, or ctx ends.
func (r *runner) letGo(ctx context.Context, cause error) {
	r.mu.Lock()
	runs := make([]*buildRun, 0, len(r.builds))
	for _, br := range r.builds {
		runs = append(runs, br)
	}
	r.mu.Unlock()
	for _, br := range runs {
		br.cancel(cause)
	}
	select {
	case <-r.idleC():
	case <-ctx.Done():
	}
}

// stop lets go of every running build, starts no more, and waits for
// their goroutines.
func (r *runner) stop() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.letGo(context.Background(), errMasterStopping)
	r.wg.Wait()
}

// cancelBuild stops build id: here, or through the master of the site
// that drives it.
func (r *runner) cancelBuild(ctx context.Context, id int64, reason string) error {
	if reason == "" {
		reason = "cancelled by request"
	}
	r.mu.Lock()
	br, ok := r.builds[id]
	r.mu.Unlock()
	if ok {
		br.cancel(fmt.Errorf("%w: %s", errCancelled, reason))
		r.logger.Info("build cancelled", "build", id, "reason", reason)
		return nil
	}
	b, err := r.store.GetBuild(ctx, id)
	if err != nil {
		return err
	}
	if b.State == drover.BuildFinished {
		return drover.Errorf(drover.Conflict, "build %d has already finished (%s)", id, b.Result)
	}
	if r.passCancel(ctx, b, reason) {
		r.logger.Info("build cancel passed to its master", "build", id, "master", b.Master, "reason", reason)
		return nil
	}
	return drover.Errorf(drover.Conflict, "build %d is not running on this master", id)
}

// cancelRequest cancels request id: its running build, when it has one,
// else the pending request itself.
func (r *runner) cancelRequest(ctx context.Context, id int64, reason string) error {
	if reason == "" {
		reason = "cancelled by request"
	}
	req, err := r.store.GetRequest(ctx, id)
	if err != nil {
		return err
	}
	if req.State == drover.RequestClaimed {
		builds, err := r.store.ListBuilds(ctx, drover.BuildFilter{RequestID: id, State: drover.BuildRunning, Limit: 1})
		if err != nil {
			return err
		}
		if len(builds) > 0 {
			return r.cancelBuild(ctx, builds[0].ID, reason)
		}
	}
	if err := r.store.CancelRequest(ctx, id, reason); err != nil {
		return err
	}
	r.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: id})
	return nil
}
