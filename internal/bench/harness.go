package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/master"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
)

// runningMaster is a master serving on loopback until stop.
type runningMaster struct {
	m       *master.Master
	cfgPath string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // Run's result, set before done closes

	stopOnce sync.Once
}

// configSource is a master config with n one-step builders b0…b(n-1).
// The step's command is never run by simulated workers; it only has to
// be valid. logMax lets a large log through whole, so ingest compresses
// and writes every byte rather than dropping the middle.
func configSource(title string, n int, step string, logMax int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "drover.master(title = %q, log_max_bytes = %d, worker_grace = \"10s\")\n", title, logMax)
	fmt.Fprintf(&b, "for i in range(%d):\n    drover.builder(name = \"b%%d\" %% i, steps = [drover.shell(%q)])\n", n, step)
	return b.String()
}

// defaultLogMax is the log size limit of the bench config: above any log a
// scenario writes.
const defaultLogMax = 1 << 30

// startMaster writes cfgSrc to dir/master.star, loads it as the master
// does, and runs a master on 127.0.0.1 (workersAddr "" for any port).
func startMaster(ctx context.Context, e *env, dir, cfgSrc, workersAddr string) (*runningMaster, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("master dir: %w", err)
	}
	path := filepath.Join(dir, "master.star")
	if err := os.WriteFile(path, []byte(cfgSrc), 0o644); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	if workersAddr == "" {
		workersAddr = "127.0.0.1:0"
	}
	m, err := master.New(ctx, master.Options{
		Dir: dir, Config: cfg, HTTPAddr: "127.0.0.1:0", WorkersAddr: workersAddr, Plaintext: true,
		Logger: e.mlog, Version: "bench",
	})
	if err != nil {
		return nil, fmt.Errorf("start master: %w", err)
	}
	// The master outlives a cancelled scenario context only until stop,
	// which every caller defers.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rm := &runningMaster{m: m, cfgPath: path, cancel: cancel, done: make(chan struct{})}
	go func() { // owned: stop cancels and waits for it
		defer close(rm.done)
		rm.err = m.Run(rctx)
	}()
	return rm, nil
}

// stop ends the master and waits for Run to return. It is idempotent.
func (rm *runningMaster) stop() error {
	rm.stopOnce.Do(rm.cancel)
	<-rm.done
	if rm.err != nil && !errors.Is(rm.err, context.Canceled) {
		return fmt.Errorf("master: %w", rm.err)
	}
	return nil
}

// waitHTTP waits until the master's HTTP port answers.
func (rm *runningMaster) waitHTTP(ctx context.Context) error {
	return waitHTTP(ctx, "http://"+rm.m.HTTPAddr()+"/api/v1/version")
}

func waitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", url, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// cred is how a simulated worker authenticates: its own token, or an
// enrollment token it trades for one on first connect.
type cred struct {
	Name   string `json:"name"`
	Token  string `json:"token,omitempty"`
	Enroll string `json:"enroll,omitempty"`
}

// enrollCreds makes one enrollment token in st and n credentials that
// enroll with it: the path a real worker takes, bcrypt and all.
func enrollCreds(ctx context.Context, st store.Store, prefix string, n int) ([]cred, error) {
	secret, t, err := tokens.New(drover.TokenEnroll, time.Now())
	if err != nil {
		return nil, err
	}
	t.Comment = "drover-bench"
	if err := st.AddToken(ctx, &t); err != nil {
		return nil, fmt.Errorf("add enrollment token: %w", err)
	}
	out := make([]cred, n)
	for i := range out {
		out[i] = cred{Name: fmt.Sprintf("%s-%05d", prefix, i), Enroll: secret}
	}
	return out, nil
}

// provisionCreds stores n worker tokens directly, sharing one secret
// hashed at bcrypt's minimum cost. Enrolling thousands of workers costs
// three bcrypt runs each at the default cost (about 0.2 s of CPU per
// worker here), which would measure bcrypt, not the master; the connect
// scenario measures that cost separately on a sample.
func provisionCreds(ctx context.Context, st store.Store, prefix string, n int) ([]cred, error) {
	sb := make([]byte, 32)
	if _, err := rand.Read(sb); err != nil {
		return nil, fmt.Errorf("make secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(sb)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("hash secret: %w", err)
	}
	idb := make([]byte, 4)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("make token id: %w", err)
	}
	now := time.Now().UTC()
	out := make([]cred, n)
	for i := range out {
		id := fmt.Sprintf("%x%06x", idb, i)
		name := fmt.Sprintf("%s-%05d", prefix, i)
		t := drover.Token{ID: id, Kind: drover.TokenWorker, Hash: string(hash), Worker: name, Comment: "drover-bench", Created: now, UsesLeft: -1}
		if err := st.AddToken(ctx, &t); err != nil {
			return nil, fmt.Errorf("add worker token %d: %w", i, err)
		}
		out[i] = cred{Name: name, Token: fmt.Sprintf("%s%s_%s_%s", tokens.Prefix, drover.TokenWorker, id, secret)}
	}
	return out, nil
}

// creds gives n workers credentials: real enrollment for small fleets,
// provisioned tokens for large ones.
func creds(ctx context.Context, st store.Store, prefix string, n int) ([]cred, error) {
	if n <= enrollLimit {
		return enrollCreds(ctx, st, prefix, n)
	}
	return provisionCreds(ctx, st, prefix, n)
}

// enrollLimit is the largest fleet that enrolls for real; see
// provisionCreds.
const enrollLimit = 10

// memSample is the Go runtime's view of this process's memory.
type memSample struct {
	HeapInuse  uint64
	Sys        uint64
	Goroutines int
}

// settledMem collects garbage and reads memory, so two samples differ by
// what is live.
func settledMem() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{HeapInuse: ms.HeapInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine()}
}

// memPeak samples HeapInuse every interval until stop, keeping the peak.
type memPeak struct {
	stop chan struct{}
	done chan struct{}
	peak uint64
}

func watchMem(interval time.Duration) *memPeak {
	p := &memPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() { // owned: end stops and waits for it
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			p.peak = max(p.peak, ms.HeapInuse)
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// end stops sampling and returns the peak HeapInuse.
func (p *memPeak) end() uint64 {
	close(p.stop)
	<-p.done
	return p.peak
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// waitIdle waits until the store has no pending request and no running
// build: every forced build has finished, as the master records it.
func waitIdle(ctx context.Context, st store.Store) error {
	for {
		pending, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending, Limit: 1})
		if err != nil {
			return fmt.Errorf("list pending: %w", err)
		}
		running, err := st.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 1})
		if err != nil {
			return fmt.Errorf("list running: %w", err)
		}
		if len(pending) == 0 && len(running) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for builds to finish: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// countResults counts finished builds by result.
func countResults(ctx context.Context, st store.Store, limit int) (map[drover.Result]int, error) {
	bs, err := st.ListBuilds(ctx, drover.BuildFilter{Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out := map[drover.Result]int{}
	for _, b := range bs {
		out[b.Result]++
	}
	return out, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
