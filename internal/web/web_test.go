package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// Hostile strings put where users control text: builder and step names,
// log output, commit messages. None may reach a page unescaped.
const (
	evilBuilder = `<script>alert("builder")</script>`
	evilStep    = `<img src=x onerror=alert(1)>`
	evilLog     = "error: <script>alert('log')</script>\n"
	evilComment = `fix <b onmouseover="alert(2)">parser</b>`
)

// fixture is a master's state with builds in every state.
type fixture struct {
	b        *testBackend
	srv      *server
	failed   *drover.Build // finished with a failure
	running  *drover.Build // running, its step 1 streaming
	evil     *drover.Build // of the hostile builder
	liveLog  drover.Log    // the running step's log
	failLog  drover.Log
	now      time.Time
	bigLogID int64
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	b := newTestBackend(t)
	now := time.Now()
	f := &fixture{b: b, now: now}

	gcc9, err := drover.ParseRequirement("gcc", ">= 9")
	must(t, err)
	linux, err := drover.ParseRequirement("os", "linux")
	must(t, err)
	b.builders = []drover.Builder{
		{
			Name:        "linux-gcc",
			Description: "GCC on Linux, shared libraries",
			Requires:    []drover.Requirement{linux, gcc9},
			Classes:     map[string]string{"compiler": "gcc", "linkage": "shared"},
			Stable:      true,
			Steps: []drover.StepSpec{
				{Kind: drover.StepCheckout, Name: "checkout", Source: &drover.GitSource{URL: "https://example.org/proj.git"}},
				{Kind: drover.StepShell, Name: "compile", Command: []string{"make -j"}, Shell: true},
			},
		},
		{Name: "macos-clang", Classes: map[string]string{"compiler": "clang"}},
		{
			Name:  evilBuilder,
			Steps: []drover.StepSpec{{Kind: drover.StepShell, Name: evilStep, Command: []string{"echo", "<b>"}}},
		},
	}
	b.elig = []drover.Eligibility{
		{Worker: "w2", Eligible: false, Reasons: []string{"os: is freebsd, required linux"}},
		{Worker: "w1", Eligible: true, Reasons: []string{"os: is linux", "gcc: 12.2.0 satisfies >= 9"}},
	}

	must(t, b.st.UpsertWorker(ctx, &drover.Worker{
		Name: "w1", OS: "linux", Arch: "amd64", Version: "0.1.0", Availability: drover.Eager,
		Connected: true, ConnectedAt: now.Add(-time.Hour), LastSeen: now,
		Facts:  drover.Facts{"os": {"linux", "debian", "debian-12"}, "gcc": {"12.2.0"}},
		Labels: drover.Properties{"gpu": "yes"},
	}))
	must(t, b.st.UpsertWorker(ctx, &drover.Worker{
		Name: "w2", OS: "freebsd", Arch: "arm64", Availability: drover.Reluctant, LastSeen: now.Add(-3 * time.Hour),
	}))

	exit0, exit2 := 0, 2
	// A failed build: checkout passed, compile failed with a hostile log.
	f.failed = b.startBuild(t, "linux-gcc", "w1", now.Add(-20*time.Minute))
	must(t, b.st.Builds("").AddSteps(ctx, []drover.Step{
		{BuildID: f.failed.ID, Index: 0, Name: "checkout", State: drover.StepPending},
		{BuildID: f.failed.ID, Index: 1, Name: "compile", State: drover.StepPending},
	}))
	must(t, b.st.Builds("").UpdateStep(ctx, &drover.Step{BuildID: f.failed.ID, Index: 0, Name: "checkout", State: drover.StepFinished,
		Result: drover.Success, ExitCode: &exit0, Started: now.Add(-20 * time.Minute), Finished: now.Add(-19 * time.Minute)}))
	must(t, b.st.Builds("").UpdateStep(ctx, &drover.Step{BuildID: f.failed.ID, Index: 1, Name: "compile", State: drover.StepFinished,
		Result: drover.Failure, Summary: "make: *** [all] Error 2", ExitCode: &exit2,
		Started: now.Add(-19 * time.Minute), Finished: now.Add(-15 * time.Minute)}))
	b.addLog(t, f.failed.ID, 0, "Cloning into 'proj'...\n", true)
	f.failLog = b.addLog(t, f.failed.ID, 1, evilLog, true)
	must(t, b.st.Builds("").SetBuildProperties(ctx, f.failed.ID, drover.Properties{"got_revision": "0123456789abcdef", "evil": evilStep}))
	must(t, b.st.Builds("").FinishBuild(ctx, f.failed.ID, drover.Failure, "compile failed", now.Add(-15*time.Minute), false))

	// A build of the hostile builder.
	f.evil = b.startBuild(t, evilBuilder, "w2", now.Add(-10*time.Minute))
	must(t, b.st.Builds("").AddSteps(ctx, []drover.Step{{BuildID: f.evil.ID, Index: 0, Name: evilStep, State: drover.StepFinished,
		Result: drover.Success, Started: now.Add(-10 * time.Minute), Finished: now.Add(-9 * time.Minute)}}))
	big := strings.Repeat("line of output\n", 20000) + "THE END\n" // about 300 KiB
	f.bigLogID = b.addLog(t, f.evil.ID, 0, big, true).ID
	must(t, b.st.Builds("").FinishBuild(ctx, f.evil.ID, drover.Success, "", now.Add(-9*time.Minute), false))

	// A running build: checkout done, compile running with a live log.
	f.running = b.startBuild(t, "linux-gcc", "w1", now.Add(-2*time.Minute))
	must(t, b.st.Builds("").AddSteps(ctx, []drover.Step{
		{BuildID: f.running.ID, Index: 0, Name: "checkout", State: drover.StepFinished, Result: drover.Success,
			ExitCode: &exit0, Started: now.Add(-2 * time.Minute), Finished: now.Add(-110 * time.Second)},
		{BuildID: f.running.ID, Index: 1, Name: "compile", State: drover.StepRunning, Started: now.Add(-110 * time.Second)},
	}))
	b.addLog(t, f.running.ID, 0, "Updating proj\n", true)
	f.liveLog = b.addLog(t, f.running.ID, 1, "cc -c main.c\n", false)

	// One request waiting, and a change.
	must(t, b.st.AddRequests(ctx, []*drover.BuildRequest{{Builder: "linux-gcc", Reason: "forced by <bob>",
		Source: drover.SourceStamp{Branch: "release-1"}, Priority: 5}}))
	must(t, b.st.AddChange(ctx, &drover.Change{Repository: "https://example.org/proj.git", Branch: "main",
		Revision: "fedcba9876543210fedcba9876543210fedcba98", Author: "alice <alice@example.org>",
		Comments: evilComment + "\n\nLonger body.", Files: []string{"parse.c"}, When: now.Add(-30 * time.Minute)}))

	srv, err := newServer(b, testLogger(t), time.Now)
	must(t, err)
	f.srv = srv
	return f
}

type response struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) get(t *testing.T, path string, header ...string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	must(t, err)
	return response{status: rec.Code, header: rec.Result().Header, body: string(body)}
}

func TestPages(t *testing.T) {
	f := newFixture(t)
	buildURL := func(b *drover.Build) string { return fmt.Sprintf("/builders/%s/builds/%d", b.Builder, b.Number) }
	tests := []struct {
		name   string
		path   string
		status int
		want   []string
		absent []string
	}{
		{"home", "/", 200, []string{
			`id="builds-table"`, "linux-gcc", `badge r-failure">failure`, `badge r-running">running`,
			`badge r-success">success`, "0123456789", `href="/workers/w1"`, "<b>1</b>", // pending requests
			"<b>1</b><span class=\"muted\">/2</span> workers connected", "compile failed", "ago</time>",
			`aria-current="page">Home`, "Drover &lt;Test&gt; &amp; Co",
		}, nil},
		{"builders", "/builders", 200, []string{
			`id="builders-table"`, `href="/builders/linux-gcc"`, `stable</span>`, `<span class="muted">compiler=</span>gcc`,
			`os=linux`, `gcc &gt;= 9`, `href="/builders/linux-gcc#pending">1</a>`, "never built",
		}, []string{"<script>alert"}},
		{"builder", "/builders/linux-gcc", 200, []string{
			"GCC on Linux", `gcc &gt;= 9`, "<span class=\"muted\">linkage=</span>shared", "make -j",
			`id="builds-table"`, `id="requests-table"`, "forced by &lt;bob&gt;", "release-1",
			`id="eligibility"`, "gcc: 12.2.0 satisfies &gt;= 9", "os: is freebsd, required linux",
			"drover force linux-gcc",
		}, nil},
		{"build by number", buildURL(f.failed), 200, []string{
			`id="build-result"`, `id="build-state" data-state="finished"`, "compile failed", "eager, least loaded",
			`id="step-0"`, `<details class="step" id="step-1" open>`, "exit 2", "make: *** [all] Error 2",
			fmt.Sprintf(`id="log-%d"`, f.failLog.ID), "error: &lt;script&gt;", "got_revision",
			fmt.Sprintf(`href="/api/v1/logs/%d/raw"`, f.failLog.ID), "change by alice",
		}, []string{"drover cancel", "data-stream", "data-fragment"}},
		{"build by id", fmt.Sprintf("/builds/%d", f.running.ID), 200, []string{
			`badge r-running">running`, `data-fragment="steps"`, `data-fragment="header"`,
			fmt.Sprintf(`data-build="%d"`, f.running.ID),
			fmt.Sprintf(`id="log-%d" data-offset="13" data-stream="/api/v1/logs/%d/stream"`, f.liveLog.ID, f.liveLog.ID),
			"cc -c main.c", fmt.Sprintf("drover cancel %d", f.running.ID), `<details class="step" id="step-1" open>`,
		}, nil},
		{"workers", "/workers", 200, []string{
			`id="workers-table"`, `<span class="dot on"`, `<span class="dot off"`, "linux/amd64", "freebsd/arm64",
			"avail-reluctant", fmt.Sprintf(`linux-gcc #%d`, f.running.Number), "idle", "last seen",
		}, nil},
		{"worker", "/workers/w1", 200, []string{
			"debian-12", "12.2.0", `<span class="muted">gpu=</span>yes`, `id="builds-table"`, "connected since",
		}, nil},
		{"changes", "/changes", 200, []string{`id="changes-table"`, "fedcba9876", "alice &lt;alice@example.org&gt;", ">fix &lt;b onmouseover=&#34;alert(2)&#34;&gt;parser&lt;/b&gt;</td>"}, nil},
		{"queue", "/queue", 200, []string{`id="queue-table"`, "forced by &lt;bob&gt;", "release-1", `aria-current="page">Queue`}, nil},
		{"locks", "/locks", 200, []string{`id="locks-table"`, "The config declares no locks.", `aria-current="page">Locks`}, nil},
		{"unknown page", "/nope", 404, []string{"Not found", "no page at /nope", `class="topbar"`}, nil},
		{"unknown builder", "/builders/nope", 404, []string{`no builder named &#34;nope&#34;`}, nil},
		{"unknown build number", "/builders/linux-gcc/builds/999", 404, []string{"Not found"}, nil},
		{"bad build number", "/builders/linux-gcc/builds/x", 404, []string{"Not found"}, nil},
		{"unknown build", "/builds/999", 404, []string{"Not found"}, nil},
		{"bad build id", "/builds/-1", 404, []string{"Not found"}, nil},
		{"unknown worker", "/workers/nope", 404, []string{"Not found"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path)
			if r.status != tt.status {
				t.Fatalf("GET %s: status %d, want %d\n%s", tt.path, r.status, tt.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if !strings.Contains(r.body, "<!doctype html>") || !strings.Contains(r.body, `href="/builders"`) {
				t.Errorf("GET %s: not a full page in the layout", tt.path)
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
}

func TestEscaping(t *testing.T) {
	f := newFixture(t)
	evilPath := "/builders/" + url.PathEscape(evilBuilder)
	paths := []string{
		"/", "/builders", "/workers/w2", "/changes",
		fmt.Sprintf("/builds/%d", f.evil.ID),
		fmt.Sprintf("/builds/%d", f.failed.ID),
		evilPath,
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := f.get(t, p)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: status %d\n%s", p, r.status, r.body)
			}
			for _, raw := range []string{evilBuilder, evilStep, evilLog, evilComment, "<script>alert", "<img src=x", "<b onmouseover"} {
				if strings.Contains(r.body, raw) {
					t.Errorf("GET %s: hostile text %q reached the page unescaped", p, raw)
				}
			}
			if strings.Count(r.body, "<script") != 1 {
				t.Errorf("GET %s: want exactly the one script tag of the layout, got %d", p, strings.Count(r.body, "<script"))
			}
		})
	}
	// The hostile builder is reachable by its escaped path, and its links
	// are escaped as paths, not just as HTML.
	r := f.get(t, "/")
	if !strings.Contains(r.body, `href="/builders/%3Cscript%3Ealert%28%22builder%22%29%3C%2Fscript%3E"`) {
		t.Errorf("home page: hostile builder link not path-escaped")
	}
	if !strings.Contains(r.body, "&lt;script&gt;alert(&#34;builder&#34;)&lt;/script&gt;") {
		t.Errorf("home page: hostile builder name not shown escaped")
	}
	if h := r.header.Get("Content-Security-Policy"); !strings.Contains(h, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", h)
	}
}

func TestFragments(t *testing.T) {
	f := newFixture(t)
	build := fmt.Sprintf("/builds/%d", f.running.ID)
	tests := []struct {
		name   string
		path   string
		header []string
		status int
		want   []string
	}{
		{"steps by query", build + "?fragment=steps", nil, 200, []string{`id="step-0"`, `id="step-1"`, "cc -c main.c"}},
		{"steps by header", build, []string{"X-Fragment", "steps"}, 200, []string{`id="step-1"`, "data-stream="}},
		{"header", build + "?fragment=header", nil, 200, []string{`id="build-state" data-state="running"`, `id="build-result"`}},
		{"props", fmt.Sprintf("/builds/%d?fragment=props", f.failed.ID), nil, 200, []string{"got_revision"}},
		{"home builds", "/?fragment=builds", nil, 200, []string{"<table", "linux-gcc"}},
		{"home stats", "/?fragment=stats", nil, 200, []string{"pending", "workers connected"}},
		{"builders", "/builders?fragment=builders", nil, 200, []string{"linux-gcc"}},
		{"builder eligibility", "/builders/linux-gcc?fragment=eligibility", nil, 200, []string{"w1", "w2"}},
		{"workers", "/workers?fragment=workers", nil, 200, []string{"w1", "w2"}},
		{"worker info", "/workers/w1?fragment=info", nil, 200, []string{"debian-12"}},
		{"changes", "/changes?fragment=changes", nil, 200, []string{"fedcba9876"}},
		{"queue", "/queue?fragment=queue", nil, 200, []string{"release-1"}},
		{"locks", "/locks?fragment=locks", nil, 200, []string{"no locks"}},
		{"build locks", build + "?fragment=locks", nil, 200, []string{"holds no lock"}},
		{"unknown fragment", build + "?fragment=layout", nil, 404, []string{`page has no fragment "layout"`}},
		{"fragment of a missing build", "/builds/999?fragment=steps", nil, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path, tt.header...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d\n%s", r.status, tt.status, r.body)
			}
			if strings.Contains(r.body, "<html") || strings.Contains(r.body, "topbar") {
				t.Errorf("fragment contains the layout:\n%s", r.body)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("missing %q in\n%s", w, r.body)
				}
			}
		})
	}
	// Steps fragments keep steps in order and logs under their step.
	r := f.get(t, build+"?fragment=steps")
	if i, j := strings.Index(r.body, `id="step-0"`), strings.Index(r.body, `id="step-1"`); i < 0 || j < i {
		t.Errorf("steps out of order")
	}
	if i, j := strings.Index(r.body, `id="step-1"`), strings.Index(r.body, "cc -c main.c"); j < i {
		t.Errorf("compile's log is not under the compile step")
	}
}

func TestBigLogShowsTail(t *testing.T) {
	f := newFixture(t)
	r := f.get(t, fmt.Sprintf("/builds/%d", f.evil.ID))
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	m := regexp.MustCompile(fmt.Sprintf(`<pre class="logtext" id="log-%d" data-offset="(\d+)">([^<]*)</pre>`, f.bigLogID)).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no log element for log %d", f.bigLogID)
	}
	total := len(strings.Repeat("line of output\n", 20000) + "THE END\n")
	if m[1] != fmt.Sprint(total) {
		t.Errorf("data-offset = %s, want %d (the end of the log)", m[1], total)
	}
	text := m[2]
	if len(text) > logTail || len(text) < logTail-4096 {
		t.Errorf("shown %d bytes, want about %d", len(text), logTail)
	}
	if !strings.HasSuffix(text, "THE END\n") || !strings.HasPrefix(text, "line of output\n") {
		t.Errorf("tail does not start on a line and end at the end: %q … %q", text[:30], text[len(text)-30:])
	}
	for _, w := range []string{"showing the last 64.0 KiB", fmt.Sprintf(`href="/api/v1/logs/%d/raw"`, f.bigLogID)} {
		if !strings.Contains(r.body, w) {
			t.Errorf("missing %q", w)
		}
	}
}

func TestMissingLogShowsError(t *testing.T) {
	f := newFixture(t)
	f.b.mu.Lock()
	delete(f.b.logs, f.failLog.ID)
	f.b.mu.Unlock()
	r := f.get(t, fmt.Sprintf("/builds/%d", f.failed.ID))
	if r.status != 200 {
		t.Fatalf("status %d: one missing log should not break the page", r.status)
	}
	if !strings.Contains(r.body, "log unavailable: no log") {
		t.Errorf("missing log not reported in place")
	}
}

func TestEligibilityError(t *testing.T) {
	f := newFixture(t)
	f.b.eligErr = drover.Errorf(drover.Unavailable, "master is reloading")
	r := f.get(t, "/builders/linux-gcc")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if !strings.Contains(r.body, "Cannot tell which workers may run this builder: master is reloading") {
		t.Errorf("eligibility error not shown")
	}
}

func TestStaticAndMethods(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		path, method string
		status       int
		ctype, cache string
	}{
		{"/static/style.css?v=" + f.srv.assetVersion, "GET", 200, "text/css; charset=utf-8", "public, max-age=31536000, immutable"},
		{"/static/live.js", "GET", 200, "text/javascript; charset=utf-8", "no-cache"},
		{"/static/favicon.svg", "GET", 200, "image/svg+xml", "no-cache"},
		{"/static/nope.css", "GET", 404, "text/html; charset=utf-8", "no-store"},
		{"/static/", "GET", 404, "text/html; charset=utf-8", "no-store"},
		{"/", "POST", 405, "", ""},
		{"/builders/linux-gcc", "DELETE", 405, "", ""},
		{"/", "HEAD", 200, "text/html; charset=utf-8", "no-store"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			f.srv.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if tt.ctype != "" && rec.Header().Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", rec.Header().Get("Content-Type"), tt.ctype)
			}
			if tt.cache != "" && rec.Header().Get("Cache-Control") != tt.cache {
				t.Errorf("Cache-Control %q, want %q", rec.Header().Get("Cache-Control"), tt.cache)
			}
		})
	}
	// Pages link assets by their versioned URL.
	r := f.get(t, "/")
	if !strings.Contains(r.body, `/static/style.css?v=`+f.srv.assetVersion) {
		t.Errorf("page does not link the versioned stylesheet")
	}
}

func TestNewHandler(t *testing.T) {
	if _, err := NewHandler(nil, nil); drover.KindOf(err) != drover.Invalid {
		t.Errorf("NewHandler(nil) error = %v, want Invalid", err)
	}
	h, err := NewHandler(newTestBackend(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "No builds yet.") {
		t.Errorf("empty master: status %d\n%s", rec.Code, rec.Body)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "—"},
		{now, "just now"},
		{now.Add(-9 * time.Second), "just now"},
		{now.Add(-42 * time.Second), "42s ago"},
		{now.Add(-3*time.Minute - 20*time.Second), "3m ago"},
		{now.Add(-5 * time.Hour), "5h ago"},
		{now.Add(-47 * time.Hour), "47h ago"},
		{now.Add(-72 * time.Hour), "3d ago"},
		{now.Add(-40 * 24 * time.Hour), "2026-01-23"},
		{now.Add(10 * time.Second), "just now"}, // small clock skew
		{now.Add(5 * time.Minute), "in 5m"},
	}
	for _, tt := range tests {
		if got := ago(now, tt.t); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestFormatting(t *testing.T) {
	durations := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "—"},
		{250 * time.Millisecond, "250ms"},
		{42 * time.Second, "42s"},
		{3*time.Minute + 7*time.Second, "3m07s"},
		{2*time.Hour + 5*time.Minute + 40*time.Second, "2h06m"},
	}
	for _, tt := range durations {
		if got := fmtDuration(tt.d); got != tt.want {
			t.Errorf("fmtDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	revs := map[string]string{
		"0123456789abcdef0123": "0123456789",
		"v1.2.3-release-name":  "v1.2.3-release-name",
		"abc":                  "abc",
	}
	for in, want := range revs {
		if got := shortRev(in); got != want {
			t.Errorf("shortRev(%q) = %q, want %q", in, got, want)
		}
	}
	sizes := map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 65536: "64.0 KiB", 3 << 20: "3.0 MiB"}
	for in, want := range sizes {
		if got := fmtBytes(in); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", in, got, want)
		}
	}
	reqs := []struct{ fact, c, want string }{
		{"os", "linux", "os=linux"},
		{"gcc", ">= 9", "gcc >= 9"},
		{"gtk", "*", "gtk"},
		{"docker", "!", "!docker"},
	}
	for _, tt := range reqs {
		r, err := drover.ParseRequirement(tt.fact, tt.c)
		must(t, err)
		if got := requirementString(r); got != tt.want {
			t.Errorf("requirementString(%s %s) = %q, want %q", tt.fact, tt.c, got, tt.want)
		}
	}
}

func TestTailWriter(t *testing.T) {
	tests := []struct {
		writes []string
		max    int
		want   string
	}{
		{[]string{"abc", "def"}, 10, "abcdef"},
		{[]string{"abc", "def"}, 4, "cdef"},
		{[]string{"abcdefgh"}, 3, "fgh"},
		{[]string{"ab", "cdefgh", "i"}, 3, "ghi"},
	}
	for _, tt := range tests {
		w := &tailWriter{max: tt.max}
		var total int64
		for _, s := range tt.writes {
			n, err := w.Write([]byte(s))
			if err != nil || n != len(s) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			total += int64(len(s))
		}
		if string(w.bytes()) != tt.want || w.total != total {
			t.Errorf("%q max %d: kept %q (total %d), want %q (total %d)", tt.writes, tt.max, w.bytes(), w.total, tt.want, total)
		}
	}
}
