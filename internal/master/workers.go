package master

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/dispatch"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// The master is the workerhub's Handler.
var _ workerhub.Handler = (*Master)(nil)

// WorkerConnected records the worker and decides which of the commands it
// still holds to keep: those a running build of this master waits for.
func (m *Master) WorkerConnected(s *workerhub.Session, held []*pb.RunningCommand) ([]string, error) {
	ctx := context.WithoutCancel(m.ctx)
	if err := m.claimHeld(ctx, s, held); err != nil {
		return nil, err
	}
	w := m.sessionWorker(s)
	w.Connected, w.ConnectedAt, w.LastSeen = true, s.Since, s.Since
	if err := m.store.UpsertWorker(ctx, w); err != nil {
		m.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	heldSet := map[string]bool{}
	for _, h := range held {
		heldSet[h.GetCommandId()] = true
	}
	var keep []string
	m.mu.Lock()
	for id, c := range m.cmds {
		if c.worker != s.Name {
			continue
		}
		if heldSet[id] {
			keep = append(keep, id)
			select {
			case c.reattach <- struct{}{}:
			default:
			}
		} else {
			c.lostOnce.Do(func() { close(c.lost) })
		}
	}
	m.mu.Unlock()
	m.met.workersConnected.Inc()
	m.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
	m.kick()
	return keep, nil
}

// claimHeld makes this master the driver of the builds whose commands a
// connecting worker still runs, when their master is gone: another master
// of the site died, or this one restarted. A worker holding a command of
// a build another live master drives is sent back (an error), so it tries
// the next master of its list; that master's grace decides if it waits.
func (m *Master) claimHeld(ctx context.Context, s *workerhub.Session, held []*pb.RunningCommand) error {
	for _, h := range held {
		m.mu.Lock()
		_, known := m.cmds[h.GetCommandId()]
		m.mu.Unlock()
		var id int64
		var step int
		if known {
			continue
		}
		if _, err := fmt.Sscanf(h.GetCommandId(), "b%d-s%d", &id, &step); err != nil {
			continue // not a command of ours: the worker kills it
		}
		b, err := m.store.GetBuild(ctx, id)
		if err != nil || b.State != drover.BuildRunning || b.Worker != s.Name || b.Master == m.id {
			continue
		}
		live, _, err := m.alive(ctx)
		if err != nil {
			return fmt.Errorf("cannot tell which master drives build %d: %w", id, err)
		}
		if live[b.Master] {
			return fmt.Errorf("build %d (command %s) is driven by master %s, which is alive: connect to it", id, h.GetCommandId(), b.Master)
		}
		if err := m.adopt(ctx, *b); err != nil {
			return err
		}
	}
	return nil
}

// sessionWorker is the store's view of a session's worker.
func (m *Master) sessionWorker(s *workerhub.Session) *drover.Worker {
	a, reason := s.Availability()
	return &drover.Worker{
		Name: s.Name, Facts: m.facts(s), Labels: drover.Properties(s.Labels), Version: s.Version,
		OS: s.OS, Arch: s.Arch, Availability: a, AvailabilityReason: reason, Address: s.Addr, Master: m.id,
	}
}

// effectiveAvailability is what dispatch applies to a session's worker: an
// operator's override, else the worker's own. Called with m.mu held.
func (m *Master) effectiveAvailabilityLocked(s *workerhub.Session) drover.Availability {
	if o, ok := m.overrides[s.Name]; ok {
		return o.Availability
	}
	a, _ := s.Availability()
	return a
}

// WorkerDisconnected marks the worker gone, unless it has already come
// back on a newer session.
func (m *Master) WorkerDisconnected(s *workerhub.Session, err error) {
	m.met.workersConnected.Dec()
	if cur, ok := m.hub.Session(s.Name); ok && cur != s {
		return
	}
	ctx := context.WithoutCancel(m.ctx)
	if cur, err := m.store.GetWorker(ctx, s.Name); err == nil && cur.Connected && cur.Master != m.id && cur.Master != "" {
		return // it is connected to another master of the site now
	}
	w := m.sessionWorker(s)
	w.Connected, w.LastSeen = false, s.LastSeen()
	if err := m.store.UpsertWorker(ctx, w); err != nil {
		m.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	m.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
}

// FactsChanged stores new facts and lets dispatch reconsider.
func (m *Master) FactsChanged(s *workerhub.Session) {
	w := m.sessionWorker(s)
	w.Connected, w.ConnectedAt, w.LastSeen = true, s.Since, s.LastSeen()
	if err := m.store.UpsertWorker(context.WithoutCancel(m.ctx), w); err != nil {
		m.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	m.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
	m.kick()
}

func (m *Master) command(s *workerhub.Session, id string) (*command, error) {
	m.mu.Lock()
	c := m.cmds[id]
	m.mu.Unlock()
	if c == nil {
		return nil, nil
	}
	if c.worker != s.Name {
		return nil, fmt.Errorf("command %s belongs to worker %s", id, c.worker)
	}
	return c, nil
}

// CommandOutput appends a chunk to the step's log, dropping chunks seen
// before (a replay after reconnect) and refusing a gap.
func (m *Master) CommandOutput(s *workerhub.Session, o *pb.Output) error {
	c, err := m.command(s, o.GetCommandId())
	if err != nil || c == nil {
		if c == nil && err == nil {
			m.logger.Debug("output for an unknown command dropped", "worker", s.Name, "command", o.GetCommandId())
		}
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case o.GetSeq() < c.next:
		return nil // already stored: a replay
	case o.GetSeq() > c.next:
		return fmt.Errorf("sequence gap: got %d, want %d", o.GetSeq(), c.next)
	case c.finished:
		return fmt.Errorf("output after finish")
	}
	data := o.GetData()
	if c.skip > 0 { // a replay of output the log already holds
		n := min(c.skip, int64(len(data)))
		c.skip -= n
		data = data[n:]
	}
	if err := m.logs.Append(c.logID, data); err != nil {
		// Keep the stream: the worker will replay unacknowledged output.
		m.logger.Error("append log", "log", c.logID, "err", err)
		return nil
	}
	c.next++
	c.appended = o.GetSeq()
	m.met.logBytes.Add(float64(len(o.GetData())))
	if o.GetStream() == pb.Stream_STREAM_STDOUT && len(c.stdout) < stdoutCapture {
		d := o.GetData()
		if room := stdoutCapture - len(c.stdout); len(d) > room {
			d = d[:room]
		}
		c.stdout = append(c.stdout, d...)
	}
	return nil
}

// CommandFinished hands a command's end to the step waiting for it.
func (m *Master) CommandFinished(s *workerhub.Session, f *pb.Finished) error {
	c, err := m.command(s, f.GetCommandId())
	if err != nil || c == nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return nil // a replay
	}
	if f.GetLastSeq() != c.next-1 {
		return fmt.Errorf("finished at sequence %d, but output is stored up to %d", f.GetLastSeq(), c.next-1)
	}
	c.finished = true
	c.done <- f
	return nil
}

// dispatchLoop matches pending requests to workers whenever something
// changes: a request added, a worker connected or freed, a lock released,
// an availability changed. It also wakes at the next time-based decision
// (a reluctant worker's wait ending, a request expiring), never on a poll.
func (m *Master) dispatchLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
		next, err := m.dispatchOnce(ctx)
		if err != nil && ctx.Err() == nil {
			m.logger.Error("dispatch", "err", err)
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(10*time.Millisecond, next.Sub(m.now())))
		}
	}
}

// dispatchOnce makes one round of decisions and returns when the next
// time-based one is due (zero: none).
func (m *Master) dispatchOnce(ctx context.Context) (time.Time, error) {
	pending, err := m.pendingRequests(ctx)
	if err != nil {
		return time.Time{}, err
	}
	m.met.pending.Set(float64(len(pending)))
	now := m.now()
	if len(pending) == 0 {
		m.mu.Lock()
		clear(m.waiting)
		clear(m.noWorker)
		m.mu.Unlock()
		return time.Time{}, nil
	}
	cfg := m.config()
	locks, stepLocks := m.locks.snapshot()
	snap := dispatch.Snapshot{Builders: map[string]*drover.Builder{}, RunningByBuilder: map[string]int{},
		Locks: locks, StepLocks: stepLocks, ReluctantAfter: cfg.Master.ReluctantAfter,
		ExpireAfter: cfg.Master.ExpireAfter, Partial: m.othersAlive()}
	for i := range cfg.Builders {
		snap.Builders[cfg.Builders[i].Name] = &cfg.Builders[i]
	}
	byID := map[int64]drover.BuildRequest{}
	for _, r := range pending {
		byID[r.ID] = r
		snap.Requests = append(snap.Requests, dispatch.Request{ID: r.ID, Builder: r.Builder, Priority: r.Priority, Submitted: r.Submitted,
			Group: requestGroup(r.Properties), Collapsible: len(r.ChangeIDs) > 0 && r.Tries == 0,
			Repository: r.Source.Repository, Branch: r.Source.Branch})
	}
	if m.shared {
		// Other masters' builds count against max_builds too.
		n, err := m.runningByBuilder(ctx)
		if err != nil {
			return time.Time{}, err
		}
		snap.RunningByBuilder = n
	}
	m.mu.Lock()
	if m.closed || m.draining || m.fencing {
		m.mu.Unlock()
		return time.Time{}, nil
	}
	snap.NoWorkerSince = maps.Clone(m.noWorker)
	groups := map[string]map[string]bool{} // worker → shard groups it runs a part of
	for _, r := range m.builds {
		if !m.shared {
			snap.RunningByBuilder[r.build.Builder]++
		}
		if g := r.currentGroup(); g != "" {
			if groups[r.build.Worker] == nil {
				groups[r.build.Worker] = map[string]bool{}
			}
			groups[r.build.Worker][g] = true
		}
	}
	for _, s := range m.hub.Sessions() {
		snap.Workers = append(snap.Workers, dispatch.Worker{
			Name: s.Name, Facts: m.facts(s), Availability: m.effectiveAvailabilityLocked(s), Slots: s.MaxBuilds,
			Running: m.running[s.Name], Checkouts: m.checkouts[s.Name], Groups: groups[s.Name],
		})
	}
	m.mu.Unlock()
	sort.Slice(snap.Workers, func(i, j int) bool { return snap.Workers[i].Name < snap.Workers[j].Name })

	d := dispatch.Decide(snap, now)
	collapsed := make(map[int64]string, len(d.Collapsed))
	for id, into := range d.Collapsed {
		collapsed[id] = fmt.Sprintf("collapsed into request %d, which builds newer changes", into)
	}
	m.cancelRequests(ctx, byID, collapsed)
	claims := make([]store.Claim, 0, len(d.Assignments))
	for _, a := range d.Assignments {
		req := byID[a.Request]
		builder := snap.Builders[req.Builder]
		holder := drover.LockHolder{RequestID: req.ID, Builder: req.Builder, Step: -1, Since: now}
		if !m.locks.takeForRequest(builder.Locks, a.Worker, holder) {
			// A step asked for the lock since the snapshot: the next
			// round, woken by its release, places the request.
			d.Waiting[req.ID] = drover.WaitReason{Code: drover.WaitLock, Text: "waiting for a lock a running build's step is queued for"}
			continue
		}
		b := &drover.Build{Builder: req.Builder, Worker: a.Worker, WhyWorker: a.Why, Reason: req.Reason, Started: now, Master: m.id}
		var facts drover.Facts
		if s, ok := m.hub.Session(a.Worker); ok {
			facts = m.facts(s)
		}
		claims = append(claims, store.Claim{Request: req.ID, Build: b, Start: func(b *drover.Build) *store.BuildStart {
			return m.planStart(builder, b, facts)
		}})
	}
	// One transaction claims the round's requests and stores their builds'
	// starts; the builds run only once it has committed.
	if err := m.claim(ctx, claims); err != nil {
		for _, c := range claims {
			m.locks.releaseRequest(c.Request)
		}
		return time.Time{}, err
	}
	var failed error
	for _, c := range claims {
		req := byID[c.Request]
		if c.Err != nil {
			m.locks.releaseRequest(req.ID)
			if drover.KindOf(c.Err) != drover.Conflict && failed == nil {
				failed = c.Err
			}
			continue // a Conflict: cancelled or claimed meanwhile
		}
		b := *c.Build
		m.locks.bind(req.ID, b.ID, b.Number)
		m.met.dispatchLatency.Observe(now.Sub(req.Submitted).Seconds())
		m.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: req.ID})
		m.startBuild(b, *snap.Builders[req.Builder], c.Started)
	}
	m.mu.Lock()
	m.waiting, m.noWorker = d.Waiting, d.NoWorkerSince
	m.mu.Unlock()
	m.cancelRequests(ctx, byID, d.Expired)
	return d.Next, failed
}

// cancelRequests cancels pending requests a decision dropped (collapsed
// or expired), each with its reason. One claimed or cancelled meanwhile
// is left as it is; a store error is logged, and the next round decides
// again.
func (m *Master) cancelRequests(ctx context.Context, byID map[int64]drover.BuildRequest, reasons map[int64]string) {
	for id, reason := range reasons {
		req := byID[id]
		if err := m.store.CancelRequest(ctx, id, reason); err != nil {
			if drover.KindOf(err) != drover.Conflict && ctx.Err() == nil {
				m.logger.Error("cancel request", "request", id, "reason", reason, "err", err)
			}
			continue
		}
		m.logger.Info("request cancelled by dispatch", "request", id, "builder", req.Builder, "reason", reason)
		m.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: id})
	}
}

// pendingRequests returns the pending requests in queue order: from the
// dispatcher's copy, or, when other masters share the store, from the
// store itself, since they add and claim requests too.
func (m *Master) pendingRequests(ctx context.Context) ([]drover.BuildRequest, error) {
	if m.shared {
		return m.store.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	}
	return m.pending.list(ctx, m.store)
}

// claim claims the requests of a dispatch round in one transaction,
// setting each claim's Err. Should the batch fail as a whole (on
// PostgreSQL, a build number taken by another master's claim ends the
// transaction), each request is claimed on its own, as ClaimRequest
// retries that case.
func (m *Master) claim(ctx context.Context, claims []store.Claim) error {
	if len(claims) == 0 {
		return nil
	}
	err := m.store.ClaimRequests(ctx, claims)
	if err == nil || ctx.Err() != nil {
		return err
	}
	m.logger.Warn("claiming a batch of requests failed; claiming them one by one", "requests", len(claims), "err", err)
	for i := range claims {
		c := &claims[i]
		c.Err, c.Started = m.store.ClaimRequest(ctx, c.Request, c.Build), nil // each build stores its own start
		if c.Err != nil && drover.KindOf(c.Err) != drover.Conflict && drover.KindOf(c.Err) != drover.NotFound {
			for j := i + 1; j < len(claims); j++ {
				claims[j].Err = c.Err // not tried: their locks are released too
			}
			return nil
		}
	}
	return nil
}

// facts are a connected worker's facts as dispatch sees them: what it
// reports, with its labels, overridden by what the config sets for it.
func (m *Master) facts(s *workerhub.Session) drover.Facts {
	return s.Facts().Merge(m.config().WorkerFacts(s.Name))
}
