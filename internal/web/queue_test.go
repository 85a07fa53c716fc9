package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// evilLock and evilReason are hostile text in the places the queue, locks
// and availability views show: lock names, waiting reasons and an
// operator's reason.
const (
	evilLock   = `vm"><script>alert("lock")</script>`
	evilReason = `<img src=x onerror=alert("why")>`
)

// addQueueAndLocks gives f's backend a queue with reasons and locks held
// and awaited, some named by hostile users.
func addQueueAndLocks(t *testing.T, f *fixture) (held, evil drover.LockState) {
	t.Helper()
	ctx := context.Background()
	pending, err := f.b.st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	must(t, err)
	if len(pending) != 1 {
		t.Fatalf("fixture has %d pending requests, want 1", len(pending))
	}
	f.b.setWaiting(pending[0].ID, "all 2 eligible workers busy", time.Time{})
	late := &drover.BuildRequest{Builder: evilBuilder, Reason: "nightly", Submitted: f.now.Add(-40 * time.Minute)}
	must(t, f.b.st.AddRequests(ctx, []*drover.BuildRequest{late}))
	f.b.setWaiting(late.ID, "lock "+evilLock+" held by build 17; "+evilReason, f.now.Add(-12*time.Minute))

	since := f.now.Add(-90 * time.Second)
	held = drover.LockState{Name: "vm", Scope: drover.LockMaster, Max: 2,
		Holders: []drover.LockHolder{{BuildID: f.running.ID, Builder: "linux-gcc", Number: f.running.Number, Step: -1, Since: since}},
		Waiters: []drover.LockHolder{{RequestID: late.ID, Builder: evilBuilder, Step: -1, Since: since}}}
	evil = drover.LockState{Name: evilLock, Scope: drover.LockWorker, Worker: "w1", Max: 1,
		Holders: []drover.LockHolder{{BuildID: 999, Builder: evilBuilder, Number: 4, Step: 2, Exclusive: true, Since: since}},
		Waiters: []drover.LockHolder{{BuildID: f.running.ID, Builder: "linux-gcc", Number: f.running.Number, Step: 1, Exclusive: true, Since: since}}}
	f.b.setLocks([]drover.LockState{held, evil, {Name: "licence", Scope: drover.LockMaster, Max: 3}})
	return held, evil
}

// checkEscaped fails if any hostile string reached body unescaped.
func checkEscaped(t *testing.T, path, body string) {
	t.Helper()
	for _, raw := range []string{evilBuilder, evilLock, evilReason, "<script>alert", "<img src=x"} {
		if strings.Contains(body, raw) {
			t.Errorf("GET %s: hostile text %q reached the page unescaped", path, raw)
		}
	}
	if n := strings.Count(body, "<script"); n > 1 {
		t.Errorf("GET %s: %d script tags, want only the layout's", path, n)
	}
}

func TestQueueAndLocksPages(t *testing.T) {
	f := newFixture(t)
	addQueueAndLocks(t, f)
	// The request's id and numbers depend on the fixture; find the late one.
	q, err := f.b.Queue(context.Background())
	must(t, err)
	if len(q) != 2 {
		t.Fatalf("queue has %d entries, want 2", len(q))
	}
	first, late := q[0].Request, q[1].Request
	buildURL := fmt.Sprintf("/builds/%d", f.running.ID)

	tests := []struct {
		name   string
		path   string
		want   []string
		absent []string
	}{
		{"queue", "/queue", []string{
			fmt.Sprintf(`<tr id="req-%d">`, first.ID), "all 2 eligible workers busy", "forced by &lt;bob&gt;", "release-1",
			`<td class="num">5</td>`, // priority
			"(no eligible worker for 12m)", ">40m</time>", "lock vm&#34;&gt;&lt;script&gt;", "&lt;img src=x onerror=",
			`href="/builders/%3Cscript%3Ealert%28%22builder%22%29%3C%2Fscript%3E"`,
		}, []string{"Cannot tell why"}},
		{"locks", "/locks", []string{
			`<meter min="0" max="2" value="1"`, "1/2", // vm: one counting holder
			`<meter min="0" max="1" value="1"`, // the exclusive holder takes the only slot
			`<meter min="0" max="3" value="0"`, "0/3", "free",
			fmt.Sprintf(`href="/builds/%d">build %d</a>`, f.running.ID, f.running.ID),
			fmt.Sprintf(`href="/queue#req-%d">request %d</a>`, late.ID, late.ID),
			`href="/builds/999">build 999</a>`, "step 2", `<span class="tag excl">exclusive</span>`,
			`worker <a href="/workers/w1">w1</a>`, "vm&#34;&gt;&lt;script&gt;alert(&#34;lock&#34;)&lt;/script&gt;",
		}, nil},
		{"build", buildURL, []string{
			`id="build-locks" data-fragment="locks"`, `<span class="badge r-success">holds</span>`,
			`<span class="badge r-pending">waits</span>`, "the whole build", "step 1",
			`href="/builds/999">build 999</a>`, // the other holder of the lock it waits for
		}, nil},
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
			checkEscaped(t, tt.path, r.body)
		})
	}

	// The queue is in priority order: the priority-5 request first.
	r := f.get(t, "/queue")
	if i, j := strings.Index(r.body, fmt.Sprintf(`id="req-%d"`, first.ID)), strings.Index(r.body, fmt.Sprintf(`id="req-%d"`, late.ID)); i < 0 || j < i {
		t.Errorf("queue out of order")
	}
	// A finished build holds nothing and shows no locks section.
	if r := f.get(t, fmt.Sprintf("/builds/%d", f.failed.ID)); strings.Contains(r.body, `id="build-locks"`) {
		t.Errorf("a finished build shows a locks section")
	}
}

func TestQueueWithoutReasons(t *testing.T) {
	f := newFixture(t)
	f.b.mu.Lock()
	f.b.queueErr = drover.Errorf(drover.Unavailable, "queue explanations are being built")
	f.b.mu.Unlock()
	r := f.get(t, "/queue")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: the queue should show without its reasons", r.status)
	}
	for _, w := range []string{"Cannot tell why requests wait: queue explanations are being built", "forced by &lt;bob&gt;", "release-1"} {
		if !strings.Contains(r.body, w) {
			t.Errorf("missing %q", w)
		}
	}
}

func TestRequestsRedirectsToQueue(t *testing.T) {
	f := newFixture(t)
	for path, want := range map[string]string{"/requests": "/queue", "/requests?fragment=queue": "/queue?fragment=queue"} {
		r := f.get(t, path)
		if r.status != http.StatusMovedPermanently || r.header.Get("Location") != want {
			t.Errorf("GET %s: %d to %q, want 301 to %q", path, r.status, r.header.Get("Location"), want)
		}
	}
}

func TestAvailabilityShown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// w1 reports itself eager for a reason; an operator drained it.
	must(t, f.b.st.UpsertWorker(ctx, &drover.Worker{Name: "w1", OS: "linux", Arch: "amd64", Availability: drover.Eager,
		AvailabilityReason: "inside its time window", Connected: true, ConnectedAt: f.now.Add(-time.Hour), LastSeen: f.now}))
	must(t, f.b.SetAvailability(ctx, "w1", drover.Draining, evilReason, "operator 0e0000000002"))
	// A worker with a hostile name and its own reluctance.
	evilWorker := `w"3<script>alert(1)</script>`
	must(t, f.b.st.UpsertWorker(ctx, &drover.Worker{Name: evilWorker, Availability: drover.Reluctant, AvailabilityReason: "load 7.5 > 4"}))

	tests := []struct {
		name   string
		path   string
		want   []string
		absent []string
	}{
		{"workers", "/workers", []string{
			`<span class="tag avail-draining">draining</span>`, "set by operator 0e0000000002: &lt;img src=x",
			"worker's own: eager (inside its time window)",
			`<span class="tag avail-reluctant">reluctant</span> <span class="muted small">load 7.5 &gt; 4</span>`,
		}, nil},
		{"overridden worker", "/workers/w1", []string{
			`id="worker-avail" class="tag avail-draining">draining</span>`, `set by <span class="by">operator 0e0000000002</span>: &lt;img`,
			"applies again once the operator's is cleared:</span> eager — inside its time window",
			`<form id="avail-form" class="avail-form" data-worker="w1" hidden>`, `<option value="auto">auto (the worker's own)</option>`,
			`<option value="offline">offline</option>`, `type="password" name="token"`,
			`drover availability w1 STATE --reason`,
		}, nil},
		{"worker's own", "/workers/w2", []string{
			`id="worker-avail" class="tag avail-reluctant">reluctant</span>`, `set by <span class="by">worker</span>`,
		}, []string{"applies again once"}},
		{"hostile worker", "/workers/" + url.PathEscape(evilWorker), []string{
			`set by <span class="by">worker</span>: load 7.5 &gt; 4`,
			// The command is quoted for the shell, then escaped for HTML.
			`drover availability &#39;w&#34;3&lt;script&gt;alert(1)&lt;/script&gt;&#39; STATE`,
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: status %d\n%s", tt.path, r.status, r.body)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("GET %s: missing %q\n%s", tt.path, w, r.body)
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(r.body, w) {
					t.Errorf("GET %s: unexpectedly contains %q", tt.path, w)
				}
			}
			checkEscaped(t, tt.path, r.body)
			if strings.Contains(r.body, evilWorker) {
				t.Errorf("GET %s: hostile worker name unescaped", tt.path)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"w1", "w1"},
		{"mac-mini.local", "mac-mini.local"},
		{"", "''"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestLockUsed(t *testing.T) {
	tests := []struct {
		name string
		l    drover.LockState
		want int
	}{
		{"unused", drover.LockState{Max: 2}, 0},
		{"counting", drover.LockState{Max: 3, Holders: []drover.LockHolder{{}, {}}}, 2},
		{"exclusive takes all", drover.LockState{Max: 3, Holders: []drover.LockHolder{{Exclusive: true}}}, 3},
		{"never above max", drover.LockState{Max: 1, Holders: []drover.LockHolder{{}, {Exclusive: true}}}, 1},
	}
	for _, tt := range tests {
		if got := lockUsed(tt.l); got != tt.want {
			t.Errorf("%s: lockUsed = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// A downtime wins over the operator's setting and the worker's own; the
// pages still show both, and when each applies again.
func TestAvailabilityOfDowntime(t *testing.T) {
	at := time.Date(2026, 6, 3, 8, 0, 0, 0, time.UTC)
	d := &drover.Downtime{Source: "config", Window: "Wed 08:00-10:00 UTC", Until: at.Add(2 * time.Hour), Reason: "Wed 08:00-10:00 UTC until 10:00"}
	w := drover.Worker{Name: "w1", Availability: drover.Reluctant, AvailabilityReason: "load 7 above 6", Downtime: d,
		Override: &drover.AvailabilityOverride{Availability: drover.Draining, Reason: "disk", By: "operator 0e01", At: at}}
	got := availabilityOf(w)
	want := availView{Effective: drover.Offline, Reason: "Wed 08:00-10:00 UTC until 10:00", By: "downtime (config)", Overridden: true,
		Own: drover.Reluctant, OwnReason: "load 7 above 6", Downtime: d, Operator: "draining, set by operator 0e01: disk"}
	if got != want {
		t.Errorf("availabilityOf = %+v\nwant %+v", got, want)
	}
	w.Override = nil
	want.Operator = ""
	if got := availabilityOf(w); got != want {
		t.Errorf("without an override: %+v\nwant %+v", got, want)
	}
}
