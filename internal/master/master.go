// Package master is the master process: it loads the config, opens the
// store and the log store, serves workers (gRPC) and people (HTTP), turns
// changes into build requests, dispatches requests to workers, and drives
// each build step by step.
//
//	changes ─▶ schedulers ─▶ store (requests) ─▶ dispatcher ─▶ build runner ─▶ workerhub ─▶ worker
//	                                                 ▲  wake-ups   │ steps, logs       │ output, finished
//	                                                 └─────────────┴───────────────────┘
//
// The master decides; the store remembers. Every state change that must
// survive a crash (a request queued, claimed, finished) is one store
// transaction before the master acts on it, so a master killed at any line
// comes back to a consistent queue.
package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/pki"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
	"github.com/drover-ci/drover/internal/web"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Options configure a Master.
type Options struct {
	// Dir holds the master's state: state.sqlite, logs/, certificates.
	Dir    string
	Config *config.Config
	// ConfigPath is the file Config was loaded from, for reloads.
	ConfigPath string
	// HTTPAddr and WorkersAddr override the config's listen addresses
	// (tests and quickstart use 127.0.0.1:0).
	HTTPAddr    string
	WorkersAddr string
	// Plaintext serves workers without TLS; refused unless the address is
	// loopback or the config allows plaintext.
	Plaintext bool
	Logger    *slog.Logger
	Version   string
	Now       func() time.Time
	// Tokens hashes the secrets of the tokens the master makes (enrolled
	// workers'); the zero value uses bcrypt's default cost.
	Tokens tokens.Hasher
}

// Master is a running master. Make it with New, start it with Run.
type Master struct {
	id         string // identity in the site (see site.go)
	dir        string
	data       string // logs and artifacts: dir, or the site's shared directory
	configPath string
	base       *slog.Logger // without a component, for the parts the master wires
	logger     *slog.Logger
	version    string
	now        func() time.Time

	cfg   atomic.Pointer[config.Config]
	store store.Store
	// shared is set when the store can be shared with other masters
	// (PostgreSQL): notices then cross between them.
	shared bool
	logs   *logstore.Dir
	bus    *events.Bus
	hub    *workerhub.Hub
	auth   *tokens.Cache
	met    *metrics
	reg    *prometheus.Registry

	httpLn, grpcLn net.Listener
	grpcTLS        *tls.Config
	fingerprint    string

	reload  reloadState
	site    siteState
	stopReq chan time.Duration // Stop's request, with its grace
	stopNow chan struct{}      // closed by StopNow
	nowOnce sync.Once
	pollers atomic.Pointer[pollers] // set by Run
	wake    chan struct{}           // dispatcher wake-ups, coalesced
	pending pendingQueue            // the dispatcher's copy of the queue
	changes chan []*drover.Change

	// ctx is Run's context, for work started by callbacks (builds).
	ctx context.Context
	wg  sync.WaitGroup // build runners

	mu        sync.Mutex
	builds    map[int64]*buildRun // running builds by ID
	cmds      map[string]*command // in-flight commands by ID
	running   map[string]int      // running builds per worker
	checkouts map[string]map[string]bool
	overrides map[string]drover.AvailabilityOverride // operators' availability by worker
	waiting   map[int64]drover.WaitReason            // why each pending request waits, as of the last dispatch
	noWorker  map[int64]time.Time                    // since when a pending request has had no eligible worker online
	locks     *lockManager
	draining  bool // stopping: take no new builds
	fencing   bool // letting go of builds after a lapsed heartbeat: take no new ones
	closed    bool
}

// New opens the master's state and binds its ports; Run serves them.
func New(ctx context.Context, o Options) (*Master, error) {
	if o.Config == nil {
		return nil, errors.New("master: no config")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("master dir: %w", err)
	}
	m := &Master{
		dir: o.Dir, configPath: o.ConfigPath, base: o.Logger, logger: o.Logger.With("component", "master"), version: o.Version, now: o.Now,
		bus: &events.Bus{}, auth: tokens.NewCache(time.Minute),
		wake: make(chan struct{}, 1), changes: make(chan []*drover.Change, 64),
		stopReq: make(chan time.Duration, 1), stopNow: make(chan struct{}),
		builds: map[int64]*buildRun{}, cmds: map[string]*command{}, running: map[string]int{},
		checkouts: map[string]map[string]bool{}, overrides: map[string]drover.AvailabilityOverride{},
		waiting: map[int64]drover.WaitReason{}, noWorker: map[int64]time.Time{},
	}
	id, err := loadMasterID(o.Dir)
	if err != nil {
		return nil, err
	}
	m.id = id
	cfg := o.Config
	m.cfg.Store(cfg)
	m.locks = newLockManager(cfg.Locks)
	m.reload.status = api.ConfigStatus{Hash: cfg.Hash, LoadedAt: o.Now()}

	dsn := cfg.Master.Database
	if dsn == "" {
		dsn = filepath.Join(o.Dir, "state.sqlite")
	}
	st, err := store.Open(ctx, dsn)
	m.shared = strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	m.store = queueStore{Store: st, q: &m.pending}
	fail := func(err error) (*Master, error) {
		m.closeResources()
		return nil, err
	}
	data := sharedDir(o.Dir, cfg)
	m.data = data
	logs, err := logstore.Open(filepath.Join(data, "logs"), logstore.Options{MaxBytes: cfg.Master.LogMaxBytes, Logger: o.Logger.With("component", "logstore")})
	if err != nil {
		return fail(fmt.Errorf("open log store: %w", err))
	}
	m.logs = logs

	m.reg = prometheus.NewRegistry()
	m.met = newMetrics(m.reg, m)

	m.hub = workerhub.New(workerhub.Options{Store: st, Handler: m, Logger: o.Logger, Version: o.Version, Now: o.Now,
		Probes:      func() *pb.SetProbes { return probesOf(m.config()) },
		ArtifactDir: ArtifactDir(data), FilesDir: FilesDir(o.Dir), Tokens: o.Tokens})

	httpAddr, grpcAddr := cfg.Master.HTTP, cfg.Master.Workers
	if o.HTTPAddr != "" {
		httpAddr = o.HTTPAddr
	}
	if o.WorkersAddr != "" {
		grpcAddr = o.WorkersAddr
	}
	if o.Plaintext {
		if !isLoopback(grpcAddr) && !cfg.Master.AllowPlaintext {
			return fail(drover.Errorf(drover.Invalid, "plaintext workers on %s: only on a loopback address, unless the config sets allow_plaintext = True", grpcAddr))
		}
	} else {
		host, _ := os.Hostname()
		tlsCfg, fp, err := pki.ServerTLS(o.Dir, []string{host})
		if err != nil {
			return fail(err)
		}
		m.grpcTLS, m.fingerprint = tlsCfg, fp
	}
	if m.httpLn, err = net.Listen("tcp", httpAddr); err != nil {
		return fail(fmt.Errorf("listen for HTTP: %w", err))
	}
	if m.grpcLn, err = net.Listen("tcp", grpcAddr); err != nil {
		return fail(fmt.Errorf("listen for workers: %w", err))
	}
	return m, nil
}

// sharedDir is where logs and artifacts live: the config's shared_dir,
// relative to the master's directory, or that directory.
func sharedDir(dir string, cfg *config.Config) string {
	d := cfg.Master.SharedDir
	switch {
	case d == "":
		return dir
	case filepath.IsAbs(d):
		return d
	}
	return filepath.Join(dir, d)
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HTTPAddr is the bound address of the web UI and API.
func (m *Master) HTTPAddr() string { return m.httpLn.Addr().String() }

// WorkersAddr is the bound address of the worker port.
func (m *Master) WorkersAddr() string { return m.grpcLn.Addr().String() }

// Fingerprint is the CA fingerprint workers pin ("" in plaintext).
func (m *Master) Fingerprint() string { return m.fingerprint }

// Store gives tools (init, tokens) the master's store.
func (m *Master) Store() store.Store { return m.store }

func (m *Master) config() *config.Config { return m.cfg.Load() }

// Run serves until ctx is done (or Stop is called), then stops: it takes
// no new builds, lets running ones finish for up to the config's
// stop_grace (workers stay connected meanwhile), and leaves the rest
// running on their workers for the next start to re-attach.
func (m *Master) Run(ctx context.Context) error {
	// The master's own context outlives ctx: a graceful stop needs the
	// builds, the servers and the log flusher running after ctx ends.
	life, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	m.ctx = life
	defer cancel(nil)
	go func() { // owned: ends when ctx or life ends, both before Run returns
		select {
		case <-ctx.Done():
			m.Stop(m.config().Master.StopGrace)
		case <-life.Done():
		}
	}()

	m.site.mu.Lock()
	m.site.started, m.site.lastBeat = m.now(), m.now()
	m.site.mu.Unlock()
	m.beat(life)
	if err := m.recover(life); err != nil {
		return err
	}

	grpcOpts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(4 << 20),
	}
	if m.grpcTLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(m.grpcTLS)))
	}
	gs := grpc.NewServer(grpcOpts...)
	pb.RegisterWorkerServer(gs, m.hub)

	handler, err := m.httpHandler()
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn)}

	g, gctx := errgroup.WithContext(life)
	g.Go(func() error {
		if err := gs.Serve(m.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve workers: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := hs.Serve(m.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error { m.dispatchLoop(gctx); return nil })
	g.Go(func() error { m.schedulerLoop(gctx); return nil })
	g.Go(func() error { m.flushLoop(gctx); return nil })
	g.Go(func() error { m.janitorLoop(gctx); return nil })
	g.Go(func() error { m.siteLoop(gctx); return nil })
	if m.shared {
		sub := m.bus.Subscribe()
		g.Go(func() error { m.forwardEvents(gctx, sub); return nil })
		g.Go(func() error { return m.listenSite(gctx) })
	}
	ps := newPollers(gctx, m, !m.shared)
	m.pollers.Store(ps)
	ps.apply(m.config().Sources)
	g.Go(func() error {
		<-gctx.Done()
		ps.wait()
		return nil
	})
	g.Go(func() error {
		select {
		case grace := <-m.stopReq:
			m.drain(grace)
		case <-gctx.Done(): // a server failed
		}
		m.logger.Info("master stopping")
		// Stop builds first so their final state reaches the store while
		// the store is still open.
		cancel(errMasterStopping)
		m.stopBuilds()
		shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = hs.Shutdown(shutdownCtx)
		m.hub.CloseAll(errors.New("master stopping"))
		// Gone from the site: the other masters take over at once what
		// this one leaves running.
		if err := m.store.RemoveMaster(shutdownCtx, m.id); err != nil {
			m.logger.Warn("leave the site", "err", err)
		}
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-shutdownCtx.Done():
			gs.Stop()
		}
		return nil
	})
	m.logger.Info("master running", "http", m.HTTPAddr(), "workers", m.WorkersAddr(), "tls", m.grpcTLS != nil)
	m.kick()
	err = g.Wait()
	m.wg.Wait()
	m.bus.Close()
	m.closeResources()
	return err
}

// Stop asks a running master to stop: it takes no new builds and gives
// running ones up to grace to finish before stopping them. Only the first
// call counts; StopNow cuts the wait short.
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
	m.mu.Lock()
	m.draining = true
	n := len(m.builds)
	m.mu.Unlock()
	if grace <= 0 || n == 0 {
		return
	}
	m.logger.Info("stopping gracefully: taking no new builds, waiting for running ones", "builds", n, "grace", grace)
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		m.mu.Lock()
		n = len(m.builds)
		m.mu.Unlock()
		if n == 0 {
			m.logger.Info("running builds finished")
			return
		}
		select {
		case <-deadline.C:
			m.logger.Warn("stop grace over; the builds still running go on when the master restarts", "builds", n)
			return
		case <-m.stopNow:
			m.logger.Warn("stopping now; the builds still running go on when the master restarts", "builds", n)
			return
		case <-tick.C:
		}
	}
}

func (m *Master) closeResources() {
	if m.logs != nil {
		_ = m.logs.Close()
	}
	if m.store != nil {
		_ = m.store.Close()
	}
	for _, ln := range []net.Listener{m.httpLn, m.grpcLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// recover puts the state a previous master left into order: no worker is
// connected yet; builds it was running are re-attached (their commands run
// on in their workers, which come back on their own), or, when that cannot
// be, end as retry with their requests back in the queue.
func (m *Master) recover(ctx context.Context) error {
	if err := m.store.MarkDisconnected(ctx, m.id); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	workers, err := m.store.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	m.mu.Lock()
	for _, w := range workers {
		if w.Override != nil {
			m.overrides[w.Name] = *w.Override
		}
	}
	m.mu.Unlock()
	if err := m.adoptOwn(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := m.adoptOrphans(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	cfg := m.config()
	return m.cancelOrphanRequests(ctx, cfg)
}

// cancelOrphanRequests cancels pending requests of builders the config no
// longer has, with a reason, so they do not wait forever.
func (m *Master) cancelOrphanRequests(ctx context.Context, cfg *config.Config) error {
	pending, err := m.store.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return fmt.Errorf("list pending requests: %w", err)
	}
	known := map[string]bool{}
	for _, b := range cfg.Builders {
		known[b.Name] = true
	}
	for _, r := range pending {
		if known[r.Builder] {
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

func (m *Master) httpHandler() (http.Handler, error) {
	cfg := m.config()
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(m, m.base, api.Options{PublicReads: cfg.Master.PublicReads, Version: m.version}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	w, err := web.NewHandler(m, m.base)
	if err != nil {
		return nil, fmt.Errorf("web UI: %w", err)
	}
	mux.Handle("/", w)
	return mux, nil
}

// probesOf is the probes message for a config.
func probesOf(cfg *config.Config) *pb.SetProbes {
	p := &pb.SetProbes{ProbeIntervalMs: cfg.Master.ProbeInterval.Milliseconds()}
	for _, pr := range cfg.Probes {
		p.Probes = append(p.Probes, &pb.Probe{Name: pr.Name, Command: pr.Command, TimeoutMs: pr.Timeout.Milliseconds()})
	}
	return p
}

// kick wakes the dispatcher; wake-ups coalesce.
func (m *Master) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// flushInterval is how often partial log chunks are written and acked:
// short enough that a live log feels live, long enough to batch output.
const flushInterval = 200 * time.Millisecond

func (m *Master) flushLoop(ctx context.Context) {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.mu.Lock()
			cmds := make([]*command, 0, len(m.cmds))
			for _, c := range m.cmds {
				cmds = append(cmds, c)
			}
			m.mu.Unlock()
			m.flushAll(ctx, cmds)
		}
	}
}

// flushAll makes the output of every command in flight durable, records
// how far each log got in one store transaction, and only then acks the
// workers: output a worker forgets is output a restarted master knows it
// has, never less.
func (m *Master) flushAll(ctx context.Context, cmds []*command) {
	var progress []drover.Log
	var flushed []*command
	var seqs []uint64
	for _, c := range cmds {
		if seq, bytes, ok := c.persist(m); ok {
			progress = append(progress, drover.Log{ID: c.logID, Seq: seq, SeqBytes: bytes})
			flushed, seqs = append(flushed, c), append(seqs, seq)
		}
	}
	if len(progress) == 0 {
		return
	}
	if err := m.store.SetLogProgress(context.WithoutCancel(ctx), progress); err != nil {
		m.logger.Error("store log progress", "err", err)
		return // no acks: the workers keep the output until it is recorded
	}
	for i, c := range flushed {
		c.ack(m, seqs[i])
	}
}

// janitorInterval is how often expired logs are removed.
const janitorInterval = time.Hour

func (m *Master) janitorLoop(ctx context.Context) {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		if m.leads() {
			m.expireLogs(ctx)
			m.expireArtifacts(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Master) expireLogs(ctx context.Context) {
	horizon := m.config().Master.LogHorizon
	if horizon <= 0 {
		return
	}
	for {
		old, err := m.store.ExpiredLogs(ctx, m.now().Add(-horizon), 500)
		if err != nil || len(old) == 0 {
			if err != nil && ctx.Err() == nil {
				m.logger.Error("find expired logs", "err", err)
			}
			return
		}
		ids := make([]int64, len(old))
		for i, l := range old {
			ids[i] = l.ID
		}
		// Files first: a crash between the two leaves index rows pointing
		// at nothing, which the next pass deletes, never orphan files.
		if err := m.logs.Delete(ids...); err != nil {
			m.logger.Error("delete expired logs", "err", err)
			return
		}
		if err := m.store.DeleteLogs(ctx, ids); err != nil {
			m.logger.Error("delete expired log index", "err", err)
			return
		}
		m.logger.Info("expired logs", "count", len(ids))
	}
}
