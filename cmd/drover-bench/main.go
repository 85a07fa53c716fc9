// Command drover-bench measures a real Drover master: dispatch latency,
// build throughput, memory per connected worker, connect storms, log
// ingest, start with a long queue, page renders, config reloads, and a
// real worker process's memory. It runs the master in-process on an
// SQLite store in a temporary directory and a simulated fleet speaking
// the real worker protocol over loopback sockets, then prints JSON and a
// markdown table. See docs/benchmarks.md.
//
//	drover-bench all
//	drover-bench dispatch -forces 1000
//	drover-bench fleet -fleet 1000,10000 -cpuprofile /tmp/prof
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-ci/drover/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(bench.FleetChildEnv) == "1" {
		if err := bench.RunFleetChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "drover-bench fleet child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "drover-bench:", err)
		os.Exit(2)
	}
}

// run parses args (SCENARIO [flags]), runs the scenario and prints its
// results.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sz := bench.DefaultSizes()
	var (
		dir, cpuprofile, droverBin, module, jsonOut, mdOut string
		tiny, verbose, inProcess                           bool
		timeout                                            time.Duration
		throughputWorkers, fleetWorkers                    intList
	)
	fs.StringVar(&dir, "dir", "", "scratch directory (default: a new temporary directory, removed afterwards)")
	fs.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile per scenario, DIR/SCENARIO.pprof")
	fs.StringVar(&droverBin, "drover", "", "drover binary for the worker scenario (default: go build ./cmd/drover)")
	fs.StringVar(&module, "module", "", "drover module root for building the binary (default: found above the working directory)")
	fs.StringVar(&jsonOut, "json", "", "also write the JSON results to this file")
	fs.StringVar(&mdOut, "markdown", "", "also write the markdown table to this file")
	fs.BoolVar(&tiny, "tiny", false, "run every scenario at a tiny size (a smoke test)")
	fs.BoolVar(&verbose, "v", false, "log progress to stderr")
	fs.BoolVar(&inProcess, "in-process-fleet", false, "run the fleet scenario's workers in this process (their memory then counts as the master's)")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "bound on each scenario")
	fs.IntVar(&sz.DispatchForces, "forces", sz.DispatchForces, "dispatch: sequential forces")
	fs.Var(&throughputWorkers, "workers", "throughput: fleet sizes, comma-separated (default 10,100,1000)")
	fs.IntVar(&sz.ThroughputBuilds, "builds", sz.ThroughputBuilds, "throughput: builds forced at once per fleet size")
	fs.Var(&fleetWorkers, "fleet", "fleet: idle fleet sizes, comma-separated (default 1000,10000)")
	fs.Int64Var(&sz.LogBytes, "log-bytes", sz.LogBytes, "logs: bytes of the single large log")
	fs.IntVar(&sz.LogConcurrent, "log-builds", sz.LogConcurrent, "logs: concurrent builds")
	fs.IntVar(&sz.StartPending, "pending", sz.StartPending, "start: pending requests in the store")
	fs.IntVar(&sz.WebBuilders, "web-builders", sz.WebBuilders, "web: builders")
	fs.IntVar(&sz.WebBuilds, "web-builds", sz.WebBuilds, "web: finished builds in the store")
	fs.IntVar(&sz.ReconfigBuilders, "reconfig-builders", sz.ReconfigBuilders, "reconfig: builders in the config")
	fs.Int64Var(&sz.WorkerLogBytes, "worker-log-bytes", sz.WorkerLogBytes, "worker: bytes the real worker's step prints")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: drover-bench SCENARIO [flags]\n\nscenarios:")
		fmt.Fprintf(stderr, "  %-11s every scenario below, in order\n", "all")
		for _, s := range bench.Scenarios() {
			fmt.Fprintf(stderr, "  %-11s %s\n", s[0], s[1])
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return errors.New("no scenario given")
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if tiny {
		sz = bench.TinySizes()
	}
	if throughputWorkers != nil {
		sz.ThroughputWorkers = throughputWorkers
	}
	if fleetWorkers != nil {
		sz.FleetWorkers = fleetWorkers
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "drover-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	o := bench.Options{
		Dir: dir, Sizes: sz, Timeout: timeout, CPUProfile: cpuprofile, DroverBin: droverBin, ModuleDir: module,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if !inProcess {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program for the fleet child: %w", err)
		}
		o.FleetChild = []string{exe}
	}
	results, err := bench.Run(ctx, name, o)
	if results == nil && err != nil {
		return err
	}
	if werr := bench.WriteJSON(stdout, results); werr != nil {
		return werr
	}
	fmt.Fprintln(stdout)
	if werr := bench.WriteMarkdown(stdout, results); werr != nil {
		return werr
	}
	for path, write := range map[string]func(io.Writer, []bench.Result) error{jsonOut: bench.WriteJSON, mdOut: bench.WriteMarkdown} {
		if path == "" {
			continue
		}
		if werr := writeFile(path, results, write); werr != nil {
			return werr
		}
	}
	return err
}

func writeFile(path string, results []bench.Result, write func(io.Writer, []bench.Result) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f, results); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// intList is a comma-separated list of positive integers flag.
type intList []int

func (l *intList) String() string {
	var s []string
	for _, n := range *l {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer", f)
		}
		*l = append(*l, n)
	}
	return nil
}
