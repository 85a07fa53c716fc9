package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the fleet child process.
func TestMain(m *testing.M) {
	if os.Getenv(FleetChildEnv) == "1" {
		if err := RunFleetChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Every scenario runs at a tiny size and measures what it says it does,
// so the tool keeps working as the master changes.
func TestScenariosTiny(t *testing.T) {
	want := map[string][]string{
		"dispatch":   {"p50", "p99"},
		"throughput": {"builds/s, 5 workers"},
		"fleet":      {"heap in use per idle worker, 5 workers", "connect storm after restart, 5 workers", "connect, default-cost token (one worker)"},
		"logs":       {"ingest, 1 build(s) × 1 MiB", "ingest, 3 build(s) × 0 MiB"},
		"start":      {"start to API ready, 50 pending", "start to first build dispatched, 50 pending"},
		"web":        {"home page p50", "builder page p50"},
		"reconfig":   {"reload p50, 5 builders", "running builds disturbed by reloads"},
		"worker":     {"idle worker RSS", "end-to-end log rate, real worker"},
	}
	for _, s := range scenarios() {
		t.Run(s.name, func(t *testing.T) {
			if s.name == "worker" && testing.Short() {
				t.Skip("builds and runs the drover binary")
			}
			if s.name == "fleet" {
				t.Parallel() // the restart waits out the agent's backoff
			}
			o := Options{Dir: t.TempDir(), Sizes: TinySizes(), Timeout: time.Minute, FleetChild: []string{os.Args[0]}}
			results, err := Run(context.Background(), s.name, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != 1 {
				t.Fatalf("got %d results", len(results))
			}
			r := results[0]
			if r.Skipped != "" {
				t.Fatalf("skipped: %s", r.Skipped)
			}
			got := map[string]Metric{}
			for _, m := range r.Metrics {
				got[m.Name] = m
				if m.Value < 0 {
					t.Errorf("%s = %v", m.Name, m.Value)
				}
			}
			for _, name := range want[s.name] {
				if _, ok := got[name]; !ok {
					t.Errorf("no metric %q in %+v", name, r.Metrics)
				}
			}
			if r.Scenario == "reconfig" {
				if m := got["running builds disturbed by reloads"]; m.Value != 0 {
					t.Errorf("reloads disturbed %v running builds", m.Value)
				}
			}
		})
	}
}

func TestUnknownScenario(t *testing.T) {
	_, err := Run(context.Background(), "nope", Options{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "unknown scenario") {
		t.Fatalf("err = %v", err)
	}
}

func TestOutput(t *testing.T) {
	yes, no := true, false
	results := []Result{
		{Scenario: "dispatch", Metrics: []Metric{{Name: "p50", Value: 1.234, Unit: "ms", Goal: "≤ 5", Met: &yes}, {Name: "p99", Value: 12, Unit: "ms", Goal: "≤ 10", Met: &no}}, Notes: []string{"a note"}},
		{Scenario: "web", Skipped: "no | pipes"},
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, results); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| dispatch | p50 | 1.23 | ms | ≤ 5 | yes |", "| dispatch | p99 | 12 | ms | ≤ 10 | **no** |", `no \| pipes`, "- dispatch: a note"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	var back []Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back) != 2 || *back[0].Metrics[1].Met {
		t.Fatalf("JSON round trip: %v %+v", err, back)
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {1, 10}, {0, 1}} {
		if got := percentile(ds, c.q); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}
