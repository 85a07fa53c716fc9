package master

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/dispatch"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
)

// dispatchStore is what the dispatcher reads and writes: the queue.
type dispatchStore interface {
	ListRequests(ctx context.Context, f drover.RequestFilter) ([]drover.BuildRequest, error)
	ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error)
	ClaimRequest(ctx context.Context, id int64, b *drover.Build) error
	ClaimRequests(ctx context.Context, claims []store.Claim) error
	CancelRequest(ctx context.Context, id int64, reason string) error
}

// dispatchTimeout bounds one dispatch round's store work: a round that
// takes longer is failing, and the next wake-up tries again.
const dispatchTimeout = 30 * time.Second

// dispatcher matches pending requests to workers whenever something
// changes: a request added, a worker connected or freed, a lock released,
// an availability changed. It also wakes at the next time-based decision
// (a reluctant worker's wait ending, a request expiring, a downtime
// starting or ending), never on a poll.
// The decisions are dispatch's; the dispatcher gathers the snapshot, acts
// on the decision, and keeps why each request waits for the queue view.
type dispatcher struct {
	store   dispatchStore
	pending *pendingQueue
	cfg     func() *config.Config
	fleet   *fleet
	runner  *runner
	locks   *lockManager
	bus     *events.Bus
	met     *metrics
	now     func() time.Time
	logger  *slog.Logger
	master  string // this master's ID, on the builds it claims
	// shared says other masters share the queue: the queue is read from
	// the store each round, and max_builds counts the site's builds.
	shared bool
	// partial says other masters of the site are alive, with workers of
	// their own: no request is found without an eligible worker.
	partial func() bool

	wake chan struct{} // wake-ups, coalesced

	mu       sync.Mutex
	held     map[string]bool             // why dispatch is held (stopping, fenced); empty: it runs
	waiting  map[int64]drover.WaitReason // why each pending request waits, as of the last round
	noWorker map[int64]time.Time         // since when a pending request has had no eligible worker online
}

func newDispatcher() *dispatcher {
	return &dispatcher{wake: make(chan struct{}, 1), held: map[string]bool{},
		waiting: map[int64]drover.WaitReason{}, noWorker: map[int64]time.Time{}}
}

// kick wakes the dispatcher; wake-ups coalesce.
func (d *dispatcher) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// hold stops dispatching for reason until release(reason).
func (d *dispatcher) hold(reason string) {
	d.mu.Lock()
	d.held[reason] = true
	d.mu.Unlock()
}

func (d *dispatcher) release(reason string) {
	d.mu.Lock()
	delete(d.held, reason)
	d.mu.Unlock()
	d.kick()
}

func (d *dispatcher) isHeld() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held) > 0
}

// loop runs rounds until ctx is done.
func (d *dispatcher) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
		rctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
		next, err := d.round(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			d.logger.Error("dispatch", "err", err)
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(10*time.Millisecond, next.Sub(d.now())))
		}
	}
}

// round makes one round of decisions and returns when the next
// time-based one is due (zero: none).
func (d *dispatcher) round(ctx context.Context) (time.Time, error) {
	// The fleet's downtimes change the pages at their edges, queue or no
	// queue: the dispatcher wakes for them too.
	now := d.now()
	edge := d.fleet.noteDowntimes(now)
	pending, err := d.pendingRequests(ctx)
	if err != nil {
		return edge, err
	}
	d.met.pending.Set(float64(len(pending)))
	if len(pending) == 0 || d.isHeld() {
		d.record(map[int64]drover.WaitReason{}, map[int64]time.Time{})
		return edge, nil
	}
	cfg := d.cfg()
	snap, byID, err := d.snapshot(ctx, cfg, pending, now)
	if err != nil {
		return time.Time{}, err
	}
	dec := dispatch.Decide(snap, now)
	collapsed := make(map[int64]string, len(dec.Collapsed))
	for id, into := range dec.Collapsed {
		collapsed[id] = fmt.Sprintf("collapsed into request %d, which builds newer changes", into)
	}
	d.cancelRequests(ctx, byID, collapsed)
	err = d.start(ctx, dec, byID, snap.Builders, now)
	d.record(dec.Waiting, dec.NoWorkerSince)
	d.cancelRequests(ctx, byID, dec.Expired)
	return earliest(dec.Next, edge), err
}

// earliest is the sooner of two wake-ups; zero is none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// snapshot gathers what a decision needs.
func (d *dispatcher) snapshot(ctx context.Context, cfg *config.Config, pending []drover.BuildRequest, now time.Time) (dispatch.Snapshot, map[int64]drover.BuildRequest, error) {
	locks, stepLocks := d.locks.snapshot()
	snap := dispatch.Snapshot{Builders: make(map[string]*drover.Builder, len(cfg.Builders)),
		Locks: locks, StepLocks: stepLocks, ReluctantAfter: cfg.Master.ReluctantAfter,
		ExpireAfter: cfg.Master.ExpireAfter, Partial: d.partial()}
	for i := range cfg.Builders {
		snap.Builders[cfg.Builders[i].Name] = &cfg.Builders[i]
	}
	byID := make(map[int64]drover.BuildRequest, len(pending))
	snap.Requests = make([]dispatch.Request, 0, len(pending))
	for _, r := range pending {
		byID[r.ID] = r
		snap.Requests = append(snap.Requests, dispatch.Request{ID: r.ID, Builder: r.Builder, Priority: r.Priority, Submitted: r.Submitted,
			Group: requestGroup(r.Properties), Collapsible: len(r.ChangeIDs) > 0 && r.Tries == 0,
			Repository: r.Source.Repository, Branch: r.Source.Branch})
	}
	running, checkouts, groups, byBuilder := d.runner.load()
	snap.RunningByBuilder = byBuilder
	if d.shared {
		// Other masters' builds count against max_builds too.
		n, err := d.siteRunning(ctx)
		if err != nil {
			return snap, nil, err
		}
		snap.RunningByBuilder = n
	}
	d.mu.Lock()
	snap.NoWorkerSince = maps.Clone(d.noWorker)
	d.mu.Unlock()
	for _, w := range d.fleet.online(now) {
		snap.Workers = append(snap.Workers, dispatch.Worker{
			Name: w.name, Facts: w.facts, Availability: w.availability, Slots: w.slots,
			Running: running[w.name], Checkouts: checkouts[w.name], Groups: groups[w.name],
			Downtime: w.downtime, Until: w.until,
		})
	}
	sort.Slice(snap.Workers, func(i, j int) bool { return snap.Workers[i].Name < snap.Workers[j].Name })
	return snap, byID, nil
}

// siteRunning counts the site's running builds per builder, for
// max_builds across masters.
func (d *dispatcher) siteRunning(ctx context.Context) (map[string]int, error) {
	running, err := d.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return nil, fmt.Errorf("count running builds: %w", err)
	}
	n := map[string]int{}
	for _, b := range running {
		n[b.Builder]++
	}
	return n, nil
}

// start claims a decision's assignments in one transaction, with their
// builds' starts, and runs the builds once it has committed.
func (d *dispatcher) start(ctx context.Context, dec dispatch.Decision, byID map[int64]drover.BuildRequest, builders map[string]*drover.Builder, now time.Time) error {
	claims := make([]store.Claim, 0, len(dec.Assignments))
	for _, a := range dec.Assignments {
		req := byID[a.Request]
		builder := builders[req.Builder]
		holder := drover.LockHolder{RequestID: req.ID, Builder: req.Builder, Step: -1, Since: now}
		if !d.locks.takeForRequest(builder.Locks, a.Worker, holder) {
			// A step asked for the lock since the snapshot: the next
			// round, woken by its release, places the request.
			dec.Waiting[req.ID] = drover.WaitReason{Code: drover.WaitLock, Text: "waiting for a lock a running build's step is queued for"}
			continue
		}
		b := &drover.Build{Builder: req.Builder, Worker: a.Worker, WhyWorker: a.Why, Reason: req.Reason, Started: now, Master: d.master}
		facts := d.fleet.factsOf(a.Worker)
		claims = append(claims, store.Claim{Request: req.ID, Build: b, Start: func(b *drover.Build) *store.BuildStart {
			return planStart(builder, b, facts, now)
		}})
	}
	if err := d.claim(ctx, claims); err != nil {
		for _, c := range claims {
			d.locks.releaseRequest(c.Request)
		}
		return err
	}
	var failed error
	for _, c := range claims {
		req := byID[c.Request]
		if c.Err != nil {
			d.locks.releaseRequest(req.ID)
			if drover.KindOf(c.Err) != drover.Conflict && failed == nil {
				failed = c.Err
			}
			continue // a Conflict: cancelled or claimed meanwhile
		}
		b := *c.Build
		d.locks.bind(req.ID, b.ID, b.Number)
		d.met.dispatchLatency.Observe(now.Sub(req.Submitted).Seconds())
		d.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: req.ID})
		d.runner.start(b, *builders[req.Builder], c.Started)
	}
	return failed
}

// pendingRequests returns the pending requests in queue order: from the
// dispatcher's copy, or, when other masters share the store, from the
// store itself, since they add and claim requests too.
func (d *dispatcher) pendingRequests(ctx context.Context) ([]drover.BuildRequest, error) {
	if d.shared {
		return d.store.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	}
	return d.pending.list(ctx, d.store)
}

// claim claims the requests of a round in one transaction, setting each
// claim's Err. Should the batch fail as a whole (on PostgreSQL, a build
// number taken by another master's claim ends the transaction), each
// request is claimed on its own, as ClaimRequest retries that case.
func (d *dispatcher) claim(ctx context.Context, claims []store.Claim) error {
	if len(claims) == 0 {
		return nil
	}
	err := d.store.ClaimRequests(ctx, claims)
	if err == nil || ctx.Err() != nil {
		return err
	}
	d.logger.Warn("claiming a batch of requests failed; claiming them one by one", "requests", len(claims), "err", err)
	for i := range claims {
		c := &claims[i]
		c.Err, c.Started = d.store.ClaimRequest(ctx, c.Request, c.Build), nil // each build stores its own start
		if c.Err != nil && drover.KindOf(c.Err) != drover.Conflict && drover.KindOf(c.Err) != drover.NotFound {
			for j := i + 1; j < len(claims); j++ {
				claims[j].Err = c.Err // not tried: their locks are released too
			}
			return nil
		}
	}
	return nil
}

// cancelRequests cancels pending requests a decision dropped (collapsed
// or expired), each with its reason. One claimed or cancelled meanwhile
// is left as it is; a store error is logged, and the next round decides
// again.
func (d *dispatcher) cancelRequests(ctx context.Context, byID map[int64]drover.BuildRequest, reasons map[int64]string) {
	for id, reason := range reasons {
		req := byID[id]
		if err := d.store.CancelRequest(ctx, id, reason); err != nil {
			if drover.KindOf(err) != drover.Conflict && ctx.Err() == nil {
				d.logger.Error("cancel request", "request", id, "reason", reason, "err", err)
			}
			continue
		}
		d.logger.Info("request cancelled by dispatch", "request", id, "builder", req.Builder, "reason", reason)
		d.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: id})
	}
}

// record keeps a round's reasons for the queue view and the next round.
func (d *dispatcher) record(waiting map[int64]drover.WaitReason, noWorker map[int64]time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.waiting, d.noWorker = waiting, noWorker
}

// queue is the pending requests in the order the dispatcher serves them,
// each with the reason it gave at its last round.
func (d *dispatcher) queue(ctx context.Context) ([]drover.QueueEntry, error) {
	pending, err := d.store.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return nil, err
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]drover.QueueEntry, len(pending))
	for i, r := range pending {
		why, ok := d.waiting[r.ID]
		if !ok {
			why = drover.WaitReason{Code: drover.WaitDispatch, Text: "about to be dispatched"}
		}
		since := d.noWorker[r.ID]
		if !since.IsZero() {
			why.Text += fmt.Sprintf(" (for %s)", now.Sub(since).Round(time.Second))
		}
		out[i] = drover.QueueEntry{Request: r, Waiting: why.Text, WaitCode: why.Code, NoWorkerSince: since}
	}
	return out, nil
}
