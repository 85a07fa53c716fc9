package master

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/timewindow"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// fleetStore is what the fleet keeps of workers in the store.
type fleetStore interface {
	UpsertWorker(ctx context.Context, w *drover.Worker) error
	GetWorker(ctx context.Context, name string) (*drover.Worker, error)
	ListWorkers(ctx context.Context) ([]drover.Worker, error)
	SetAvailabilityOverride(ctx context.Context, name string, o *drover.AvailabilityOverride) error
	SetApproval(ctx context.Context, name, approval, by string, at time.Time) error
}

// fleet is the master's view of its workers: it records them as they come
// and go (it is the worker hub's Handler), keeps the operators'
// availability overrides, merges the facts the config sets for a worker
// over what the worker claims, says which workers the config puts in a
// downtime now, and explains eligibility.
type fleet struct {
	store  fleetStore
	hub    *workerhub.Hub
	cfg    func() *config.Config
	bus    *events.Bus
	kick   func() // wakes the dispatcher
	now    func() time.Time
	logger *slog.Logger
	master string // this master's ID, on the workers connected to it
	// takeOver, called as a worker connects, makes this master the driver
	// of the builds whose commands the worker still runs, when their
	// master is gone (see site.claimHeld). Its error refuses the worker.
	takeOver func(ctx context.Context, s *workerhub.Session, held []*pb.RunningCommand) error
	// refusing, when it returns an error, refuses every worker (the
	// master's place in its site lapsed): they go to another master.
	refusing func() error

	mu        sync.Mutex
	overrides map[string]drover.AvailabilityOverride // operators' availability by worker
	down      map[string]string                      // the downtime each worker was in at the last round, in words
}

var (
	_ workerhub.Handler        = (*fleet)(nil)
	_ workerhub.ApprovalPolicy = (*fleet)(nil)
)

// onlineWorker is a connected worker as dispatch sees it.
type onlineWorker struct {
	name         string
	facts        drover.Facts
	availability drover.Availability
	slots        int
	downtime     string    // the downtime it is in, in words; "" for none
	until        time.Time // when its downtime next starts or ends; zero: never
}

// load reads the operators' overrides, as the master starts.
func (f *fleet) load(ctx context.Context) error {
	workers, err := f.store.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("read workers: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range workers {
		if w.Override != nil {
			f.overrides[w.Name] = *w.Override
		}
	}
	return nil
}

// WorkerConnected implements workerhub.Handler: it takes over the builds
// the worker holds commands of, when their master is gone, and records
// the worker.
func (f *fleet) WorkerConnected(ctx context.Context, s *workerhub.Session, held []*pb.RunningCommand) error {
	if err := f.refusing(); err != nil {
		return err
	}
	if err := f.takeOver(ctx, s, held); err != nil {
		return err
	}
	w := f.record(s)
	w.Connected, w.ConnectedAt, w.LastSeen = true, s.Since, s.Since
	if err := f.store.UpsertWorker(ctx, w); err != nil {
		f.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
	f.kick()
	return nil
}

// WorkerDisconnected implements workerhub.Handler: it marks the worker
// gone, unless it has already come back on a newer session or connected
// to another master of the site.
func (f *fleet) WorkerDisconnected(ctx context.Context, s *workerhub.Session, err error) {
	if cur, ok := f.hub.Session(s.Name); ok && cur != s {
		return
	}
	if cur, err := f.store.GetWorker(ctx, s.Name); err == nil && cur.Connected && cur.Master != f.master && cur.Master != "" {
		return
	}
	w := f.record(s)
	w.Connected, w.LastSeen = false, s.LastSeen()
	if err := f.store.UpsertWorker(ctx, w); err != nil {
		f.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
}

// FactsChanged implements workerhub.Handler: it stores the new facts and
// lets dispatch reconsider.
func (f *fleet) FactsChanged(ctx context.Context, s *workerhub.Session) {
	w := f.record(s)
	w.Connected, w.ConnectedAt, w.LastSeen = true, s.Since, s.LastSeen()
	if err := f.store.UpsertWorker(ctx, w); err != nil {
		f.logger.Error("store worker", "worker", s.Name, "err", err)
	}
	f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: s.Name})
	f.kick()
}

// RequireApproval implements workerhub.ApprovalPolicy from the config in
// force, so that a reload switching approve_workers applies to the next
// enrollment.
func (f *fleet) RequireApproval() bool { return f.cfg().Master.ApproveWorkers }

// record is the store's view of a session's worker.
func (f *fleet) record(s *workerhub.Session) *drover.Worker {
	a, reason := s.Availability()
	return &drover.Worker{
		Name: s.Name, Facts: f.facts(s), Labels: drover.Properties(s.Labels), Version: s.Version,
		OS: s.OS, Arch: s.Arch, Availability: a, AvailabilityReason: reason, Address: s.Addr, Master: f.master,
	}
}

// facts are a connected worker's facts as dispatch sees them: what it
// reports, with its labels and the protocol it speaks, overridden by what
// the config sets for it.
func (f *fleet) facts(s *workerhub.Session) drover.Facts {
	own := s.Facts()
	if s.Protocol > 0 {
		own = own.Merge(drover.Facts{drover.FactProtocol: {fmt.Sprint(s.Protocol)}})
	}
	return own.Merge(f.cfg().WorkerFacts(s.Name))
}

// factsOf is the facts of worker name, nil when it is not connected.
func (f *fleet) factsOf(name string) drover.Facts {
	if s, ok := f.hub.Session(name); ok {
		return f.facts(s)
	}
	return nil
}

// online is every connected worker as dispatch sees it at now: its facts,
// its effective availability (an operator's override, else its own), its
// slots, and the downtime it is in, which wins over both.
func (f *fleet) online(now time.Time) []onlineWorker {
	sessions := f.hub.Sessions()
	out := make([]onlineWorker, 0, len(sessions))
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range sessions {
		a, _ := s.Availability()
		if o, ok := f.overrides[s.Name]; ok {
			a = o.Availability
		}
		w := onlineWorker{name: s.Name, facts: f.facts(s), availability: a, slots: s.MaxBuilds}
		var d *drover.Downtime
		if d, w.until = f.downtime(s.Name, now); d != nil {
			w.downtime = d.String()
		}
		out = append(out, w)
	}
	return out
}

// downtime is the downtime the config puts worker name in at now (nil for
// none), and when that next changes: the downtime's end, or the start of
// its next one (zero: never).
func (f *fleet) downtime(name string, now time.Time) (*drover.Downtime, time.Time) {
	set := f.cfg().WorkerDowntime(name)
	if set.IsZero() {
		return nil, time.Time{}
	}
	next := set.Next(now)
	w, ok := set.Active(now)
	if !ok {
		return nil, next
	}
	d := &drover.Downtime{Source: "config", Window: w.Format(set.Zone), Until: next}
	d.Reason = d.Window
	if !next.IsZero() {
		d.Reason += " until " + timewindow.Until(now, next, w.Location(set.Zone))
	}
	return d, next
}

// withDowntime sets w.Downtime as of now, for those who read the worker:
// the API, the web UI, the CLI.
func (f *fleet) withDowntime(w *drover.Worker, now time.Time) {
	w.Downtime, _ = f.downtime(w.Name, now)
}

// noteDowntimes looks at every downtime of the config at now: it tells
// the pages of each worker that entered or left one since the last look
// (a WorkerChanged event) and returns when the next downtime starts or
// ends (zero: never), so that the dispatcher wakes then even with an
// empty queue.
func (f *fleet) noteDowntimes(now time.Time) time.Time {
	var next time.Time
	cur := map[string]string{}
	for _, wc := range f.cfg().Workers {
		d, n := f.downtime(wc.Name, now)
		if d != nil {
			cur[wc.Name] = d.String()
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	f.mu.Lock()
	var changed []string
	for name, d := range cur {
		if f.down[name] != d {
			changed = append(changed, name)
		}
	}
	for name := range f.down {
		if _, ok := cur[name]; !ok {
			changed = append(changed, name)
		}
	}
	f.down = cur
	f.mu.Unlock()
	for _, name := range changed {
		f.logger.Info("worker downtime", "worker", name, "downtime", cur[name])
		f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: name})
	}
	return next
}

// setAvailability sets an operator's availability for a worker (a == ""
// clears it).
func (f *fleet) setAvailability(ctx context.Context, worker string, a drover.Availability, reason, by string) error {
	var o *drover.AvailabilityOverride
	if a != "" {
		if _, err := drover.ParseAvailability(string(a)); err != nil {
			return err
		}
		o = &drover.AvailabilityOverride{Availability: a, Reason: reason, By: by, At: f.now()}
	}
	if err := f.store.SetAvailabilityOverride(ctx, worker, o); err != nil {
		return err
	}
	f.setOverride(worker, o)
	f.logger.Debug("worker availability set", "worker", worker, "availability", a, "reason", reason, "by", by)
	f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	f.kick()
	return nil
}

func (f *fleet) setOverride(worker string, o *drover.AvailabilityOverride) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o == nil {
		delete(f.overrides, worker)
	} else {
		f.overrides[worker] = *o
	}
}

// refreshOverride reads a worker's operator override from the store,
// which another master of the site set.
func (f *fleet) refreshOverride(ctx context.Context, worker string) {
	w, err := f.store.GetWorker(ctx, worker)
	if err != nil {
		return
	}
	f.setOverride(worker, w.Override)
	f.kick()
}

// setApproval records an admin's verdict on a worker. Approving needs
// nothing more: the worker retries its connection with backoff and is let
// in at its next attempt. A worker that is no longer approved loses its
// live session, so that it takes no new build; it is refused when it dials
// again.
func (f *fleet) setApproval(ctx context.Context, worker, approval, by string) error {
	if err := f.store.SetApproval(ctx, worker, approval, by, f.now()); err != nil {
		return fmt.Errorf("set approval of worker %s: %w", worker, err)
	}
	f.logger.Info("worker approval set", "worker", worker, "approval", approval, "by", by)
	var refusal error
	switch approval {
	case drover.ApprovalRejected:
		refusal = status.Errorf(codes.PermissionDenied, "worker %s was rejected", worker)
	case drover.ApprovalPending:
		refusal = status.Errorf(codes.FailedPrecondition, "worker %s is awaiting approval by an admin", worker)
	}
	if refusal != nil && f.hub.Disconnect(worker, refusal) {
		f.logger.Info("worker disconnected: no longer approved", "worker", worker, "approval", approval)
	}
	f.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	return nil
}

// eligibility explains, for every known worker, whether it may run b.
func (f *fleet) eligibility(ctx context.Context, b *drover.Builder) ([]drover.Eligibility, error) {
	workers, err := f.store.ListWorkers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]drover.Eligibility, 0, len(workers))
	for _, w := range workers {
		s, connected := f.hub.Session(w.Name)
		var facts drover.Facts
		if connected {
			facts = f.facts(s)
		} else {
			facts = w.Facts.Merge(labelFacts(w.Labels)).Merge(f.cfg().WorkerFacts(w.Name))
		}
		e := drover.CheckEligibility(b, w.Name, facts)
		if !connected {
			e.Reasons = append(e.Reasons, "not connected now")
		}
		if d, _ := f.downtime(w.Name, f.now()); d != nil {
			e.Reasons = append(e.Reasons, "in "+d.String())
		}
		out = append(out, e)
	}
	return out, nil
}

func labelFacts(labels drover.Properties) drover.Facts {
	f := drover.Facts{}
	for k, v := range labels {
		f[k] = []string{v}
	}
	return f
}
