package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// addApprovalWorkers stores a worker waiting for approval and a rejected
// one beside the fixture's approved fleet.
func addApprovalWorkers(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	for _, w := range []drover.Worker{
		{Name: "new<1>", OS: "freebsd", Arch: "arm64", Version: "0.9.0", Address: "192.0.2.9:4711", Approval: drover.ApprovalPending},
		{Name: "bad1", OS: "linux", Arch: "amd64", Approval: drover.ApprovalRejected},
	} {
		must(t, f.b.st.UpsertWorker(ctx, &w))
	}
}

func TestApprovalPages(t *testing.T) {
	f := newFixture(t)
	// Without a waiting worker, the section is not there at all.
	r := f.get(t, "/workers")
	if strings.Contains(r.body, `id="approval"`) || strings.Contains(r.body, "Awaiting approval") {
		t.Fatalf("workers page shows an approval section with nobody waiting:\n%s", r.body)
	}

	addApprovalWorkers(t, f)
	tests := []struct {
		name   string
		path   string
		want   []string
		absent []string
	}{
		{"workers", "/workers", []string{
			`<section id="approval" class="approval">`, "Awaiting approval",
			`data-fragment="approval" data-events="worker.changed"`,
			`id="approval-token"`, `placeholder="admin token"`,
			`data-approval="approve" data-worker="new&lt;1&gt;"`, `data-approval="reject" data-worker="new&lt;1&gt;"`,
			`href="/workers/new%3C1%3E"`, "freebsd/arm64", "192.0.2.9:4711",
			"drover workers approve NAME", "drover workers reject NAME", "drover workers approve &#39;new&lt;1&gt;&#39;",
			`bad1</a> <span class="tag rejected">rejected</span>`,
		}, nil},
		{"approval fragment", "/workers?fragment=approval", []string{`data-worker="new&lt;1&gt;"`}, []string{"<!doctype html>", "bad1", "w1"}},
		{"workers fragment", "/workers?fragment=workers", []string{"w1", "w2", "bad1"}, []string{"new&lt;1&gt;", "<!doctype html>"}},
		{"pending worker page", "/workers/new%3C1%3E", []string{`id="approval-info"`, "awaiting approval", "drover workers approve &#39;new&lt;1&gt;&#39;"}, nil},
		{"rejected worker page", "/workers/bad1", []string{`id="approval-info"`, `tag rejected`}, nil},
		{"approved worker page", "/workers/w1", nil, []string{`id="approval-info"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: status %d\n%s", tt.path, r.status, r.body)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("GET %s: missing %q", tt.path, w)
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(r.body, w) {
					t.Errorf("GET %s: unexpectedly contains %q", tt.path, w)
				}
			}
		})
	}

	// Once nobody waits, the live fragment says so.
	must(t, f.b.SetApproval(context.Background(), "new<1>", drover.ApprovalApproved, "admin"))
	if r := f.get(t, "/workers?fragment=approval"); !strings.Contains(r.body, "No worker is waiting any more.") {
		t.Errorf("approval fragment with nobody waiting:\n%s", r.body)
	}
}

// TestBrowserApproval approves and rejects workers from the workers page
// in a real browser, through the real API handler: an operator token is
// refused with the API's message, an admin token works, and the page
// moves the worker out of the section without a reload.
func TestBrowserApproval(t *testing.T) {
	f := newFixture(t)
	addApprovalWorkers(t, f)
	must(t, f.b.st.UpsertWorker(context.Background(), &drover.Worker{Name: "new2", Approval: drover.ApprovalPending}))
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", api.NewHandler(f.b, testLogger(t), api.Options{PublicReads: true, Heartbeat: time.Second}))
	mux.Handle("/", f.srv)
	ts := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(ts.Close)
	ctx := newBrowser(t) // closed before the server, so streams end first

	must(t, chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/workers")))
	waitFor(t, ctx, "the script to show the token form", `!document.getElementById("approval-form").hidden`)
	waitFor(t, ctx, "the buttons", `getComputedStyle(document.querySelector('button[data-approval="approve"]')).display !== "none"`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	click := func(verb, worker, token string) {
		t.Helper()
		must(t, chromedp.Do(ctx, chromedp.SetValue("#approval-token", token)))
		_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('button[data-approval="`+verb+`"][data-worker="`+worker+`"]').click(), true`))
		must(t, err)
	}

	click("approve", "new2", operatorToken)
	waitFor(t, ctx, "the refusal", `document.getElementById("approval-error").textContent.includes("needs role admin")`)
	w, err := f.b.st.GetWorker(context.Background(), "new2")
	must(t, err)
	if w.Approval != drover.ApprovalPending {
		t.Fatalf("a refused click changed the approval to %q", w.Approval)
	}
	screenshot(t, ctx, "workers-approval")

	click("approve", "new2", adminToken)
	waitFor(t, ctx, "the confirmation", `document.getElementById("approval-done").textContent === "Approved new2."`)
	waitFor(t, ctx, "new2 to leave the section", `!document.querySelector('#approval-table [data-worker="new2"]')`)
	waitFor(t, ctx, "new2 in the fleet", `document.getElementById("workers-table").textContent.includes("new2")`)

	click("reject", "new<1>", adminToken)
	waitFor(t, ctx, "the section to empty", `document.getElementById("approval-table").textContent.includes("No worker is waiting any more.")`)
	for name, want := range map[string]string{"new2": drover.ApprovalApproved, "new<1>": drover.ApprovalRejected} {
		w, err := f.b.st.GetWorker(context.Background(), name)
		must(t, err)
		if w.Approval != want {
			t.Errorf("worker %s is %q, want %q", name, w.Approval, want)
		}
	}
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.droverNoReload === true`)); err != nil || !ok {
		t.Errorf("the workers page reloaded (%v)", err)
	}
}
