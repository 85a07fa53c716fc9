//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/master"
	"github.com/drover-ci/drover/internal/pki"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/web"
	"github.com/drover-ci/drover/internal/workerhub"
)

// masterSetup is what `master run` and `quickstart` start a master from.
type masterSetup struct {
	dir        string
	cfg        *config.Config
	configPath string
	// httpAddr and workersAddr override the config's listen addresses
	// (tests and quickstart use 127.0.0.1:0).
	httpAddr, workersAddr string
	// plaintext serves workers without TLS; refused unless the address is
	// loopback or the config allows plaintext.
	plaintext bool
	logger    *slog.Logger
}

// servedMaster is a master with the resources it runs on and the servers
// that serve it: made by openMaster, run by run, which closes it all.
type servedMaster struct {
	m              *master.Master
	st             store.Store
	logs           *logstore.Dir
	httpLn, grpcLn net.Listener
	tls            *tls.Config
	fingerprint    string // the CA fingerprint workers pin ("" in plaintext)
	handler        http.Handler
	logger         *slog.Logger
}

// shutdownTimeout bounds the servers' shutdown once the master has
// stopped: open event streams and workers' streams are cut after it.
const shutdownTimeout = 5 * time.Second

// openMaster builds what a master runs on — the store the config names
// (state.sqlite beside it by default), the log store, the TLS certificate
// workers pin, the two listeners, the metrics registry and the HTTP mux —
// and wires the master over them.
func openMaster(ctx context.Context, s masterSetup) (sm *servedMaster, err error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("master dir: %w", err)
	}
	sm = &servedMaster{logger: s.logger}
	defer func() {
		if err != nil {
			sm.close()
		}
	}()
	cfg := s.cfg
	dsn := cfg.Master.Database
	if dsn == "" {
		dsn = filepath.Join(s.dir, "state.sqlite")
	}
	if sm.st, err = store.Open(ctx, dsn); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	data := sharedDir(s.dir, cfg)
	sm.logs, err = logstore.Open(filepath.Join(data, "logs"), logstore.Options{MaxBytes: cfg.Master.LogMaxBytes, Logger: s.logger})
	if err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}

	httpAddr, grpcAddr := cfg.Master.HTTP, cfg.Master.Workers
	if s.httpAddr != "" {
		httpAddr = s.httpAddr
	}
	if s.workersAddr != "" {
		grpcAddr = s.workersAddr
	}
	if s.plaintext {
		if !isLoopback(grpcAddr) && !cfg.Master.AllowPlaintext {
			return nil, drover.Errorf(drover.Invalid, "plaintext workers on %s: only on a loopback address, unless the config sets allow_plaintext = True", grpcAddr)
		}
	} else {
		host, _ := os.Hostname()
		if sm.tls, sm.fingerprint, err = pki.ServerTLS(s.dir, []string{host}); err != nil {
			return nil, err
		}
	}
	if sm.httpLn, err = net.Listen("tcp", httpAddr); err != nil {
		return nil, fmt.Errorf("listen for HTTP: %w", err)
	}
	if sm.grpcLn, err = net.Listen("tcp", grpcAddr); err != nil {
		return nil, fmt.Errorf("listen for workers: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sm.m, err = master.New(master.Options{
		Dir: s.dir, DataDir: data, Config: cfg, ConfigPath: s.configPath,
		Store: sm.st, Shared: store.Shared(dsn), Logs: sm.logs,
		HTTPURL: "http://" + sm.httpLn.Addr().String(), WorkersAddr: sm.grpcLn.Addr().String(),
		Registry: reg, Logger: s.logger, Version: version,
	})
	if err != nil {
		return nil, err
	}
	if sm.handler, err = httpHandler(sm.m, cfg, reg, s.logger); err != nil {
		return nil, err
	}
	return sm, nil
}

// httpHandler is the master's HTTP mux: the REST API, the metrics and the
// web UI.
func httpHandler(m *master.Master, cfg *config.Config, reg *prometheus.Registry, logger *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(m.API(), logger, api.Options{PublicReads: cfg.Master.PublicReads, Version: version}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	w, err := web.NewHandler(m.API(), logger)
	if err != nil {
		return nil, fmt.Errorf("web UI: %w", err)
	}
	mux.Handle("/", w)
	return mux, nil
}

// HTTPAddr and WorkersAddr are the bound addresses.
func (sm *servedMaster) HTTPAddr() string    { return sm.httpLn.Addr().String() }
func (sm *servedMaster) WorkersAddr() string { return sm.grpcLn.Addr().String() }

// run serves the master until ctx is done (a graceful stop: see
// master.Run), then stops the servers and closes the store.
func (sm *servedMaster) run(ctx context.Context) error {
	defer sm.close()
	gs := workerhub.NewServer(sm.m.Hub(), sm.tls)
	hs := &http.Server{Handler: sm.handler, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(sm.logger.Handler(), slog.LevelWarn)}
	var g errgroup.Group
	g.Go(func() error {
		if err := gs.Serve(sm.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve workers: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := hs.Serve(sm.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	sm.logger.Info("serving", "http", sm.HTTPAddr(), "workers", sm.WorkersAddr(), "tls", sm.tls != nil)
	err := sm.m.Run(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx) // past the timeout, open streams are cut by Close below
	_ = hs.Close()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }() // owned: Stop below ends it
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		gs.Stop()
		<-stopped
	}
	if serr := g.Wait(); err == nil {
		err = serr
	}
	return err
}

// close releases the resources; the listeners' errors are those of
// servers already stopped.
func (sm *servedMaster) close() {
	for _, ln := range []net.Listener{sm.httpLn, sm.grpcLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if sm.logs != nil {
		if err := sm.logs.Close(); err != nil {
			sm.logger.Error("close the log store", "err", err)
		}
		sm.logs = nil
	}
	if sm.st != nil {
		if err := sm.st.Close(); err != nil {
			sm.logger.Error("close the store", "err", err)
		}
		sm.st = nil
	}
}

// sharedDir is where logs, artifacts and poller mirrors live: the
// config's shared_dir, relative to the master's directory, or that
// directory.
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
