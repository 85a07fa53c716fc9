package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/mastertest"
	"github.com/drover-ci/drover/internal/store"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// runWeb fills the store with builders' history, then times the server's
// rendering of the home page, a builder page and the waterfall.
func runWeb(ctx context.Context, e *env, res *Result) error {
	sz := e.opts.Sizes
	dir := filepath.Join(e.dir, "master")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("master dir: %w", err)
	}
	fillStart := time.Now()
	if err := fillHistory(ctx, filepath.Join(dir, "state.sqlite"), sz.WebBuilders, sz.WebBuilds); err != nil {
		return err
	}
	res.add(fmt.Sprintf("store fill, %d builds", sz.WebBuilds), time.Since(fillStart).Seconds(), "s")
	rm, err := startMaster(ctx, e, dir, configSource("bench web", sz.WebBuilders, "make test", defaultLogMax), "")
	if err != nil {
		return err
	}
	defer rm.stop()
	if err := rm.waitHTTP(ctx); err != nil {
		return err
	}
	base := rm.URL
	client := &http.Client{Timeout: 30 * time.Second}
	pages := []struct {
		name, path string
		goal       float64 // ms; 0: none
	}{
		{"home page", "/", 0},
		{"builder page", fmt.Sprintf("/builders/b%d", sz.WebBuilders/2), 0},
		{"waterfall", "/waterfall", 50},
	}
	for _, p := range pages {
		times, size, code, err := renderTimes(ctx, client, base+p.path, sz.WebRenders)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if code == http.StatusNotFound {
			res.note("%s (%s) does not exist in this tree: not measured", p.name, p.path)
			continue
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s: status %d", p.name, code)
		}
		p50 := ms(percentile(times, 0.5))
		if p.goal > 0 {
			res.atMost(p.name+" p50", p50, "ms", p.goal)
		} else {
			res.add(p.name+" p50", p50, "ms")
		}
		res.add(p.name+" max", ms(percentile(times, 1)), "ms")
		res.add(p.name+" size", float64(size)/1024, "KiB")
	}
	res.note("%d builders, %d finished builds (2 steps each) in SQLite; %d renders per page over loopback HTTP after one warm-up, body read in full", sz.WebBuilders, sz.WebBuilds, sz.WebRenders)
	return nil
}

// renderTimes GETs url n times after one warm-up.
func renderTimes(ctx context.Context, client *http.Client, url string, n int) (times []time.Duration, size int, code int, err error) {
	for i := range n + 1 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, 0, 0, err
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("get %s: %w", url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read %s: %w", url, err)
		}
		d := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			return nil, 0, resp.StatusCode, nil
		}
		if i > 0 {
			times = append(times, d)
		}
		size = len(body)
	}
	return times, size, http.StatusOK, nil
}

// fillHistory writes builds finished builds spread round-robin over
// builders b0…, each with two finished steps, into the SQLite store at
// dsn, as a site with a long history has.
func fillHistory(ctx context.Context, dsn string, builders, builds int) error {
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	const batch = 500
	start := time.Now().Add(-time.Duration(builds) * time.Minute)
	results := []drover.Result{drover.Success, drover.Success, drover.Success, drover.Failure, drover.Warnings, drover.Exception}
	for i := 0; i < builds; i += batch {
		reqs := make([]*drover.BuildRequest, 0, batch)
		for j := i; j < min(builds, i+batch); j++ {
			reqs = append(reqs, &drover.BuildRequest{
				Builder: fmt.Sprintf("b%d", j%builders), Reason: "bench history", Submitted: start.Add(time.Duration(j) * time.Minute),
				Source: drover.SourceStamp{Repository: "https://example.org/bench.git", Branch: "main", Revision: fmt.Sprintf("%040x", j/builders)},
			})
		}
		if err := st.AddRequests(ctx, reqs); err != nil {
			return fmt.Errorf("add requests: %w", err)
		}
		for k, r := range reqs {
			j := i + k
			t0 := r.Submitted.Add(time.Second)
			b := &drover.Build{Builder: r.Builder, Worker: fmt.Sprintf("worker-%02d", j%37), Reason: r.Reason, Started: t0}
			if err := st.ClaimRequest(ctx, r.ID, b); err != nil {
				return fmt.Errorf("claim request %d: %w", r.ID, err)
			}
			result := results[j%len(results)]
			exit := 0
			steps := []drover.Step{
				{BuildID: b.ID, Index: 0, Name: "compile", State: drover.StepFinished, Result: drover.Success, ExitCode: &exit, Started: t0, Finished: t0.Add(20 * time.Second)},
				{BuildID: b.ID, Index: 1, Name: "test", State: drover.StepFinished, Result: result, ExitCode: &exit, Started: t0.Add(20 * time.Second), Finished: t0.Add(50 * time.Second)},
			}
			if err := st.Builds("").AddSteps(ctx, steps); err != nil {
				return fmt.Errorf("add steps of build %d: %w", b.ID, err)
			}
			summary := ""
			if !result.IsGood() {
				summary = "test: " + string(result)
			}
			if err := st.Builds("").FinishBuild(ctx, b.ID, result, summary, t0.Add(50*time.Second), false); err != nil {
				return fmt.Errorf("finish build %d: %w", b.ID, err)
			}
		}
	}
	return nil
}

// runReconfig reloads a config of many builders while builds run, and
// checks that none of them was disturbed.
func runReconfig(ctx context.Context, e *env, res *Result) error {
	sz := e.opts.Sizes
	n := sz.ReconfigBuilders
	srcs := [2]string{
		configSource("bench reconfig A", n, "make test", defaultLogMax),
		configSource("bench reconfig B", n, "make check", defaultLogMax),
	}
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, "master"), srcs[0], "")
	if err != nil {
		return err
	}
	defer rm.stop()
	st := rm.Store
	running := sz.ReconfigRunning
	cs, err := mastertest.Creds(ctx, st, "reconfig", running)
	if err != nil {
		return err
	}
	var started, finished atomic.Int64
	allStarted, allDone := make(chan struct{}), make(chan struct{})
	f := mastertest.StartFleet(ctx, rm.WorkersAddr, cs, mastertest.Behavior{
		Hold: true,
		OnRun: func(string, *pb.RunCommand, time.Time) {
			if started.Add(1) == int64(running) {
				close(allStarted)
			}
		},
		OnDone: func(string, string) {
			if finished.Add(1) == int64(running) {
				close(allDone)
			}
		},
	}, e.log)
	defer f.Close()
	defer rm.stop() // before the fleet goes: a build whose worker vanished waits out its grace
	if err := f.WaitConnected(ctx, len(cs)); err != nil {
		return err
	}
	if err := forceMany(ctx, rm, running, func(i int) string { return fmt.Sprintf("b%d", i%n) }); err != nil {
		return err
	}
	select {
	case <-allStarted:
	case <-ctx.Done():
		return fmt.Errorf("%d of %d builds started: %w", started.Load(), running, ctx.Err())
	}
	var times []time.Duration
	for i := range sz.ReconfigReloads {
		// Alternate two configs so that every reload really changes it.
		if err := os.WriteFile(rm.ConfigPath, []byte(srcs[(i+1)%2]), 0o644); err != nil {
			return fmt.Errorf("write config: %w", err)
		}
		start := time.Now()
		if err := rm.Reload(ctx); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		times = append(times, time.Since(start))
	}
	f.ReleaseHeld()
	select {
	case <-allDone:
	case <-ctx.Done():
		return fmt.Errorf("%d of %d held builds finished: %w", finished.Load(), running, ctx.Err())
	}
	if err := waitIdle(ctx, st); err != nil {
		return err
	}
	counts, err := countResults(ctx, st, running)
	if err != nil {
		return err
	}
	res.add(fmt.Sprintf("reload p50, %d builders", n), ms(percentile(times, 0.5)), "ms")
	res.add(fmt.Sprintf("reload max, %d builders", n), ms(percentile(times, 1)), "ms")
	res.atMost("running builds disturbed by reloads", float64(running-counts[drover.Success]), "builds", 0)
	res.note("%d reloads (load, validate, swap) of a %d-builder config while %d builds held their commands", len(times), n, running)
	return nil
}

// runWorker measures a real `drover worker run` process's resident memory,
// idle and while its step prints a large log to the in-process master.
func runWorker(ctx context.Context, e *env, res *Result) error {
	bin := e.opts.DroverBin
	if bin == "" {
		var err error
		if bin, err = buildDrover(ctx, e); err != nil {
			return err
		}
	}
	n := e.opts.Sizes.WorkerLogBytes
	step := fmt.Sprintf("yes 'drover bench: a line of build output, much like a compiler prints' | head -c %d", n)
	rm, err := startMaster(ctx, e, filepath.Join(e.dir, "master"), configSource("bench worker", 1, step, defaultLogMax), "")
	if err != nil {
		return err
	}
	defer rm.stop()
	st := rm.Store
	cs, err := mastertest.EnrollCreds(ctx, st, "real", 1)
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(e.dir, "worker.log"))
	if err != nil {
		return fmt.Errorf("worker log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "worker", "run", "--master", rm.WorkersAddr, "--token", cs[0].Enroll,
		"--name", cs[0].Name, "--dir", filepath.Join(e.dir, "worker"), "--plaintext")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // owned: the deferred stop below waits for it
	defer func() {
		_ = terminate(cmd.Process)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	if err := waitWorker(ctx, st, cs[0].Name, exited); err != nil {
		return fmt.Errorf("%w (worker log: %s)", err, tail(filepath.Join(e.dir, "worker.log")))
	}
	time.Sleep(2 * time.Second) // past start-up: fact probes, first availability check
	var idle, anon, file uint64
	for range 5 {
		rss, err := readRSS(cmd.Process.Pid)
		if err != nil {
			return err
		}
		idle = max(idle, rss)
		if a, err := readStatus(cmd.Process.Pid, "RssAnon"); err == nil {
			anon = max(anon, a)
		}
		if f, err := readStatus(cmd.Process.Pid, "RssFile"); err == nil {
			file = max(file, f)
		}
		time.Sleep(200 * time.Millisecond)
	}
	res.atMost("idle worker RSS", mib(idle), "MiB", 15)
	res.add("idle worker RssAnon (its own memory)", mib(anon), "MiB")
	res.add("idle worker RssFile (pages of the drover binary, shared)", mib(file), "MiB")

	req := &drover.BuildRequest{Builder: "b0", Reason: "bench"}
	start := time.Now()
	if err := rm.API().Force(ctx, req); err != nil {
		return fmt.Errorf("force: %w", err)
	}
	var peak uint64
	for {
		if rss, err := readRSS(cmd.Process.Pid); err == nil {
			peak = max(peak, rss)
		}
		r, err := st.GetRequest(ctx, req.ID)
		if err != nil {
			return fmt.Errorf("request: %w", err)
		}
		if r.State == drover.RequestFinished || r.State == drover.RequestCancelled {
			if r.Result != drover.Success {
				return fmt.Errorf("build ended %s (worker log: %s)", r.Result, tail(filepath.Join(e.dir, "worker.log")))
			}
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the build: %w", ctx.Err())
		case err := <-exited:
			return fmt.Errorf("worker exited during the build: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	res.add(fmt.Sprintf("worker RSS peak while streaming %d MiB", n>>20), mib(peak), "MiB")
	res.add("end-to-end log rate, real worker", float64(n)/1e6/elapsed.Seconds(), "MB/s")
	res.note("VmRSS of the `drover worker run` process itself (not its step's processes), sampled every 20 ms; rate from Force to the request finished")
	return nil
}

// waitWorker waits until the store shows worker name connected.
func waitWorker(ctx context.Context, st store.Store, name string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if w, err := st.GetWorker(ctx, name); err == nil && w.Connected {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker %s did not connect: %w", name, ctx.Err())
		case err := <-exited:
			return fmt.Errorf("worker exited before connecting: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// buildDrover builds cmd/drover into the scenario's directory.
func buildDrover(ctx context.Context, e *env) (string, error) {
	mod := e.opts.ModuleDir
	if mod == "" {
		var err error
		if mod, err = findModule(); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(e.dir, "drover")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/drover")
	cmd.Dir = mod
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/drover: %w\n%s", err, out)
	}
	return bin, nil
}

// findModule finds the drover module's root above the working directory.
func findModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/drover-ci/drover\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", drover.Errorf(drover.NotFound, "no drover module above the working directory; give -module or -drover")
		}
		dir = parent
	}
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}
