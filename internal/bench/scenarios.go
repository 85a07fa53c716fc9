package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/mastertest"
	"github.com/drover-ci/drover/internal/store"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// runDispatch forces builds one at a time while idle workers wait, and
// times each from Force to the RunCommand arriving at a worker.
func runDispatch(ctx context.Context, e *env, res *Result) error {
	sz := e.opts.Sizes
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, "master"), configSource("bench dispatch", 1, "true", defaultLogMax), "")
	if err != nil {
		return err
	}
	defer rm.stop()
	st := rm.Store
	cs, err := mastertest.Creds(ctx, st, "dispatch", sz.DispatchWorkers)
	if err != nil {
		return err
	}
	runs := make(chan time.Time, 1)
	done := make(chan struct{}, 1)
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{
		OnRun:  func(_ string, _ *pb.RunCommand, at time.Time) { runs <- at },
		OnDone: func(string, string) { done <- struct{}{} },
	}, e.log)
	defer f.Close()
	defer rm.stop() // before the fleet goes: a build whose worker vanished waits out its grace
	if err := f.WaitConnected(ctx, len(cs)); err != nil {
		return err
	}
	const warmup = 10
	var lat []time.Duration
	for i := range sz.DispatchForces + warmup {
		req := &drover.BuildRequest{Builder: "b0", Reason: "bench"}
		start := time.Now()
		if err := rm.API().Force(ctx, req); err != nil {
			return fmt.Errorf("force: %w", err)
		}
		var at time.Time
		select {
		case at = <-runs:
		case <-ctx.Done():
			return fmt.Errorf("wait for dispatch %d: %w", i, ctx.Err())
		}
		if i >= warmup {
			lat = append(lat, at.Sub(start))
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("wait for build %d: %w", i, ctx.Err())
		}
	}
	if err := waitIdle(ctx, st); err != nil {
		return err
	}
	res.atMost("p50", ms(percentile(lat, 0.50)), "ms", 5)
	res.atMost("p99", ms(percentile(lat, 0.99)), "ms", 10)
	res.add("max", ms(percentile(lat, 1)), "ms")
	res.note("%d sequential forces (after %d warm-up) via master.Force with %d idle workers, which enrolled with a real enrollment token", len(lat), warmup, len(cs))
	return nil
}

// runThroughput forces many trivial builds at once and measures how fast
// the master gets through them, for each fleet size.
func runThroughput(ctx context.Context, e *env, res *Result) error {
	sz := e.opts.Sizes
	for _, n := range sz.ThroughputWorkers {
		rate, err := throughputOnce(ctx, e, n, sz.ThroughputBuilds)
		if err != nil {
			return fmt.Errorf("%d workers: %w", n, err)
		}
		res.atLeast(fmt.Sprintf("builds/s, %d workers", n), rate, "builds/s", 1000)
	}
	res.note("%d one-step builds forced at once (8 concurrent Force calls) per fleet size; timed from the first Force until the store shows every build finished", sz.ThroughputBuilds)
	return nil
}

func throughputOnce(ctx context.Context, e *env, workers, builds int) (float64, error) {
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, fmt.Sprintf("master-%d", workers)), configSource("bench throughput", 1, "true", defaultLogMax), "")
	if err != nil {
		return 0, err
	}
	defer rm.stop()
	st := rm.Store
	cs, err := mastertest.Creds(ctx, st, "tp", workers)
	if err != nil {
		return 0, err
	}
	var finished atomic.Int64
	allDone := make(chan struct{})
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{
		OnDone: func(string, string) {
			if finished.Add(1) == int64(builds) {
				close(allDone)
			}
		},
	}, e.log)
	defer f.Close()
	defer rm.stop() // before the fleet goes: a build whose worker vanished waits out its grace
	if err := f.WaitConnected(ctx, len(cs)); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := forceMany(ctx, rm, builds, func(int) string { return "b0" }); err != nil {
		return 0, err
	}
	select {
	case <-allDone:
	case <-ctx.Done():
		return 0, fmt.Errorf("%d of %d builds finished: %w", finished.Load(), builds, ctx.Err())
	}
	if err := waitIdle(ctx, st); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	e.log.Info("throughput", "workers", workers, "builds", builds, "elapsed", elapsed)
	return float64(builds) / elapsed.Seconds(), nil
}

// forceMany forces n requests from a few goroutines at once.
func forceMany(ctx context.Context, rm *runningMaster, n int, builder func(i int) string) error {
	const callers = 8
	var next atomic.Int64
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := rm.API().Force(ctx, &drover.BuildRequest{Builder: builder(i), Reason: "bench"}); err != nil {
					errs <- fmt.Errorf("force %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// runFleet measures the master's memory per connected idle worker and the
// time for the whole fleet to reconnect after a master restart.
func runFleet(ctx context.Context, e *env, res *Result) error {
	for _, n := range e.opts.Sizes.FleetWorkers {
		if err := fleetOnce(ctx, e, res, n); err != nil {
			return fmt.Errorf("%d workers: %w", n, err)
		}
	}
	if e.opts.FleetChild == nil {
		res.note("workers ran in the master's process: memory includes their side of each connection")
	} else {
		res.note("workers ran in a child process; memory is the master process's alone (Go heap in use after GC)")
	}
	res.note("workers use tokens stored at bcrypt's minimum cost; 'connect, default-cost token' below measures one real-cost hello to show what a real fleet's storm costs")
	return authCost(ctx, e, res)
}

// connector is a running fleet, in this process or a child.
type connector interface {
	WaitConnected(ctx context.Context, n int) error
	Connected() int
}

func fleetOnce(ctx context.Context, e *env, res *Result, n int) error {
	dir := filepath.Join(e.dir, fmt.Sprintf("master-%d", n))
	src := configSource("bench fleet", 1, "true", defaultLogMax)
	rm, err := startMaster(ctx, e, dir, src, "")
	if err != nil {
		return err
	}
	defer func() { rm.stop() }()
	addr := rm.WorkersAddr
	cs, err := mastertest.ProvisionCreds(ctx, rm.Store, "fleet", n)
	if err != nil {
		return err
	}
	if err := rm.waitHTTP(ctx); err != nil {
		return err
	}
	before := settledMem()
	var fl connector
	start := time.Now()
	if argv := e.opts.FleetChild; argv != nil {
		c, err := startChildFleet(ctx, argv, addr, cs)
		if err != nil {
			return err
		}
		defer c.Close()
		fl = c
	} else {
		f := mastertest.StartFleet(ctx, addr, cs, mastertest.Behavior{}, e.log)
		defer f.Close()
		fl = f
	}
	if err := fl.WaitConnected(ctx, n); err != nil {
		return err
	}
	connect := time.Since(start)
	time.Sleep(time.Second) // let connection setup garbage and buffers settle
	after := settledMem()
	perWorker := float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse)) / float64(n) / 1024
	sysPer := float64(after.Sys-min(before.Sys, after.Sys)) / float64(n) / 1024
	res.atMost(fmt.Sprintf("heap in use per idle worker, %d workers", n), perWorker, "KiB", 30)
	res.add(fmt.Sprintf("Sys per idle worker, %d workers", n), sysPer, "KiB")
	res.add(fmt.Sprintf("goroutines per idle worker, %d workers", n), float64(after.Goroutines-before.Goroutines)/float64(n), "")
	res.add(fmt.Sprintf("first connect of %d workers", n), connect.Seconds(), "s")
	if c, ok := fl.(*childFleet); ok {
		if rss, err := c.rss(); err == nil {
			res.add(fmt.Sprintf("client side RSS per worker (child), %d workers", n), float64(rss)/float64(n)/1024, "KiB")
		}
	}

	// Restart the master on the same port and directory; the fleet's
	// streams break and every worker dials again with its backoff.
	if err := rm.stop(); err != nil {
		return err
	}
	downAt := time.Now()
	rm, err = startMaster(ctx, e, dir, src, addr)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	restarted := time.Now()
	if err := fl.WaitConnected(ctx, n); err != nil {
		return fmt.Errorf("after restart: %w", err)
	}
	res.add(fmt.Sprintf("connect storm after restart, %d workers", n), time.Since(restarted).Seconds(), "s")
	res.note("%d workers: master down for %s during the restart; the storm includes the agent's jittered backoff (first retry uniform in [0, 1 s), then [0, 2 s), …)", n, restarted.Sub(downAt).Round(time.Millisecond))
	return nil
}

// authCost times hellos with a token hashed at bcrypt's default cost, as
// every real worker's is, to show what authentication adds to a storm.
func authCost(ctx context.Context, e *env, res *Result) error {
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, "master-auth"), configSource("bench auth", 1, "true", defaultLogMax), "")
	if err != nil {
		return err
	}
	defer rm.stop()
	cs, err := mastertest.EnrollCreds(ctx, rm.Store, "auth", 1)
	if err != nil {
		return err
	}
	// Enroll once, then time reconnects with the real-cost worker token.
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{}, e.log)
	if err := f.WaitConnected(ctx, 1); err != nil {
		f.Close()
		return err
	}
	f.Close() // after Close, f.creds holds the token enrolling gave
	const tries = 5
	var total time.Duration
	for range tries {
		g := mastertest.StartFleet(ctx, rm.WorkersAddr, f.Creds(), mastertest.Behavior{}, e.log)
		start := time.Now()
		err := g.WaitConnected(ctx, 1)
		total += time.Since(start)
		g.Close()
		if err != nil {
			return err
		}
	}
	per := total / tries
	res.add("connect, default-cost token (one worker)", ms(per), "ms")
	res.note("at %s per hello, 10,000 real workers take about %s of both cores' time to reconnect", per.Round(time.Millisecond), (per * 10000 / 2).Round(time.Second))
	return nil
}

// runLogs streams one large log, then many concurrent ones, and measures
// the ingest rate and the master's peak heap while it lasts.
func runLogs(ctx context.Context, e *env, res *Result) error {
	sz := e.opts.Sizes
	for _, c := range []struct {
		builds int
		bytes  int64
	}{{1, sz.LogBytes}, {sz.LogConcurrent, sz.LogConcurrentBytes}} {
		rate, peak, base, err := logsOnce(ctx, e, c.builds, c.bytes, sz.LogChunk)
		if err != nil {
			return fmt.Errorf("%d builds: %w", c.builds, err)
		}
		res.atLeast(fmt.Sprintf("ingest, %d build(s) × %d MiB", c.builds, c.bytes>>20), rate, "MB/s", 200)
		res.add(fmt.Sprintf("peak heap in use, %d build(s)", c.builds), mib(peak), "MiB")
		res.add(fmt.Sprintf("heap in use before, %d build(s)", c.builds), mib(base), "MiB")
	}
	res.note("output sent in %d KiB chunks as fast as the stream takes them; timed from the first RunCommand to the master's acknowledgement of the last Finished; MB = 10^6 bytes", sz.LogChunk>>10)
	lat, err := tailLatency(ctx, e, 100, 20*time.Millisecond)
	if err != nil {
		return fmt.Errorf("live tail: %w", err)
	}
	res.add("live-tail latency p50, worker → browser stream", ms(percentile(lat, 0.50)), "ms")
	res.add("live-tail latency p99, worker → browser stream", ms(percentile(lat, 0.99)), "ms")
	res.note("live tail: a worker prints %d timestamped lines 20 ms apart; a client of GET /api/v1/logs/ID/stream (the build page's server-sent events) notes when each arrives; the master stores and passes on output every %s", len(lat), "200 ms")
	return nil
}

// tailLatency runs one build whose worker prints n timestamped lines
// every each, follows its log as the build page does, and returns how long
// each line took from the worker to the follower.
func tailLatency(ctx context.Context, e *env, n int, each time.Duration) ([]time.Duration, error) {
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, "master-tail"), configSource("bench tail", 1, "true", defaultLogMax), "")
	if err != nil {
		return nil, err
	}
	defer rm.stop()
	st := rm.Store
	cs, err := mastertest.Creds(ctx, st, "tail", 1)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{Ticks: n, TickEvery: each,
		OnDone: func(string, string) { close(done) }}, e.log)
	defer f.Close()
	defer rm.stop()
	if err := f.WaitConnected(ctx, len(cs)); err != nil {
		return nil, err
	}
	req := &drover.BuildRequest{Builder: "b0", Reason: "bench tail"}
	if err := rm.API().Force(ctx, req); err != nil {
		return nil, err
	}
	// The step's log row exists once the command is sent.
	var logID int64
	for logID == 0 {
		bs, err := st.ListBuilds(ctx, drover.BuildFilter{RequestID: req.ID})
		if err == nil && len(bs) > 0 {
			if ls, err := st.ListLogs(ctx, bs[0].ID); err == nil && len(ls) > 0 {
				logID = ls[0].ID
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	url := fmt.Sprintf("http://%s/api/v1/logs/%d/stream", rm.HTTPAddr, logID)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var lat []time.Duration
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var partial string
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var text string
		if json.Unmarshal([]byte(data), &text) != nil {
			continue // the end event's object
		}
		now := time.Now()
		partial += text
		for {
			line, rest, ok := strings.Cut(partial, "\n")
			if !ok {
				break
			}
			partial = rest
			if ns, ok := strings.CutPrefix(line, "tick "); ok {
				if v, err := strconv.ParseInt(ns, 10, 64); err == nil {
					lat = append(lat, now.Sub(time.Unix(0, v)))
				}
			}
		}
		if len(lat) == n {
			break
		}
	}
	if len(lat) < n {
		return nil, fmt.Errorf("follower saw %d of %d lines", len(lat), n)
	}
	<-done
	return lat, nil
}

func logsOnce(ctx context.Context, e *env, builds int, bytes int64, chunk int) (rate float64, peak, base uint64, err error) {
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, fmt.Sprintf("master-%d", builds)), configSource("bench logs", 1, "true", defaultLogMax), "")
	if err != nil {
		return 0, 0, 0, err
	}
	defer rm.stop()
	st := rm.Store
	cs, err := mastertest.Creds(ctx, st, "logs", builds)
	if err != nil {
		return 0, 0, 0, err
	}
	var first sync.Once
	var startAt time.Time
	var finished atomic.Int64
	allDone := make(chan struct{})
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{
		OutputBytes: bytes, Chunk: chunk,
		OnRun: func(_ string, _ *pb.RunCommand, at time.Time) { first.Do(func() { startAt = at }) },
		OnDone: func(string, string) {
			if finished.Add(1) == int64(builds) {
				close(allDone)
			}
		},
	}, e.log)
	defer f.Close()
	defer rm.stop() // before the fleet goes: a build whose worker vanished waits out its grace
	if err := f.WaitConnected(ctx, len(cs)); err != nil {
		return 0, 0, 0, err
	}
	base = settledMem().HeapInuse
	mp := watchMem(50 * time.Millisecond)
	if err := forceMany(ctx, rm, builds, func(int) string { return "b0" }); err != nil {
		mp.end()
		return 0, 0, 0, err
	}
	select {
	case <-allDone:
	case <-ctx.Done():
		mp.end()
		return 0, 0, 0, fmt.Errorf("%d of %d builds finished: %w", finished.Load(), builds, ctx.Err())
	}
	elapsed := time.Since(startAt)
	peak = mp.end()
	if err := waitIdle(ctx, st); err != nil {
		return 0, 0, 0, err
	}
	counts, err := countResults(ctx, st, builds)
	if err != nil {
		return 0, 0, 0, err
	}
	if counts[drover.Success] != builds {
		return 0, 0, 0, fmt.Errorf("builds ended %v, want %d successes", counts, builds)
	}
	return float64(bytes) * float64(builds) / 1e6 / elapsed.Seconds(), peak, base, nil
}

// runStart fills the store with pending requests, then times a master
// start: until its API answers, and until its first build is dispatched.
func runStart(ctx context.Context, e *env, res *Result) error {
	n := e.opts.Sizes.StartPending
	dir := filepath.Join(e.dir, "master")
	src := configSource("bench start", 1, "true", defaultLogMax)
	// A first master creates the store and the worker's token, and stops.
	rm, err := startMaster(ctx, e, dir, src, "")
	if err != nil {
		return err
	}
	cs, err := mastertest.ProvisionCreds(ctx, rm.Store, "start", 1)
	if err == nil {
		err = fillPending(ctx, rm.Store, n)
	}
	if serr := rm.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}

	firstRun := make(chan time.Time, 1)
	start := time.Now()
	rm, err = startMaster(ctx, e, dir, src, "")
	if err != nil {
		return err
	}
	defer rm.stop()
	// The worker dials as soon as the port is bound, as a waiting fleet
	// would: the first build measures the whole start.
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{
		OnRun: func(_ string, _ *pb.RunCommand, at time.Time) {
			select {
			case firstRun <- at:
			default:
			}
		},
	}, e.log)
	defer f.Close()
	defer rm.stop() // before the fleet goes: a build whose worker vanished waits out its grace
	if err := rm.waitHTTP(ctx); err != nil {
		return err
	}
	ready := time.Since(start)
	var first time.Time
	select {
	case first = <-firstRun:
	case <-ctx.Done():
		return fmt.Errorf("wait for the first build: %w", ctx.Err())
	}
	res.atMost(fmt.Sprintf("start to API ready, %d pending", n), ready.Seconds(), "s", 5)
	res.atMost(fmt.Sprintf("start to first build dispatched, %d pending", n), first.Sub(start).Seconds(), "s", 5)
	res.note("from master.New (store open, migrations, recovery) with %d pending requests in SQLite", n)
	return nil
}

// fillPending adds n pending requests in batches, as a busy site's queue.
func fillPending(ctx context.Context, st store.Store, n int) error {
	const batch = 1000
	base := time.Now().Add(-time.Hour)
	for i := 0; i < n; i += batch {
		reqs := make([]*drover.BuildRequest, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			reqs = append(reqs, &drover.BuildRequest{
				Builder: "b0", Reason: "bench backlog", Submitted: base.Add(time.Duration(j) * time.Millisecond),
				Source: drover.SourceStamp{Repository: "https://example.org/bench.git", Branch: "main", Revision: fmt.Sprintf("%040x", j)},
			})
		}
		if err := st.AddRequests(ctx, reqs); err != nil {
			return fmt.Errorf("add pending requests: %w", err)
		}
	}
	return nil
}
