package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/testenv"
)

// newBrowser starts a headless Chromium for the test.
func newBrowser(t *testing.T) context.Context { return testenv.Browser(t) }

// waitFor polls a JavaScript predicate in the page until it is true.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		var html string
		html, _ = chromedp.Run(ctx, chromedp.OuterHTML("main"))
		t.Fatalf("waiting for %s (%s): %v\npage:\n%s", what, expr, err, html)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := fmt.Sprintf("%s/drover-web-%s.png", os.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot of the %s page: %s", name, path)
}

// TestBrowserLiveBuild opens a running build's page in a real browser,
// grows the running step's log and finishes the step and the build, and
// checks that the page follows without a reload.
func TestBrowserLiveBuild(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", sseAPI(f.b))
	mux.Handle("/", f.srv)
	ts := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	ctx := newBrowser(t) // closed before the server, so streams end first

	buildURL := fmt.Sprintf("%s/builders/linux-gcc/builds/%d", ts.URL, f.running.Number)
	logSel := fmt.Sprintf("log-%d", f.liveLog.ID)
	must(t, chromedp.Do(ctx, chromedp.Navigate(buildURL)))
	// Mark the document: if the page reloaded, the mark would be gone.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload = true`)); err != nil {
		t.Fatal(err)
	}

	// New output reaches the log element through the log stream, after the
	// server-rendered text and exactly once.
	f.b.appendLog(f.liveLog.ID, "cc -c <parse>.c\nld -o proj\n")
	want := "cc -c main.c\ncc -c <parse>.c\nld -o proj\n"
	waitFor(t, ctx, "the appended log text", fmt.Sprintf(`document.getElementById(%q).textContent === %q`, logSel, want))
	f.b.appendLog(f.liveLog.ID, "tests: 41 passed\n")
	want += "tests: 41 passed\n"
	waitFor(t, ctx, "more log text", fmt.Sprintf(`document.getElementById(%q).textContent === %q`, logSel, want))
	screenshot(t, ctx, "build")

	// Finishing the step refreshes the steps fragment.
	ctxb := context.Background()
	exit0 := 0
	now := time.Now()
	f.b.completeLog(t, f.liveLog.ID)
	must(t, f.b.st.Builds("").UpdateStep(ctxb, &drover.Step{BuildID: f.running.ID, Index: 1, Name: "compile", State: drover.StepFinished,
		Result: drover.Warnings, Summary: "3 warnings", ExitCode: &exit0, Started: now.Add(-110 * time.Second), Finished: now}))
	f.b.bus.Publish(events.Event{Type: events.StepFinished, Builder: "linux-gcc", BuildID: f.running.ID, Step: 1, Result: "warnings"})
	waitFor(t, ctx, "the step's result", `document.querySelector("#step-1 .badge").textContent === "warnings"`)
	waitFor(t, ctx, "the step's summary", `document.querySelector("#step-1 .sum").textContent === "3 warnings"`)
	waitFor(t, ctx, "the log to stop streaming", fmt.Sprintf(`!document.getElementById(%q).hasAttribute("data-stream")`, logSel))
	waitFor(t, ctx, "the log text kept", fmt.Sprintf(`document.getElementById(%q).textContent === %q`, logSel, want))

	// Finishing the build refreshes the header.
	must(t, f.b.st.Builds("").FinishBuild(ctxb, f.running.ID, drover.Warnings, "3 warnings in compile", now, false))
	f.b.bus.Publish(events.Event{Type: events.BuildFinished, Builder: "linux-gcc", BuildID: f.running.ID, Result: "warnings"})
	waitFor(t, ctx, "the build's result", `document.querySelector("#build-result .badge").textContent === "warnings"`)
	waitFor(t, ctx, "the build's state", `document.getElementById("build-state").textContent === "finished"`)

	// Events about another build leave this page alone.
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload === true`)); err != nil || !ok {
		t.Errorf("the build page reloaded (%v)", err)
	}

	// The home page's table follows new builds.
	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")))
	next := f.b.startBuild(t, "macos-clang", "w1", time.Now())
	f.b.bus.Publish(events.Event{Type: events.BuildStarted, Builder: "macos-clang", BuildID: next.ID})
	waitFor(t, ctx, "the new build on the home page",
		`[...document.querySelectorAll("#builds-table a")].some(a => a.getAttribute("href") === "/builders/macos-clang/builds/1")`)
	waitFor(t, ctx, "the pending count", `document.querySelector("#home-stats").textContent.includes("pending")`)
	screenshot(t, ctx, "home")

	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
