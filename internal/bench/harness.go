package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/mastertest"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
)

// runningMaster is a master serving on loopback until stop.
type runningMaster struct {
	*mastertest.Master
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

// startMaster runs a master from config source cfgSrc in dir on 127.0.0.1
// (workersAddr "" for any port). Its tokens are hashed at bcrypt's default
// cost, as a real master's are: the scenarios that enroll workers measure
// that too.
func startMaster(ctx context.Context, e *env, dir, cfgSrc, workersAddr string) (*runningMaster, error) {
	m, err := mastertest.Start(ctx, mastertest.Options{Dir: dir, Config: cfgSrc, WorkersAddr: workersAddr,
		Logger: e.mlog, Tokens: tokens.Hasher{Cost: bcrypt.DefaultCost}})
	if err != nil {
		return nil, fmt.Errorf("start master: %w", err)
	}
	return &runningMaster{m}, nil
}

// stop ends the master and waits for it. It is idempotent.
func (rm *runningMaster) stop() error { return rm.Stop() }

// waitHTTP waits until the master's HTTP port answers.
func (rm *runningMaster) waitHTTP(ctx context.Context) error {
	return waitHTTP(ctx, rm.URL+"/api/v1/version")
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
