package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/drover-ci/drover"
)

// Waterfall limits. The page reads builds newest first and stops at the
// first of: the limit, the start of the time window, the end of history.
const (
	waterfallDefaultBuilds = 100
	// waterfallMaxBuilds bounds one page: past this the table is too tall
	// to read anyway, and the render stays well under a second.
	waterfallMaxBuilds = 10000
	waterfallMaxHours  = 31 * 24
	// waterfallPageSize is how many builds one store read returns when a
	// time window is asked for; most windows fit in the first read.
	waterfallPageSize = 1000
	// waterfallSlot is the time resolution of the rows: builds that start
	// or end in the same minute share a row, which keeps the table short
	// without hiding order that matters to a reader.
	waterfallSlot = time.Minute
	// waterfallGap marks a visible break between rows that far apart, so
	// an idle night does not look like a busy minute.
	waterfallGap = time.Hour
)

// waterfallQuery is what the reader asked the waterfall to show.
type waterfallQuery struct {
	Limit int // most builds shown
	Hours int // 0: no time window, only the limit
}

// parseWaterfallQuery reads ?limit= and ?hours=.
func parseWaterfallQuery(r *http.Request) (waterfallQuery, error) {
	q := waterfallQuery{Limit: waterfallDefaultBuilds}
	v := r.URL.Query()
	if s := v.Get("hours"); s != "" {
		h, err := strconv.Atoi(s)
		if err != nil || h < 1 || h > waterfallMaxHours {
			return q, drover.Errorf(drover.Invalid, "hours must be a whole number from 1 to %d, not %q", waterfallMaxHours, s)
		}
		// A window asks for everything in it, up to the page's bound,
		// unless a limit is given too.
		q.Hours, q.Limit = h, waterfallMaxBuilds
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > waterfallMaxBuilds {
			return q, drover.Errorf(drover.Invalid, "limit must be a whole number from 1 to %d, not %q", waterfallMaxBuilds, s)
		}
		q.Limit = n
	}
	return q, nil
}

// waterfallPage is the data of the waterfall page.
type waterfallPage struct {
	Query   waterfallQuery
	Columns []wfColumn
	// Rows run newest first; each holds the cells that start in it.
	Rows   []wfRow
	Builds int // builds shown
	// Truncated says the limit cut the window short: older builds in it
	// exist but are not shown.
	Truncated bool
	Ranges    []wfRange // the links to other windows
}

// wfRange is one of the window choices above the table.
type wfRange struct {
	Label   string
	Href    string
	Current bool
}

// wfColumn is one builder's column, as wide as the most builds of it that
// ran at the same time.
type wfColumn struct {
	Name    string
	Classes []classPair
	Stable  bool
	// Removed is set for a builder that has builds in the window but is
	// no longer in the config: its column comes after the others.
	Removed bool
	// Last is the newest finished build in the window, nil if none.
	Last    *drover.Build
	Running int
	Lanes   int
}

// classPair is one axis=value of a builder's classes.
type classPair struct{ Axis, Value string }

// wfRow is one minute in which a build started or ended.
type wfRow struct {
	Time time.Time
	// NewDay is set on the first row of each day (and the first row), so
	// the axis shows the date only where it changes.
	NewDay bool
	// GapBelow marks a long idle stretch between this row and the next.
	GapBelow bool
	Cells    []wfCell
}

// wfCell is a build, or an empty stretch of one lane, spanning Span rows.
type wfCell struct {
	Build    *drover.Build
	Span     int
	ColStart bool // the first lane of its column: draws the column's edge
}

// wfBuild is a build placed on the rows: Top is the row of its end (or
// now), Bottom the row of its start.
type wfBuild struct {
	b           *drover.Build
	top, bottom int
}

func (s *server) handleWaterfall(w http.ResponseWriter, r *http.Request) {
	q, err := parseWaterfallQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	builds, truncated, err := s.waterfallBuilds(r, q, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := layoutWaterfall(s.b.Builders(), builds, now)
	p.Query, p.Truncated = q, truncated
	p.Ranges = waterfallRanges(q)
	s.render(w, r, http.StatusOK, "waterfall", "waterfall", "Waterfall", p)
}

// waterfallBuilds reads the builds the query asks for, newest first. With
// only a limit it is one store read; with a window it pages back until
// the builds start before the window.
func (s *server) waterfallBuilds(r *http.Request, q waterfallQuery, now time.Time) (builds []drover.Build, truncated bool, err error) {
	ctx := r.Context()
	st := s.b.Reader()
	if q.Hours == 0 {
		builds, err = st.ListBuilds(ctx, drover.BuildFilter{Limit: q.Limit})
		if err != nil {
			return nil, false, fmt.Errorf("list the newest %d builds: %w", q.Limit, err)
		}
		return builds, false, nil
	}
	since := now.Add(-time.Duration(q.Hours) * time.Hour)
	var before int64
	for {
		n := min(waterfallPageSize, q.Limit-len(builds)+1)
		page, err := st.ListBuilds(ctx, drover.BuildFilter{BeforeID: before, Limit: n})
		if err != nil {
			return nil, false, fmt.Errorf("list builds since %s: %w", since.UTC().Format(time.RFC3339), err)
		}
		older := false
		for _, b := range page {
			// IDs follow start order closely but not exactly (claims
			// race), so keep looking through the whole page; a build
			// still running or ending inside the window belongs on it.
			if b.Started.Before(since) {
				older = true
				if b.State == drover.BuildFinished && b.Finished.Before(since) {
					continue
				}
			}
			if len(builds) == q.Limit {
				return builds, true, nil
			}
			builds = append(builds, b)
		}
		if older || len(page) < n {
			return builds, false, nil
		}
		before = page[len(page)-1].ID
	}
}

// waterfallRanges lists the windows offered above the table.
func waterfallRanges(q waterfallQuery) []wfRange {
	rs := []wfRange{{Label: fmt.Sprintf("last %d builds", waterfallDefaultBuilds), Href: "/waterfall",
		Current: q.Hours == 0 && q.Limit == waterfallDefaultBuilds}}
	for _, h := range []int{6, 24, 72, 168} {
		label := fmt.Sprintf("%dh", h)
		if h >= 48 {
			label = fmt.Sprintf("%d days", h/24)
		}
		rs = append(rs, wfRange{Label: label, Href: fmt.Sprintf("/waterfall?hours=%d", h),
			Current: q.Hours == h && q.Limit == waterfallMaxBuilds})
	}
	return rs
}

// layoutWaterfall places builds (newest first, as the store returns them)
// in one column per builder and one row per minute in which a build
// started or ended. Builds of one builder that overlap in time (a pool of
// workers) go side by side in lanes of its column. The result is a table
// in which each build is one cell spanning its rows, so the page needs no
// script and no inline style to draw it.
func layoutWaterfall(builders []drover.Builder, builds []drover.Build, now time.Time) waterfallPage {
	p := waterfallPage{Builds: len(builds)}

	// Columns: the config's builders in config order, then builders that
	// left the config but still have builds here, by name.
	colOf := make(map[string]int, len(builders))
	for _, b := range builders {
		if _, dup := colOf[b.Name]; dup {
			continue
		}
		colOf[b.Name] = len(p.Columns)
		p.Columns = append(p.Columns, wfColumn{Name: b.Name, Classes: sortedClasses(b.Classes), Stable: b.Stable})
	}
	var removed []string
	for i := range builds {
		if _, ok := colOf[builds[i].Builder]; !ok {
			colOf[builds[i].Builder] = -1
			removed = append(removed, builds[i].Builder)
		}
	}
	slices.Sort(removed)
	for _, name := range removed {
		colOf[name] = len(p.Columns)
		p.Columns = append(p.Columns, wfColumn{Name: name, Removed: true})
	}

	// Rows: every minute in which something started or ended, newest
	// first. A running build ends "now", at the top.
	slot := func(t time.Time) int64 { return t.Unix() / int64(waterfallSlot/time.Second) }
	end := func(b *drover.Build) time.Time {
		if b.State == drover.BuildRunning || b.Finished.IsZero() {
			return now
		}
		return b.Finished
	}
	slots := make([]int64, 0, 2*len(builds))
	for i := range builds {
		slots = append(slots, slot(builds[i].Started), slot(end(&builds[i])))
	}
	slices.Sort(slots)
	slots = slices.Compact(slots)
	slices.Reverse(slots)
	rowOf := make(map[int64]int, len(slots))
	p.Rows = make([]wfRow, len(slots))
	for i, sl := range slots {
		rowOf[sl] = i
		t := time.Unix(sl*int64(waterfallSlot/time.Second), 0).UTC()
		p.Rows[i].Time = t
		if i == 0 || !sameDay(p.Rows[i-1].Time, t) {
			p.Rows[i].NewDay = true
		}
		if i > 0 && p.Rows[i-1].Time.Sub(t) >= waterfallGap {
			p.Rows[i-1].GapBelow = true
		}
	}

	// Group by column. The store's order (newest first) is kept, so the
	// first finished build met is the column's last result.
	perCol := make([][]wfBuild, len(p.Columns))
	for i := range builds {
		b := &builds[i]
		c := colOf[b.Builder]
		col := &p.Columns[c]
		if b.State == drover.BuildRunning {
			col.Running++
		} else if col.Last == nil {
			col.Last = b
		}
		top, bottom := rowOf[slot(end(b))], rowOf[slot(b.Started)]
		if top > bottom {
			// A clock step back can make a build end before it began;
			// draw it one row tall rather than not at all.
			top = bottom
		}
		perCol[c] = append(perCol[c], wfBuild{b: b, top: top, bottom: bottom})
	}

	// Lanes: interval partitioning, greedy by top row, gives each column
	// the fewest lanes in which no two builds overlap.
	for c := range p.Columns {
		wbs := perCol[c]
		slices.SortStableFunc(wbs, func(a, b wfBuild) int {
			return cmp.Or(cmp.Compare(a.top, b.top), cmp.Compare(a.bottom, b.bottom))
		})
		var lanes [][]wfBuild
		for _, wb := range wbs {
			placed := false
			for l := range lanes {
				if lanes[l][len(lanes[l])-1].bottom < wb.top {
					lanes[l] = append(lanes[l], wb)
					placed = true
					break
				}
			}
			if !placed {
				lanes = append(lanes, []wfBuild{wb})
			}
		}
		if len(lanes) == 0 {
			lanes = [][]wfBuild{nil}
		}
		p.Columns[c].Lanes = len(lanes)
		if len(p.Rows) == 0 {
			continue
		}
		// Cells are appended to the row they start in, column by column
		// and lane by lane: that is the order in which an HTML table
		// fills the slots its rowspans leave free.
		for l, lane := range lanes {
			cursor := 0
			add := func(row int, cell wfCell) {
				cell.ColStart = l == 0
				p.Rows[row].Cells = append(p.Rows[row].Cells, cell)
			}
			for _, wb := range lane {
				if wb.top > cursor {
					add(cursor, wfCell{Span: wb.top - cursor})
				}
				add(wb.top, wfCell{Build: wb.b, Span: wb.bottom - wb.top + 1})
				cursor = wb.bottom + 1
			}
			if cursor < len(p.Rows) {
				add(cursor, wfCell{Span: len(p.Rows) - cursor})
			}
		}
	}
	return p
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd
}

// sortedClasses lists a builder's classes by axis.
func sortedClasses(m map[string]string) []classPair {
	out := make([]classPair, 0, len(m))
	for k, v := range m {
		out = append(out, classPair{k, v})
	}
	slices.SortFunc(out, func(a, b classPair) int { return cmp.Compare(a.Axis, b.Axis) })
	return out
}
