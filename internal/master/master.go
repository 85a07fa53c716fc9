// Package master is the master process's logic: it turns changes into
// build requests, dispatches requests to workers, drives each build step
// by step, and keeps its place in a site of masters. It is a few parts,
// each with its own state and narrow dependencies, wired here:
//
//	changesIn ─▶ store (requests) ─▶ dispatcher ─▶ runner ─▶ workerhub ─▶ worker
//	(schedulers,        ▲               │  ▲ wake-ups  │ steps, logs   │ output, finished
//	 pollers, force)    │               ▼  │           ▼               ▼
//	                    └──────────── dispatch.Decide  locks         fleet (sessions, facts,
//	                                                                   availability)
//	site: heartbeat, fence, adoption, notices      janitor: horizons
//	configs: the config in force and its reloads   backend: the API's facade
//
// The master decides; the store remembers. Every state change that must
// survive a crash (a request queued, claimed, finished) is one store
// transaction before the master acts on it, so a master killed at any line
// comes back to a consistent queue. The master builds none of its
// resources: the store, the log store, the listeners and the HTTP mux
// are made by its caller (cmd/drover) and passed in.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Options are what a Master is made of.
type Options struct {
	// Dir holds the master's own state: its ID (master-id) and files/
	// that download steps may read.
	Dir string
	// DataDir holds logs, artifacts and poller mirrors: the site's shared
	// directory, or Dir.
	DataDir    string
	Config     *config.Config
	ConfigPath string // the file Config was loaded from, for reloads
	Store      store.Store
	// Shared says other masters may share Store (PostgreSQL): the master
	// then joins their site.
	Shared bool
	Logs   *logstore.Dir
	// HTTPURL and WorkersAddr are where the caller serves the master (the
	// bound addresses), for the site's records and the default URL.
	HTTPURL     string
	WorkersAddr string
	// Registry takes the master's metrics.
	Registry prometheus.Registerer
	Logger   *slog.Logger
	Version  string
	Now      func() time.Time
	// Tokens hashes the secrets of the tokens the master makes (enrolled
	// workers'); the zero value uses bcrypt's default cost.
	Tokens tokens.Hasher
}

// Master is a master's parts, wired. Make it with New, run it with Run.
type Master struct {
	id      string
	logger  *slog.Logger
	store   store.Store // the queue-tracking store every part uses
	logs    *logstore.Dir
	bus     *events.Bus
	hub     *workerhub.Hub
	configs *configs
	locks   *lockManager
	fleet   *fleet
	runner  *runner
	disp    *dispatcher
	site    *site
	changes *changesIn
	pollers *pollers
	janitor *janitor
	backend *backend

	stopReq chan time.Duration // Stop's request, with its grace
	stopNow chan struct{}      // closed by StopNow
	nowOnce sync.Once
}

// New wires a master's parts over the resources in o.
func New(o Options) (*Master, error) {
	switch {
	case o.Config == nil:
		return nil, errors.New("master: no config")
	case o.Store == nil || o.Logs == nil:
		return nil, errors.New("master: no store or log store")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DataDir == "" {
		o.DataDir = o.Dir
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	id, err := loadMasterID(o.Dir)
	if err != nil {
		return nil, err
	}
	log := func(component string) *slog.Logger { return o.Logger.With("component", component) }
	m := &Master{id: id, logger: log("master"), logs: o.Logs, bus: &events.Bus{},
		stopReq: make(chan time.Duration, 1), stopNow: make(chan struct{})}
	pending := &pendingQueue{}
	st := queueStore{Store: o.Store, q: pending}
	m.store = st
	m.configs = newConfigs(o.Config, o.ConfigPath, o.Now, log("config"))
	cfg := m.configs.get
	m.locks = newLockManager(o.Config.Locks)
	m.disp = newDispatcher()
	m.fleet = &fleet{store: st, cfg: cfg, bus: m.bus, kick: m.disp.kick, now: o.Now, logger: log("fleet"), master: id,
		overrides: map[string]drover.AvailabilityOverride{}}
	m.hub = workerhub.New(workerhub.Options{Store: hubStore{Store: st, BuildWriter: st.Builds(id)}, Handler: m.fleet,
		Logs: o.Logs, Events: m.bus, Logger: o.Logger, Version: o.Version, Now: o.Now, Tokens: o.Tokens,
		Probes:      func() *pb.SetProbes { return probesOf(cfg()) },
		ArtifactDir: ArtifactDir(o.DataDir), FilesDir: FilesDir(o.Dir)})
	m.fleet.hub = m.hub
	met := newMetrics(o.Registry, m.hub)

	m.runner = newRunner()
	r := m.runner
	r.store, r.writes, r.logs, r.hub, r.bus, r.locks = st, st.Builds(id), o.Logs, m.hub, m.bus, m.locks
	r.cfg, r.facts, r.kick, r.met, r.now, r.logger = cfg, m.fleet.facts, m.disp.kick, met, o.Now, log("runner")

	m.pollers = newPollers(filepath.Join(o.DataDir, "pollers"), o.Logger, !o.Shared)
	m.changes = &changesIn{store: st, cfg: cfg, bus: m.bus, kick: m.disp.kick, now: o.Now, logger: log("changes"),
		changes: make(chan []*drover.Change, changesBuffer)}
	m.pollers.report = m.changes.polled

	self := func() drover.Master {
		return drover.Master{ID: id, URL: m.URL(), WorkersAddr: o.WorkersAddr, Version: o.Version}
	}
	m.site = &site{id: id, shared: o.Shared, store: st, runner: r, hub: m.hub, disp: m.disp, fleet: m.fleet,
		bus: m.bus, cfg: cfg, self: self, reload: m.reloadLocal, compare: m.configs.compare,
		leading: m.pollers.setLeader, now: o.Now, logger: log("site")}
	r.passCancel = m.site.passCancel
	m.fleet.takeOver, m.fleet.refusing = m.site.claimHeld, m.site.refusing

	d := m.disp
	d.store, d.pending, d.cfg, d.fleet, d.runner, d.locks = st, pending, cfg, m.fleet, r, m.locks
	d.bus, d.met, d.now, d.logger = m.bus, met, o.Now, log("dispatch")
	d.master, d.shared, d.partial = id, o.Shared, m.site.othersAlive

	m.janitor = &janitor{store: st, logs: o.Logs, artifacts: ArtifactDir(o.DataDir), cfg: cfg, leads: m.site.leads,
		now: o.Now, logger: log("janitor")}
	m.backend = &backend{reader: st, cfg: cfg, configs: m.configs, changes: m.changes, runner: r, disp: m.disp,
		fleet: m.fleet, locks: m.locks, site: m.site, logs: o.Logs, bus: m.bus, artifacts: ArtifactDir(o.DataDir),
		servedAt: o.HTTPURL, reload: m.Reload, auth: tokens.NewCache(time.Minute), now: o.Now, logger: log("api")}
	return m, nil
}

// hubStore is the store as the worker hub uses it: its build writes (log
// progress and step links) carry this master's ID like every other.
type hubStore struct {
	store.Store
	store.BuildWriter
}

// ID is this master's identity in its site.
func (m *Master) ID() string { return m.id }

// Hub is the worker protocol's service, for the caller's gRPC server.
func (m *Master) Hub() *workerhub.Hub { return m.hub }

// API is the backend of the REST API and the web UI.
func (m *Master) API() api.Backend { return m.backend }

// Artifacts serves the API's artifact downloads.
func (m *Master) Artifacts() api.ArtifactFiles { return m.backend }

// URL is the configured public URL, or the address the caller serves.
func (m *Master) URL() string { return m.backend.URL() }

// Run runs the master until ctx is done (or Stop is called), then stops:
// it takes no new builds, lets running ones finish for up to the config's
// stop_grace (workers stay connected meanwhile, so the caller keeps
// serving), and leaves the rest running on their workers for the next
// start to re-attach. When Run returns, every goroutine of the master has
// ended, workers have been told to reconnect, and the master has left its
// site: the caller may stop its servers and close the store.
func (m *Master) Run(ctx context.Context) error {
	// The master's own context outlives ctx: a graceful stop needs the
	// builds and the log flusher running after ctx ends.
	life, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	m.runner.base = life
	if err := m.recover(life); err != nil {
		return err
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() { // owned: ends when ctx ends or Run returns
		select {
		case <-ctx.Done():
			m.Stop(m.configs.get().Master.StopGrace)
		case <-stopped:
		}
	}()

	g, gctx := errgroup.WithContext(life)
	g.Go(func() error { m.disp.loop(gctx); return nil })
	g.Go(func() error { m.changes.loop(gctx); return nil })
	g.Go(func() error { m.hub.RunFlusher(gctx); return nil })
	g.Go(func() error { m.janitor.loop(gctx); return nil })
	g.Go(func() error { m.site.loop(gctx); return nil })
	g.Go(func() error { m.pollers.run(gctx, m.configs.get().Sources); return nil })
	if m.site.shared {
		sub := m.bus.Subscribe()
		g.Go(func() error { m.site.forward(gctx, sub); return nil })
		g.Go(func() error { return m.site.listen(gctx) })
	}
	g.Go(func() error {
		select {
		case grace := <-m.stopReq:
			m.drain(grace)
		case <-gctx.Done(): // a part failed
		}
		m.logger.Info("master stopping")
		// Let go of the builds first, so that the output they have is
		// flushed while the store is open; then the other loops end.
		m.disp.hold("stopping")
		m.runner.stop()
		cancel(errMasterStopping)
		return nil
	})
	m.logger.Info("master running", "id", m.id, "url", m.URL())
	m.disp.kick()
	err := g.Wait()
	if ferr := m.hub.Flush(context.WithoutCancel(ctx)); ferr != nil {
		m.logger.Warn("flush command output at stop", "err", ferr)
	}
	m.hub.CloseAll(errors.New("master stopping"))
	leaveCtx, done := context.WithTimeout(context.WithoutCancel(ctx), noticeTimeout)
	m.site.leave(leaveCtx)
	done()
	m.bus.Close()
	return err
}

// recover puts the state a previous master left into order: no worker is
// connected yet; builds it was running are re-attached (their commands run
// on in their workers, which come back on their own), or, when that cannot
// be, end as retry with their requests back in the queue; the builds of
// dead masters of the site are taken over; requests of builders the config
// no longer has are cancelled.
func (m *Master) recover(ctx context.Context) error {
	if err := m.site.join(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := m.fleet.load(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := m.site.adoptOwn(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := m.site.adoptOrphans(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return m.cancelOrphanRequests(ctx, m.configs.get())
}

// cancelOrphanRequests cancels pending requests of builders the config no
// longer has, with a reason, so they do not wait forever.
func (m *Master) cancelOrphanRequests(ctx context.Context, cfg *config.Config) error {
	pending, err := m.store.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return fmt.Errorf("list pending requests: %w", err)
	}
	for _, r := range pending {
		if _, ok := cfg.Builder(r.Builder); ok {
			continue
		}
		err := m.store.CancelRequest(ctx, r.ID, fmt.Sprintf("builder %q is no longer in the config", r.Builder))
		if err != nil && drover.KindOf(err) != drover.Conflict {
			return err
		}
		m.logger.Warn("cancelled request of a removed builder", "request", r.ID, "builder", r.Builder)
	}
	return nil
}

// Stop asks a running master to stop: it takes no new builds and gives
// running ones up to grace to finish before letting go of them. Only the
// first call counts; StopNow cuts the wait short.
func (m *Master) Stop(grace time.Duration) {
	select {
	case m.stopReq <- grace:
	default:
	}
}

// StopNow ends a graceful stop's wait at once.
func (m *Master) StopNow() { m.nowOnce.Do(func() { close(m.stopNow) }) }

// drain stops dispatching and waits for running builds, up to grace.
func (m *Master) drain(grace time.Duration) {
	m.disp.hold("stopping")
	n := m.runner.count()
	if grace <= 0 || n == 0 {
		return
	}
	m.logger.Info("stopping gracefully: taking no new builds, waiting for running ones", "builds", n, "grace", grace)
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	select {
	case <-m.runner.idleC():
		m.logger.Info("running builds finished")
	case <-deadline.C:
		m.logger.Warn("stop grace over; the builds still running go on when the master restarts", "builds", m.runner.count())
	case <-m.stopNow:
		m.logger.Warn("stopping now; the builds still running go on when the master restarts", "builds", m.runner.count())
	}
}

// Reload loads the master's config file again, and asks the other masters
// of the site to reload theirs, so a reconfig applies to the whole site.
func (m *Master) Reload(ctx context.Context) error {
	if err := m.reloadLocal(ctx); err != nil {
		return err
	}
	if m.site.shared {
		m.configs.compare("", "")
		m.site.notify(ctx, notice{Kind: noticeReload, Hash: m.configs.get().Hash})
	}
	return nil
}

// reloadLocal reloads this master's config file with the checkconfig
// loader. A config that fails to load is refused, and the config in force
// stays. A good one takes over for every new decision; running builds keep
// the builder definition they started with, and queued requests stay
// queued (those of removed builders are cancelled with a reason).
func (m *Master) reloadLocal(ctx context.Context) error {
	cfg, old, err := m.configs.load()
	if err != nil {
		return err
	}
	m.locks.setDefs(cfg.Locks)
	if !proto.Equal(probesOf(old), probesOf(cfg)) {
		for _, s := range m.hub.Sessions() {
			if err := s.SetProbes(probesOf(cfg)); err != nil {
				m.logger.Warn("send probes", "worker", s.Name, "err", err)
			}
		}
	}
	m.pollers.apply(cfg.Sources)
	if err := m.cancelOrphanRequests(ctx, cfg); err != nil {
		m.logger.Error("cancel requests of removed builders", "err", err)
	}
	m.logger.Info("config reloaded", "hash", cfg.Hash, "builders", len(cfg.Builders), "previous_builders", len(old.Builders))
	m.bus.Publish(events.Event{Type: events.ConfigLoaded})
	m.disp.kick()
	return nil
}

// probesOf is the probes message for a config.
func probesOf(cfg *config.Config) *pb.SetProbes {
	p := &pb.SetProbes{ProbeIntervalMs: cfg.Master.ProbeInterval.Milliseconds()}
	for _, pr := range cfg.Probes {
		p.Probes = append(p.Probes, &pb.Probe{Name: pr.Name, Command: pr.Command, TimeoutMs: pr.Timeout.Milliseconds()})
	}
	return p
}
