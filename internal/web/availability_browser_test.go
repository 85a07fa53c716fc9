package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// TestBrowserAvailabilityForm sets a worker's availability from its page
// in a real browser, through the real API handler: a read token is
// refused with the API's message in place, an operator token works and
// the page shows the new availability without a reload, and "auto"
// clears it. It also keeps screenshots of the queue and locks pages.
func TestBrowserAvailabilityForm(t *testing.T) {
	f := newFixture(t)
	addQueueAndLocks(t, f)
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(f.b, testLogger(t), api.Options{PublicReads: true, Heartbeat: time.Second}))
	mux.Handle("/", f.srv)
	ts := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	ctx := newBrowser(t) // closed before the server, so streams end first

	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/workers/w1")))
	waitFor(t, ctx, "the script to show the form", `!document.getElementById("avail-form").hidden`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload = true`)); err != nil {
		t.Fatal(err)
	}

	submit := func(state, reason, token string) {
		t.Helper()
		must(t, chromedp.Do(ctx,
			chromedp.SetValue("#avail-state", state),
			chromedp.SetValue("#avail-reason", reason),
			chromedp.SetValue("#avail-token", token),
			chromedp.Click("#avail-submit"),
		))
	}

	// A read token is refused; the API's message is shown and nothing
	// changes.
	submit("draining", "disk swap", readerToken)
	waitFor(t, ctx, "the refusal", `!document.getElementById("avail-error").hidden &&
		document.getElementById("avail-error").textContent.includes("role read may not do this")`)
	w, err := f.b.st.GetWorker(context.Background(), "w1")
	must(t, err)
	if w.Override != nil {
		t.Fatalf("a refused call set an override: %+v", w.Override)
	}

	// An operator token works: the page's info fragment shows the new
	// availability, why, and who set it.
	submit("draining", "disk swap <tonight>", operatorToken)
	waitFor(t, ctx, "the new availability", `document.getElementById("worker-avail").textContent === "draining"`)
	waitFor(t, ctx, "who set it and why", `document.getElementById("avail-info").textContent.includes("set by operator 0e0000000002: disk swap <tonight>")`)
	waitFor(t, ctx, "the error cleared", `document.getElementById("avail-error").hidden`)
	waitFor(t, ctx, "the confirmation", `document.getElementById("avail-done").textContent === "Set to draining."`)
	w, err = f.b.st.GetWorker(context.Background(), "w1")
	must(t, err)
	if a, reason, by := w.Effective(); a != drover.Draining || reason != "disk swap <tonight>" || by != "operator 0e0000000002" {
		t.Errorf("stored availability = %q %q %q", a, reason, by)
	}
	// The token stays in the form only: nothing is kept in the browser.
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie`))
	must(t, err)
	if strings.Contains(stored, "secret") {
		t.Errorf("the token was stored in the browser: %s", stored)
	}
	screenshot(t, ctx, "worker")

	// "auto" clears the operator's setting.
	submit("auto", "back in service", operatorToken)
	waitFor(t, ctx, "the worker's own availability", `document.getElementById("worker-avail").textContent === "eager" &&
		document.getElementById("avail-info").textContent.includes("set by worker")`)

	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload === true`)); err != nil || !ok {
		t.Errorf("the worker page reloaded (%v)", err)
	}

	// The queue and locks pages render in the browser, live.
	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/queue")))
	waitFor(t, ctx, "the queue", `document.querySelectorAll("#queue-table tbody tr").length === 2`)
	waitFor(t, ctx, "the live stream", `!document.getElementById("live-status").hidden`)
	screenshot(t, ctx, "queue")
	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/locks")))
	waitFor(t, ctx, "the locks", `document.querySelectorAll("#locks-table meter").length === 3`)
	screenshot(t, ctx, "locks")
	must(t, chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/builds/%d", ts.URL, f.running.ID))))
	waitFor(t, ctx, "the build's locks", `document.querySelectorAll("#build-locks tbody tr").length === 2`)
	screenshot(t, ctx, "build-locks")
}
