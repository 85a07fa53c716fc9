// Package mastertest runs a real master in this process, on loopback, for
// tests and benchmarks that need one without a binary: the API's and web
// UI's tests, the master's own, and drover-bench. It wires the master as
// cmd/drover does — a real store (SQLite in the directory, or the DSN
// given), a real log store, the worker protocol's gRPC server and the HTTP
// mux — with what tests want instead of what production wants: workers
// over plaintext on 127.0.0.1, ports chosen by the kernel, tokens hashed
// at bcrypt's minimum cost. Workers connect to it for real: the agent, or
// the simulated worker in this package (worker.go).
package mastertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/master"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
	"github.com/drover-ci/drover/internal/web"
	"github.com/drover-ci/drover/internal/workerhub"
)

// Options configure a test master.
type Options struct {
	// Dir is the master's directory; Config, the text of its master.star,
	// is written there.
	Dir    string
	Config string
	// DSN names the store; "" is Dir/state.sqlite.
	DSN string
	// WorkersAddr is where workers connect; "" is a free port of
	// 127.0.0.1 (a restarted master passes its old one).
	WorkersAddr string
	Logger      *slog.Logger
	Now         func() time.Time
	// Tokens hashes enrolled workers' secrets; the zero value is the
	// fast cost tests want.
	Tokens tokens.Hasher
}

// Master is a running test master.
type Master struct {
	*master.Master
	// Store is the master's store, for a test to arrange and check what
	// it holds; Logs its log store.
	Store store.Store
	Logs  *logstore.Dir
	// URL is the web UI and API ("http://127.0.0.1:port"); WorkersAddr
	// is where workers connect (plaintext); ConfigPath is master.star.
	URL         string
	HTTPAddr    string
	WorkersAddr string
	ConfigPath  string

	cancel   context.CancelFunc
	done     chan struct{}
	err      error // Run's, set before done closes
	stopOnce sync.Once
}

// shutdownTimeout bounds the servers' shutdown once the master stopped.
const shutdownTimeout = 5 * time.Second

// Start starts a master; Stop stops it.
func Start(ctx context.Context, o Options) (*Master, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Tokens == (tokens.Hasher{}) {
		o.Tokens = tokens.Hasher{Cost: tokens.FastCost}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("master dir: %w", err)
	}
	path := filepath.Join(o.Dir, "master.star")
	if err := os.WriteFile(path, []byte(o.Config), 0o644); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	dsn := o.DSN
	if dsn == "" {
		dsn = filepath.Join(o.Dir, "state.sqlite")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	m := &Master{Store: st, ConfigPath: path, done: make(chan struct{})}
	var httpLn, grpcLn net.Listener
	fail := func(err error) (*Master, error) {
		for _, ln := range []net.Listener{httpLn, grpcLn} {
			if ln != nil {
				ln.Close()
			}
		}
		if m.Logs != nil {
			m.Logs.Close()
		}
		st.Close()
		return nil, err
	}
	if m.Logs, err = logstore.Open(filepath.Join(o.Dir, "logs"), logstore.Options{MaxBytes: cfg.Master.LogMaxBytes, Logger: o.Logger}); err != nil {
		return fail(fmt.Errorf("open log store: %w", err))
	}
	if httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return fail(err)
	}
	if o.WorkersAddr == "" {
		o.WorkersAddr = "127.0.0.1:0"
	}
	if grpcLn, err = net.Listen("tcp", o.WorkersAddr); err != nil {
		return fail(err)
	}
	m.HTTPAddr, m.WorkersAddr = httpLn.Addr().String(), grpcLn.Addr().String()
	m.URL = "http://" + m.HTTPAddr
	reg := prometheus.NewRegistry()
	m.Master, err = master.New(master.Options{Dir: o.Dir, Config: cfg, ConfigPath: path, Store: st, Shared: store.Shared(dsn),
		Logs: m.Logs, HTTPURL: m.URL, WorkersAddr: m.WorkersAddr, Registry: reg, Logger: o.Logger,
		Version: "test", Now: o.Now, Tokens: o.Tokens})
	if err != nil {
		return fail(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(m.API(), o.Logger, api.Options{PublicReads: cfg.Master.PublicReads, Version: "test"}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	w, err := web.NewHandler(m.API(), o.Logger)
	if err != nil {
		return fail(err)
	}
	mux.Handle("/", w)

	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	gs := workerhub.NewServer(m.Hub(), nil)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var serving sync.WaitGroup
	serving.Add(2)
	go func() { defer serving.Done(); _ = gs.Serve(grpcLn) }() // owned: GracefulStop/Stop below ends it
	go func() { defer serving.Done(); _ = hs.Serve(httpLn) }() // owned: Shutdown/Close below ends it
	go func() {                                                // owned: Stop cancels and waits for it
		defer close(m.done)
		m.err = m.Run(rctx)
		sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer scancel()
		_ = hs.Shutdown(sctx)
		_ = hs.Close()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
			<-stopped
		}
		serving.Wait()
		m.Logs.Close()
		st.Close()
	}()
	return m, nil
}

// Stop stops the master gracefully (running builds get the config's
// stop_grace), waits for it and closes its store. It is idempotent.
func (m *Master) Stop() error {
	m.stopOnce.Do(m.cancel)
	<-m.done
	if m.err != nil && !errors.Is(m.err, context.Canceled) {
		return fmt.Errorf("master: %w", m.err)
	}
	return nil
}

// Done is closed once the master has stopped and closed its store.
func (m *Master) Done() <-chan struct{} { return m.done }

// New starts a master for test t from config source src, in a temporary
// directory, and stops it when the test ends.
func New(t testing.TB, src string) *Master {
	t.Helper()
	return NewWith(t, Options{Config: src})
}

// NewWith is New with options; an empty Dir is a temporary one.
func NewWith(t testing.TB, o Options) *Master {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("start master: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("stop master: %v", err)
		}
	})
	return m
}
