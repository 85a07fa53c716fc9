// Package bench measures a real Drover master under load: the in-process
// master of internal/master on an SQLite store in a scratch directory, and
// a simulated fleet of workers that speak the real worker protocol over
// real loopback sockets (enroll or pre-provisioned tokens, Connect, answer
// RunCommand with output and Finished at once, without running processes).
//
// Each scenario (dispatch, throughput, fleet, logs, start, web, reconfig,
// worker) starts its own master in its own directory, is bounded in size
// by Sizes and in time by Options.Timeout, and stops by itself. Results
// are plain values that print as JSON or as a markdown table, each metric
// with the goal of the "Scale" issue it is judged against.
//
// Numbers measured in one process share its CPUs: the simulated workers of
// the dispatch, throughput, logs and reconfig scenarios take CPU from the
// master they measure, so the results are a lower bound on what the master
// does alone. The fleet scenario runs its workers in a child process
// (Options.FleetChild) so that the master's memory is the master's.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// Sizes bound every scenario. DefaultSizes are the sizes the goals speak
// of; TinySizes keep the tool's own test fast.
type Sizes struct {
	DispatchWorkers int // idle workers the dispatch scenario keeps connected
	DispatchForces  int // sequential forces measured

	ThroughputWorkers []int // fleet sizes, one run each
	ThroughputBuilds  int   // builds forced at once per run

	FleetWorkers []int // idle fleet sizes measured for memory and connect storm

	LogBytes           int64 // output of the single large build
	LogChunk           int   // bytes per Output message
	LogConcurrent      int   // concurrent builds of the second log run
	LogConcurrentBytes int64 // output of each of those

	StartPending int // pending requests in the store before the master starts

	WebBuilders int // builders in the config and the store
	WebBuilds   int // finished builds in the store, spread over the builders
	WebRenders  int // renders measured per page

	ReconfigBuilders int // builders in the reloaded config
	ReconfigRunning  int // builds held running while reloading
	ReconfigReloads  int // reloads measured

	WorkerLogBytes int64 // output of the real worker's step
}

// DefaultSizes are the sizes the goals are stated for.
func DefaultSizes() Sizes {
	return Sizes{
		DispatchWorkers: 10, DispatchForces: 500,
		ThroughputWorkers: []int{10, 100, 1000}, ThroughputBuilds: 2000,
		FleetWorkers: []int{1000, 10000},
		LogBytes:     200 << 20, LogChunk: 64 << 10, LogConcurrent: 50, LogConcurrentBytes: 4 << 20,
		StartPending: 25000,
		WebBuilders:  200, WebBuilds: 10000, WebRenders: 20,
		ReconfigBuilders: 1000, ReconfigRunning: 20, ReconfigReloads: 10,
		WorkerLogBytes: 200 << 20,
	}
}

// TinySizes run every scenario in about a second, to keep the tool working.
func TinySizes() Sizes {
	return Sizes{
		DispatchWorkers: 2, DispatchForces: 20,
		ThroughputWorkers: []int{5}, ThroughputBuilds: 20,
		FleetWorkers: []int{5},
		LogBytes:     1 << 20, LogChunk: 64 << 10, LogConcurrent: 3, LogConcurrentBytes: 256 << 10,
		StartPending: 50,
		WebBuilders:  3, WebBuilds: 20, WebRenders: 2,
		ReconfigBuilders: 5, ReconfigRunning: 2, ReconfigReloads: 2,
		WorkerLogBytes: 1 << 20,
	}
}

// Options configure a run.
type Options struct {
	// Dir is the scratch directory; each scenario uses a fresh
	// subdirectory. Required.
	Dir   string
	Sizes Sizes
	// Logger reports progress; nil discards it.
	Logger *slog.Logger
	// MasterLogger is the master's logger. nil formats the master's log
	// as text into io.Discard, so that logging costs what it costs in
	// production but prints nothing.
	MasterLogger *slog.Logger
	// CPUProfile, when set, is a directory where each scenario writes
	// SCENARIO.pprof.
	CPUProfile string
	// FleetChild is the command line of a process that runs a simulated
	// fleet (it must call RunFleetChild when FleetChildEnv is set). nil
	// runs the fleet scenario's workers in this process, and the master's
	// memory then includes theirs.
	FleetChild []string
	// DroverBin is a drover binary for the worker scenario; "" builds one
	// from ModuleDir with `go build`.
	DroverBin string
	// ModuleDir is the root of the drover module; "" searches upward from
	// the working directory.
	ModuleDir string
	// Timeout bounds each scenario; zero means 10 minutes.
	Timeout time.Duration
}

// Metric is one measured value, with the goal it is judged against.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Goal  string  `json:"goal,omitempty"`
	Met   *bool   `json:"met,omitempty"`
}

// Result is what one scenario measured.
type Result struct {
	Scenario string   `json:"scenario"`
	Metrics  []Metric `json:"metrics,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	// Skipped says why the scenario did not run (nothing else is set).
	Skipped string  `json:"skipped,omitempty"`
	Seconds float64 `json:"seconds"`
	Profile string  `json:"profile,omitempty"`
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit})
}

// atMost adds a metric whose goal is an upper bound.
func (r *Result) atMost(name string, v float64, unit string, limit float64) {
	ok := v <= limit
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit, Goal: fmt.Sprintf("≤ %g", limit), Met: &ok})
}

// atLeast adds a metric whose goal is a lower bound.
func (r *Result) atLeast(name string, v float64, unit string, limit float64) {
	ok := v >= limit
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit, Goal: fmt.Sprintf("≥ %g", limit), Met: &ok})
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// scenario measures one thing; it writes into res and returns an error
// only when it could not measure at all.
type scenario struct {
	name string
	desc string
	run  func(ctx context.Context, e *env, res *Result) error
}

// scenarios lists every scenario in the order "all" runs them.
func scenarios() []scenario {
	return []scenario{
		{"dispatch", "request submitted → RunCommand received by an idle worker", runDispatch},
		{"throughput", "trivial builds per second at several fleet sizes", runThroughput},
		{"fleet", "master memory per idle worker, connect storm after a master restart", runFleet},
		{"logs", "log ingest rate from one large and many concurrent builds", runLogs},
		{"start", "master start with many pending requests", runStart},
		{"web", "page render times with many builders and builds", runWeb},
		{"reconfig", "config reload with many builders while builds run", runReconfig},
		{"worker", "resident memory of a real drover worker process", runWorker},
	}
}

// Scenarios returns the names of the scenarios and what each measures.
func Scenarios() [][2]string {
	var out [][2]string
	for _, s := range scenarios() {
		out = append(out, [2]string{s.name, s.desc})
	}
	return out
}

// env is what a scenario gets: its directory and the run's options.
type env struct {
	opts   Options
	dir    string
	log    *slog.Logger
	mlog   *slog.Logger
	result *Result
}

// Run runs scenario name ("all" for every one) and returns what each
// measured. A scenario that fails is returned with its error in Skipped
// and the others still run; the error returned is only for bad options.
func Run(ctx context.Context, name string, o Options) ([]Result, error) {
	if o.Dir == "" {
		return nil, drover.Errorf(drover.Invalid, "bench: no scratch directory")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MasterLogger == nil {
		o.MasterLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	var todo []scenario
	for _, s := range scenarios() {
		if name == "all" || s.name == name {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		names := []string{"all"}
		for _, s := range scenarios() {
			names = append(names, s.name)
		}
		return nil, drover.Errorf(drover.Invalid, "unknown scenario %q (want one of %s)", name, strings.Join(names, ", "))
	}
	if err := raiseFileLimit(); err != nil {
		o.Logger.Warn("could not raise the open-file limit; large fleets may fail", "err", err)
	}
	var out []Result
	for _, s := range todo {
		if ctx.Err() != nil {
			break
		}
		out = append(out, runOne(ctx, s, o))
	}
	return out, ctx.Err()
}

func runOne(ctx context.Context, s scenario, o Options) Result {
	res := Result{Scenario: s.name}
	dir := filepath.Join(o.Dir, s.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		res.Skipped = fmt.Sprintf("scratch directory: %v", err)
		return res
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	e := &env{opts: o, dir: dir, log: o.Logger.With("scenario", s.name), mlog: o.MasterLogger, result: &res}
	if o.CPUProfile != "" {
		path := filepath.Join(o.CPUProfile, s.name+".pprof")
		stop, err := startProfile(path)
		if err != nil {
			e.log.Warn("no CPU profile", "err", err)
		} else {
			res.Profile = path
			defer stop()
		}
	}
	e.log.Info("scenario starting")
	start := time.Now()
	err := s.run(ctx, e, &res)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		if len(res.Metrics) == 0 {
			res.Skipped = err.Error()
		} else {
			res.note("stopped early: %v", err)
		}
		e.log.Warn("scenario failed", "err", err)
	}
	e.log.Info("scenario done", "seconds", res.Seconds)
	return res
}

func startProfile(path string) (stop func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("profile dir: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// WriteJSON writes results as indented JSON.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// WriteMarkdown writes results as one markdown table, then the notes.
func WriteMarkdown(w io.Writer, results []Result) error {
	var b strings.Builder
	b.WriteString("| scenario | metric | value | unit | goal | met |\n|---|---|---:|---|---|---|\n")
	var notes []string
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(&b, "| %s | (skipped) | | | | %s |\n", r.Scenario, escapeCell(r.Skipped))
			continue
		}
		for _, m := range r.Metrics {
			met := ""
			if m.Met != nil {
				met = map[bool]string{true: "yes", false: "**no**"}[*m.Met]
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Scenario, escapeCell(m.Name), formatValue(m.Value), m.Unit, m.Goal, met)
		}
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("- %s: %s", r.Scenario, n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func formatValue(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// percentile returns the q-quantile (0..1) of ds by nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)) + 0.5)
	i = min(max(i-1, 0), len(s)-1)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
