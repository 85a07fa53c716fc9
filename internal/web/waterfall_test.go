package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// checkTable lays p's cells out as a browser lays out a table with
// rowspans, and fails unless every slot of every row is filled exactly
// once and each build lands in its own builder's column, in rows that
// run from its end to its start.
func checkTable(t *testing.T, p waterfallPage) {
	t.Helper()
	width := 0
	colOfSlot := []int{}
	for c, col := range p.Columns {
		if col.Lanes < 1 {
			t.Fatalf("column %s has %d lanes", col.Name, col.Lanes)
		}
		width += col.Lanes
		for range col.Lanes {
			colOfSlot = append(colOfSlot, c)
		}
	}
	// busy[slot] is the first row the slot is free again.
	busy := make([]int, width)
	for r, row := range p.Rows {
		slot := 0
		for i, cell := range row.Cells {
			for slot < width && busy[slot] > r {
				slot++
			}
			if slot == width {
				t.Fatalf("row %d: cell %d has no free slot", r, i)
			}
			if cell.Span < 1 || r+cell.Span > len(p.Rows) {
				t.Fatalf("row %d: cell %d spans %d rows of %d", r, i, cell.Span, len(p.Rows))
			}
			col := p.Columns[colOfSlot[slot]]
			if cell.ColStart != (slot == 0 || colOfSlot[slot-1] != colOfSlot[slot]) {
				t.Errorf("row %d slot %d: ColStart = %v", r, slot, cell.ColStart)
			}
			if b := cell.Build; b != nil {
				if b.Builder != col.Name {
					t.Errorf("build %s #%d drawn in column %s", b.Builder, b.Number, col.Name)
				}
				if got := p.Rows[r+cell.Span-1].Time; !got.Equal(b.Started.UTC().Truncate(time.Minute)) {
					t.Errorf("build %s #%d: bottom row %v, started %v", b.Builder, b.Number, got, b.Started)
				}
			}
			busy[slot] = r + cell.Span
			slot++
		}
		for s := range width {
			if busy[s] <= r {
				t.Fatalf("row %d: slot %d (column %s) left empty", r, s, p.Columns[colOfSlot[s]].Name)
			}
		}
	}
}

func TestLayoutWaterfall(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 30, 20, 0, time.UTC)
	at := func(min int) time.Time { return now.Add(time.Duration(min) * time.Minute) }
	builders := []drover.Builder{
		{Name: "linux", Classes: map[string]string{"os": "linux", "cc": "gcc"}, Stable: true},
		{Name: "mac"},
		{Name: "idle"},
	}
	fin := func(id int64, builder string, n int, worker string, start, end int, r drover.Result) drover.Build {
		return drover.Build{ID: id, Builder: builder, Number: n, Worker: worker, State: drover.BuildFinished,
			Result: r, Started: at(start), Finished: at(end)}
	}
	// Newest first, as the store returns them.
	builds := []drover.Build{
		{ID: 9, Builder: "linux", Number: 5, Worker: "w3", State: drover.BuildRunning, Started: at(-3)},
		{ID: 8, Builder: "linux", Number: 4, Worker: "w2", State: drover.BuildRunning, Started: at(-5)},
		fin(7, "gone", 1, "w1", -20, -18, drover.Success),
		fin(6, "linux", 3, "w1", -30, -10, drover.Failure),
		fin(5, "mac", 2, "m1", -40, -35, drover.Warnings),
		fin(4, "linux", 2, "w2", -40, -32, drover.Success),
		fin(3, "mac", 1, "m1", -26*60, -26*60+4, drover.Success), // the day before, after a long gap
		fin(2, "linux", 1, "w1", -26*60, -26*60, drover.Exception),
	}
	p := layoutWaterfall(builders, builds, now)
	checkTable(t, p)

	var names []string
	for _, c := range p.Columns {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, ","), "linux,mac,idle,gone"; got != want {
		t.Errorf("columns %s, want %s (config order, then removed builders)", got, want)
	}
	cols := map[string]wfColumn{}
	for _, c := range p.Columns {
		cols[c.Name] = c
	}
	// Three linux builds overlap around minute -5 to -10: two running and
	// #3 ending at -10 while #4 started at -5.
	if l := cols["linux"].Lanes; l != 2 {
		t.Errorf("linux has %d lanes, want 2", l)
	}
	if l := cols["idle"].Lanes; l != 1 {
		t.Errorf("idle has %d lanes, want 1", l)
	}
	if c := cols["linux"]; c.Last == nil || c.Last.Number != 3 || c.Running != 2 || !c.Stable {
		t.Errorf("linux header: last %+v, running %d, stable %v", c.Last, c.Running, c.Stable)
	}
	if c := cols["gone"]; !c.Removed {
		t.Errorf("gone is not marked removed")
	}
	if c := cols["idle"]; c.Last != nil || c.Running != 0 {
		t.Errorf("idle header: last %+v, running %d", c.Last, c.Running)
	}
	if got := fmt.Sprint(cols["linux"].Classes); got != "[{cc gcc} {os linux}]" {
		t.Errorf("linux classes %s", got)
	}
	// Rows: newest first; "now" on top for the running builds.
	if !p.Rows[0].Time.Equal(now.Truncate(time.Minute)) {
		t.Errorf("top row %v, want now", p.Rows[0].Time)
	}
	for i := 1; i < len(p.Rows); i++ {
		if !p.Rows[i].Time.Before(p.Rows[i-1].Time) {
			t.Fatalf("rows out of order at %d: %v after %v", i, p.Rows[i].Time, p.Rows[i-1].Time)
		}
	}
	last := len(p.Rows) - 1
	// The day before has two rows; the upper one, where the day changes
	// going down, carries the date.
	for i, r := range p.Rows {
		if want := i == 0 || i == last-1; r.NewDay != want {
			t.Errorf("row %d (%v): NewDay %v", i, r.Time, r.NewDay)
		}
	}
	gaps := 0
	for _, r := range p.Rows {
		if r.GapBelow {
			gaps++
		}
	}
	if gaps != 1 || !p.Rows[last-2].GapBelow {
		t.Errorf("%d gap marks, want one above the day before", gaps)
	}

	// No builds: columns with one lane, no rows.
	empty := layoutWaterfall(builders, nil, now)
	if len(empty.Rows) != 0 || len(empty.Columns) != 3 {
		t.Errorf("empty waterfall: %d rows, %d columns", len(empty.Rows), len(empty.Columns))
	}
	checkTable(t, empty)

	// A build that ends before it starts (a clock step) still gets a cell.
	odd := []drover.Build{fin(1, "mac", 1, "m1", -5, -9, drover.Success)}
	checkTable(t, layoutWaterfall(builders, odd, now))
}

// TestLayoutWaterfallPool checks many overlapping builds of one builder:
// each gets its own lane while it runs, and lanes are reused after.
func TestLayoutWaterfallPool(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	var builds []drover.Build
	for i := range 30 {
		start := now.Add(-time.Duration(100-i*3) * time.Minute)
		builds = append(builds, drover.Build{ID: int64(100 - i), Builder: "pool", Number: 30 - i,
			Worker: fmt.Sprintf("w%d", i%4), State: drover.BuildFinished, Result: drover.Success,
			Started: start, Finished: start.Add(10 * time.Minute)})
	}
	p := layoutWaterfall([]drover.Builder{{Name: "pool"}}, builds, now)
	checkTable(t, p)
	// Builds start every 3 minutes and run 10: at most four overlap.
	if l := p.Columns[0].Lanes; l != 4 {
		t.Errorf("pool has %d lanes, want 4", l)
	}
}

func TestWaterfallPage(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		path   string
		status int
		want   []string
		absent []string
	}{
		{"default", "/waterfall", 200, []string{
			`aria-current="page">Waterfall`, `id="waterfall" data-fragment="waterfall"`,
			`data-events="build.started build.finished config.loaded"`,
			`<a href="/builders/linux-gcc">linux-gcc</a>`, `<span class="muted">compiler=</span>gcc`, `tag stable`,
			`title="last result: #1 failure"`,
			fmt.Sprintf(`href="/builders/linux-gcc/builds/%d"`, f.running.Number), `href="/workers/w1">w1</a>`,
			`href="/workers/w2">w2</a>`, `wf-build r-running`, `wf-build r-failure`, `wf-build r-success`,
			"1 running", `title="no finished build in this window">no result`,
			`href="/waterfall" aria-current="page">last 100 builds`,
		}, nil},
		{"limited", "/waterfall?limit=1", 200, []string{`wf-build r-running`}, []string{`wf-build r-failure`}},
		{"window", "/waterfall?hours=6", 200, []string{`wf-build r-failure`, `href="/waterfall?hours=6" aria-current="page">6h`}, nil},
		{"window and limit", "/waterfall?hours=24&limit=2", 200, []string{"Showing the newest 2 builds"}, []string{`wf-build r-failure`}},
		{"bad limit", "/waterfall?limit=0", 400, []string{"limit must be a whole number from 1 to 10000"}, nil},
		{"huge limit", "/waterfall?limit=99999999", 400, []string{"limit must be"}, nil},
		{"bad hours", "/waterfall?hours=x", 400, []string{"hours must be a whole number"}, nil},
		{"fragment", "/waterfall?fragment=waterfall", 200, []string{`<table class="waterfall">`}, []string{"<html", "topbar"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.get(t, tt.path)
			if r.status != tt.status {
				t.Fatalf("GET %s: status %d, want %d\n%s", tt.path, r.status, tt.status, r.body)
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
	// The hostile builder is in the table, escaped, and linked by path.
	r := f.get(t, "/waterfall")
	for _, w := range []string{
		`href="/builders/%3Cscript%3Ealert%28%22builder%22%29%3C%2Fscript%3E"`,
		"&lt;script&gt;alert(&#34;builder&#34;)&lt;/script&gt;",
	} {
		if !strings.Contains(r.body, w) {
			t.Errorf("waterfall: missing escaped hostile builder %q", w)
		}
	}
	// Three builds in the fixture's window; each is one cell.
	if n := strings.Count(r.body, `<td class="wf-build`); n != 3 {
		t.Errorf("%d build cells, want 3", n)
	}
}

func TestWaterfallWindowPaging(t *testing.T) {
	b := newTestBackend(t)
	b.builders = []drover.Builder{{Name: "a"}}
	ctx := context.Background()
	now := time.Now()
	// Old builds first (lower IDs), then a recent burst larger than one
	// store page, so the window needs several reads.
	for i := range 3 {
		old := b.startBuild(t, "a", "w1", now.Add(-time.Duration(50+i)*time.Hour))
		must(t, b.st.Builds("").FinishBuild(ctx, old.ID, drover.Success, "", old.Started.Add(time.Minute), false))
	}
	const recent = waterfallPageSize + 20
	for i := range recent {
		bd := b.startBuild(t, "a", "w1", now.Add(-time.Duration(recent-i)*time.Second))
		must(t, b.st.Builds("").FinishBuild(ctx, bd.ID, drover.Success, "", bd.Started.Add(time.Second), false))
	}
	srv, err := newServer(b, testLogger(t), time.Now)
	must(t, err)
	req, err := http.NewRequest(http.MethodGet, "/waterfall?hours=24", nil)
	must(t, err)
	got, truncated, err := srv.waterfallBuilds(req, waterfallQuery{Hours: 24, Limit: waterfallMaxBuilds}, now)
	must(t, err)
	if len(got) != recent || truncated {
		t.Errorf("24h window: %d builds (truncated %v), want %d", len(got), truncated, recent)
	}
	got, truncated, err = srv.waterfallBuilds(req, waterfallQuery{Hours: 24 * 7, Limit: waterfallMaxBuilds}, now)
	must(t, err)
	if len(got) != recent+3 || truncated {
		t.Errorf("7 day window: %d builds (truncated %v), want %d", len(got), truncated, recent+3)
	}
	got, truncated, err = srv.waterfallBuilds(req, waterfallQuery{Hours: 24, Limit: 10}, now)
	must(t, err)
	if len(got) != 10 || !truncated {
		t.Errorf("limited window: %d builds (truncated %v), want 10, truncated", len(got), truncated)
	}
}

// benchBackend serves the templates' needs and nothing else: the
// benchmark measures layout and rendering, not the database.
type benchBackend struct {
	api.Backend
	builders []drover.Builder
}

func (b benchBackend) Builders() []drover.Builder { return b.builders }
func (b benchBackend) Title() string              { return "Bench" }
func (b benchBackend) URL() string                { return "" }

// BenchmarkWaterfall lays out and renders a waterfall of 10,000 builds on
// 200 builders, with pools of workers running builds side by side.
func BenchmarkWaterfall(b *testing.B) {
	const nBuilders, nBuilds = 200, 10000
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	builders := make([]drover.Builder, nBuilders)
	for i := range builders {
		builders[i] = drover.Builder{
			Name:    fmt.Sprintf("builder-%03d", i),
			Classes: map[string]string{"compiler": []string{"gcc", "clang"}[i%2], "linkage": []string{"shared", "static"}[i/2%2]},
			Stable:  i%3 == 0,
		}
	}
	results := []drover.Result{drover.Success, drover.Success, drover.Success, drover.Warnings, drover.Failure, drover.Exception}
	builds := make([]drover.Build, nBuilds)
	for i := range builds {
		// Newest first: build i started i*20s before now and ran 5-25 min.
		id := int64(nBuilds - i)
		start := now.Add(-time.Duration(i) * 20 * time.Second)
		bd := drover.Build{ID: id, Builder: builders[i%nBuilders].Name, Number: nBuilds/nBuilders - i/nBuilders,
			Worker: fmt.Sprintf("worker-%02d", i%37), Started: start, State: drover.BuildFinished,
			Result: results[i%len(results)], Summary: "compile failed"}
		if i < 40 {
			bd.State, bd.Result = drover.BuildRunning, drover.ResultNone
		} else {
			bd.Finished = start.Add(time.Duration(5+i%20) * time.Minute)
		}
		builds[i] = bd
	}
	s, err := newServer(benchBackend{builders: builders}, nil, func() time.Time { return now })
	if err != nil {
		b.Fatal(err)
	}
	t := s.tmpl["waterfall"]
	var size int
	b.ReportAllocs()
	for b.Loop() {
		p := layoutWaterfall(builders, builds, now)
		cw := &countWriter{}
		if err := t.ExecuteTemplate(cw, "layout", layoutData{Title: "Bench", Asset: s.asset, Page: p}); err != nil {
			b.Fatal(err)
		}
		size = cw.n
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB/page")
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// TestClassesPage checks the classes page over the fixture, whose
// builders have a compiler axis (gcc, clang), a linkage axis on one of
// them, and a hostile builder with no classes.
func TestClassesPage(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		path   string
		want   []string
		absent []string
	}{
		{"defaults", "/classes", []string{
			`aria-current="page">Classes`, `id="classes" data-fragment="classes"`,
			`<option value="compiler" selected>`, `<option value="linkage" selected>`,
			`<a href="/builders/linux-gcc">linux-gcc</a>`, `badge r-failure">failure`,
			`<a href="/builders/macos-clang">macos-clang</a>`, `title="no finished build">none`, `class="cls-running r-running"`,
			`title="builders without this axis">other`, `href="/classes?x=linkage&amp;y=compiler">swap axes`,
			`cls-cell w-r-failure`, "1 builder without classes.",
		}, nil},
		{"chosen", "/classes?x=linkage&y=compiler", []string{`<option value="linkage" selected>`, `<b>compiler</b>`}, nil},
		{"unknown axis", "/classes?x=" + url.QueryEscape(`<b>os</b>`), []string{
			`No builder has the axis &#34;&lt;b&gt;os&lt;/b&gt;&#34;.`, `<option value="compiler" selected>`,
		}, nil},
		{"same axis twice", "/classes?x=compiler&y=compiler", []string{
			`Both axes were &#34;compiler&#34;`, `<option value="linkage" selected>`,
		}, nil},
		{"fragment", "/classes?fragment=classes", []string{`<table class="grid classes">`}, []string{"<html", "topbar"}},
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
	r := f.get(t, "/classes")
	if !strings.Contains(r.body, "&lt;script&gt;alert(&#34;builder&#34;)&lt;/script&gt;") {
		t.Errorf("the hostile builder is not in the other corner, escaped")
	}
}

func TestLayoutClasses(t *testing.T) {
	builders := []drover.Builder{
		{Name: "gcc-12-shared", Classes: map[string]string{"compiler": "gcc-12", "linkage": "shared", "os": "linux"}},
		{Name: "gcc-9-static", Classes: map[string]string{"compiler": "gcc-9", "linkage": "static", "os": "linux"}},
		{Name: "clang-shared", Classes: map[string]string{"compiler": "clang", "linkage": "shared"}, Stable: true},
		{Name: "msvc", Classes: map[string]string{"compiler": "msvc"}},
		{Name: "docs"},
	}
	last := map[string]*drover.Build{
		"gcc-12-shared": {Builder: "gcc-12-shared", Number: 3, State: drover.BuildFinished, Result: drover.Success},
		"gcc-9-static":  {Builder: "gcc-9-static", Number: 1, State: drover.BuildFinished, Result: drover.Failure},
	}
	running := map[string]*drover.Build{
		"clang-shared": {Builder: "clang-shared", Number: 2, State: drover.BuildRunning},
	}
	// grid renders a page's grid as "y: x=builder,builder; …" lines.
	grid := func(p classesPage) string {
		var lines []string
		label := func(v axisValue) string {
			if v.Missing {
				return "other"
			}
			return v.Value
		}
		for _, row := range p.YRows {
			var cells []string
			for i, c := range row.Cells {
				var names []string
				for _, b := range c.Builders {
					names = append(names, b.Name)
				}
				if len(names) > 0 {
					cells = append(cells, label(p.XValues[i])+"="+strings.Join(names, ",")+"("+c.Worst+")")
				}
			}
			lines = append(lines, label(row.Value)+": "+strings.Join(cells, " "))
		}
		return strings.Join(lines, "\n")
	}
	tests := []struct {
		name, x, y   string
		wantX, wantY string
		notice       string
		grid         string
	}{
		{"defaults", "", "", "compiler", "linkage", "", "" +
			"shared: clang=clang-shared() gcc-12=gcc-12-shared(r-success)\n" +
			"static: gcc-9=gcc-9-static(r-failure)\n" +
			"other: msvc=msvc() other=docs()"},
		{"chosen", "os", "compiler", "os", "compiler", "", "" +
			"clang: other=clang-shared()\n" +
			"gcc-9: linux=gcc-9-static(r-failure)\n" +
			"gcc-12: linux=gcc-12-shared(r-success)\n" +
			"msvc: other=msvc()\n" +
			"other: other=docs()"},
		{"only x", "linkage", "", "linkage", "compiler", "", ""},
		{"unknown", "arch", "", "compiler", "linkage", `No builder has the axis "arch".`, ""},
		{"same", "os", "os", "os", "compiler", `Both axes were "os"; pick two different ones.`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := layoutClasses(builders, last, running, tt.x, tt.y)
			if p.X != tt.wantX || p.Y != tt.wantY {
				t.Errorf("axes %s × %s, want %s × %s", p.X, p.Y, tt.wantX, tt.wantY)
			}
			if p.Notice != tt.notice {
				t.Errorf("notice %q, want %q", p.Notice, tt.notice)
			}
			if tt.grid != "" {
				if got := grid(p); got != tt.grid {
					t.Errorf("grid:\n%s\nwant:\n%s", got, tt.grid)
				}
			}
			if p.Unclassed != 1 {
				t.Errorf("unclassed %d, want 1", p.Unclassed)
			}
		})
	}
	// Axes are listed most used first, values in natural order.
	p := layoutClasses(builders, last, running, "", "")
	var axes []string
	for _, a := range p.Axes {
		var vs []string
		for _, v := range a.Values {
			vs = append(vs, fmt.Sprintf("%s:%d", v.Value, v.Builders))
		}
		axes = append(axes, a.Name+"="+strings.Join(vs, ","))
	}
	if got, want := strings.Join(axes, " "), "compiler=clang:1,gcc-9:1,gcc-12:1,msvc:1 linkage=shared:2,static:1 os=linux:2"; got != want {
		t.Errorf("axes %s, want %s", got, want)
	}
	// One axis only: a single row.
	one := layoutClasses([]drover.Builder{{Name: "a", Classes: map[string]string{"cc": "gcc"}}}, nil, nil, "", "")
	if one.X != "cc" || one.Y != "" || len(one.YRows) != 1 || len(one.YRows[0].Cells) != 1 {
		t.Errorf("one axis: %s × %q, %d rows", one.X, one.Y, len(one.YRows))
	}
	// No classes at all: no grid.
	none := layoutClasses([]drover.Builder{{Name: "a"}}, nil, nil, "x", "")
	if none.X != "" || none.YRows != nil {
		t.Errorf("no classes: %+v", none)
	}
}

func TestNaturalCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"gcc-9", "gcc-12", -1},
		{"gcc-12", "gcc-9", 1},
		{"a", "a", 0},
		{"a", "ab", -1},
		{"1.10", "1.9", 1},
		{"x01", "x1", -1}, // equal numbers: the text breaks the tie
		{"clang", "gcc", -1},
		{"99999999999999999999", "1", 1}, // too long to parse: text order
	}
	for _, tt := range tests {
		if got := naturalCompare(tt.a, tt.b); got != tt.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
