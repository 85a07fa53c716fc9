package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// newHistory gives a backend the last few hours of a small matrix: Linux
// builders served by a pool of workers (so builds of one builder overlap),
// single-machine builders for the other systems, a builder without
// classes, every result, and builds running now.
func newHistory(t *testing.T, now time.Time) *testBackend {
	t.Helper()
	ctx := context.Background()
	b := newTestBackend(t)
	linuxPool := []string{"debian-1", "debian-2", "debian-3", "ubuntu-arm-1"}
	type spec struct {
		name    string
		classes map[string]string
		stable  bool
		workers []string
		every   time.Duration
		runs    time.Duration
	}
	specs := []spec{
		{"linux-gcc-shared", map[string]string{"os": "linux", "compiler": "gcc", "linkage": "shared"}, true, linuxPool, 14 * time.Minute, 19 * time.Minute},
		{"linux-gcc-static", map[string]string{"os": "linux", "compiler": "gcc", "linkage": "static"}, true, linuxPool, 20 * time.Minute, 16 * time.Minute},
		{"linux-clang-shared", map[string]string{"os": "linux", "compiler": "clang", "linkage": "shared"}, false, linuxPool, 17 * time.Minute, 21 * time.Minute},
		{"linux-clang-static", map[string]string{"os": "linux", "compiler": "clang", "linkage": "static"}, false, linuxPool, 25 * time.Minute, 15 * time.Minute},
		{"freebsd-clang", map[string]string{"os": "freebsd", "compiler": "clang", "linkage": "shared"}, false, []string{"fbsd-1"}, 35 * time.Minute, 28 * time.Minute},
		{"macos-clang", map[string]string{"os": "macos", "compiler": "clang", "linkage": "shared"}, true, []string{"mac-mini-2"}, 30 * time.Minute, 12 * time.Minute},
		{"windows-msvc", map[string]string{"os": "windows", "compiler": "msvc", "linkage": "static"}, false, []string{"win-1", "win-2"}, 40 * time.Minute, 33 * time.Minute},
		{"docs", nil, false, []string{"debian-1"}, 60 * time.Minute, 4 * time.Minute},
	}
	type run struct {
		builder, worker string
		start, end      time.Time
		result          drover.Result
	}
	results := []drover.Result{drover.Success, drover.Success, drover.Warnings, drover.Success, drover.Failure,
		drover.Success, drover.Success, drover.Exception, drover.Success, drover.Cancelled, drover.Success}
	var runs []run
	for i, s := range specs {
		b.builders = append(b.builders, drover.Builder{Name: s.name, Classes: s.classes, Stable: s.stable})
		n := 0
		for start := now.Add(-3*time.Hour + time.Duration(i)*4*time.Minute); start.Before(now.Add(-time.Minute)); start = start.Add(s.every) {
			r := run{builder: s.name, worker: s.workers[n%len(s.workers)], start: start,
				end: start.Add(s.runs + time.Duration(n%3)*time.Minute), result: results[(i+n)%len(results)]}
			if r.end.After(now) {
				r.end = time.Time{} // still running
			}
			runs = append(runs, r)
			n++
		}
	}
	// Claims happen in start order, as in a master.
	slices.SortFunc(runs, func(a, b run) int { return a.start.Compare(b.start) })
	for _, r := range runs {
		bd := b.startBuild(t, r.builder, r.worker, r.start)
		if !r.end.IsZero() {
			must(t, b.st.Builds("").FinishBuild(ctx, bd.ID, r.result, "", r.end, false))
		}
	}
	for _, w := range []string{"debian-1", "debian-2", "debian-3", "ubuntu-arm-1", "fbsd-1", "mac-mini-2", "win-1", "win-2"} {
		must(t, b.st.UpsertWorker(ctx, &drover.Worker{Name: w, Connected: true, Availability: drover.Eager, LastSeen: now}))
	}
	return b
}

// TestBrowserWaterfall opens the waterfall and classes pages over a
// realistic history in a real browser, starts and finishes a build, and
// checks that both pages follow without a reload. It keeps screenshots of
// both pages.
func TestBrowserWaterfall(t *testing.T) {
	now := time.Now()
	b := newHistory(t, now)
	srv, err := newServer(b, testLogger(t), time.Now)
	must(t, err)
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", sseAPI(b))
	mux.Handle("/", srv)
	ts := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	ctx := newBrowser(t) // closed before the server, so streams end first

	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/waterfall?hours=3")))
	waitFor(t, ctx, "the live stream", `!document.getElementById("live-status").hidden`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "waterfall")

	// The header stays in view when the table scrolls.
	waitFor(t, ctx, "a tall table", `document.querySelector(".wf-scroll").scrollHeight > document.querySelector(".wf-scroll").clientHeight`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.querySelector(".wf-scroll").scrollTop = 400, true)`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the sticky header", `Math.abs(document.querySelector(".waterfall thead th").getBoundingClientRect().top -
		document.querySelector(".wf-scroll").getBoundingClientRect().top) < 2`)

	// A new build appears at the top of its column, on its worker, and
	// takes its colour when it finishes.
	next := b.startBuild(t, "docs", "win-2", time.Now())
	b.bus.Publish(events.Event{Type: events.BuildStarted, Builder: "docs", BuildID: next.ID})
	cell := fmt.Sprintf(`document.querySelector('#waterfall a.wf-num[href="/builders/docs/builds/%d"]')`, next.Number)
	waitFor(t, ctx, "the new build", cell+` !== null && `+cell+`.closest("td").classList.contains("r-running") &&
		`+cell+`.closest("td").textContent.includes("win-2")`)
	must(t, b.st.Builds("").FinishBuild(context.Background(), next.ID, drover.Failure, "lint failed", time.Now(), false))
	b.bus.Publish(events.Event{Type: events.BuildFinished, Builder: "docs", BuildID: next.ID, Result: "failure"})
	waitFor(t, ctx, "the finished build", cell+`.closest("td").classList.contains("r-failure")`)
	waitFor(t, ctx, "the header's last result", `[...document.querySelectorAll(".wf-head")].find(th => th.textContent.includes("docs")).querySelector(".badge").textContent === "failure"`)
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload === true`)); err != nil || !ok {
		t.Errorf("the waterfall page reloaded (%v)", err)
	}

	// The classes page shows the grid and follows builds too.
	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/classes")))
	waitFor(t, ctx, "the grid", `document.querySelectorAll("#classes table.classes tbody tr").length === 3`)
	screenshot(t, ctx, "classes")
	again := b.startBuild(t, "macos-clang", "mac-mini-2", time.Now())
	b.bus.Publish(events.Event{Type: events.BuildStarted, Builder: "macos-clang", BuildID: again.ID})
	waitFor(t, ctx, "the running build in its cell", fmt.Sprintf(`document.querySelector('#classes a.cls-running[href="/builders/macos-clang/builds/%d"]') !== null`, again.Number))
}
