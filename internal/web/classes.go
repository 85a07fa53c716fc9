package web

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/drover-ci/drover"
)

// classesRecent is how many recent builds the classes page reads in one
// go to find each builder's last build; builders not among them are
// looked up one by one, which only quiet builders cost.
const classesRecent = 1000

// classesPage is the data of the classes page: builders' last results on
// a grid of two class axes, and every axis with its values.
type classesPage struct {
	Axes []axisView
	// X and Y are the axes of the grid; Y is empty when the builders have
	// only one axis between them.
	X, Y string
	// Notice explains a choice the page made for the reader, such as
	// ignoring an axis no builder has.
	Notice  string
	XValues []axisValue
	YRows   []classRow
	// Unclassed counts builders with no classes at all; they sit in the
	// "other" corner of the grid.
	Unclassed int
	Swap      string // link with the axes swapped
}

// axisView is one axis with the values builders give it.
type axisView struct {
	Name     string
	Builders int
	Values   []axisValue
	// Href shows the grid by this axis, keeping Y; empty for the axes
	// shown.
	Href string
}

// axisValue is one value of an axis, or, with Missing, the builders that
// lack the axis ("other").
type axisValue struct {
	Value    string
	Missing  bool
	Builders int
}

// classRow is one value of the Y axis across the X values.
type classRow struct {
	Value axisValue
	Cells []classCell
}

// classCell holds the builders with one (x, y) pair.
type classCell struct {
	Builders []classBuilder
	// Worst is the status class of the worst last result in the cell, to
	// tint it; empty when no builder in it has finished a build.
	Worst string
}

// classBuilder is a builder in a cell, with its newest finished build
// (its last result) and its newest running one, each nil if none.
type classBuilder struct {
	Name    string
	Stable  bool
	Last    *drover.Build
	Running *drover.Build
}

func (s *server) handleClasses(w http.ResponseWriter, r *http.Request) {
	builders := s.b.Builders()
	last, running, err := s.lastBuilds(r, builders)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	p := layoutClasses(builders, last, running, q.Get("x"), q.Get("y"))
	s.render(w, r, http.StatusOK, "classes", "classes", "Classes", p)
}

// lastBuilds finds each builder's newest finished build, and newest
// running one: one read of the recent builds, then one small read per
// builder with no finished build among them.
func (s *server) lastBuilds(r *http.Request, builders []drover.Builder) (last, running map[string]*drover.Build, err error) {
	ctx := r.Context()
	st := s.b.Reader()
	recent, err := st.ListBuilds(ctx, drover.BuildFilter{Limit: classesRecent})
	if err != nil {
		return nil, nil, fmt.Errorf("list recent builds: %w", err)
	}
	last = make(map[string]*drover.Build, len(builders))
	running = make(map[string]*drover.Build)
	for i := range recent {
		b := &recent[i]
		m := last
		if b.State == drover.BuildRunning {
			m = running
		}
		if _, ok := m[b.Builder]; !ok {
			m[b.Builder] = b
		}
	}
	if len(recent) < classesRecent {
		// That was all of history: a builder not in it never finished.
		return last, running, nil
	}
	for _, b := range builders {
		if _, ok := last[b.Name]; ok {
			continue
		}
		bs, err := st.ListBuilds(ctx, drover.BuildFilter{Builder: b.Name, State: drover.BuildFinished, Limit: 1})
		if err != nil {
			return nil, nil, fmt.Errorf("last build of %s: %w", b.Name, err)
		}
		if len(bs) > 0 {
			last[b.Name] = &bs[0]
		}
	}
	return last, running, nil
}

// layoutClasses builds the page for axes x and y (either may be empty or
// unknown, and then the axes with the most builders are used).
func layoutClasses(builders []drover.Builder, last, running map[string]*drover.Build, x, y string) classesPage {
	var p classesPage

	// Every axis and value, with how many builders carry each.
	type axisCount struct {
		builders int
		values   map[string]int
	}
	axes := make(map[string]*axisCount)
	for _, b := range builders {
		if len(b.Classes) == 0 {
			p.Unclassed++
		}
		for k, v := range b.Classes {
			a := axes[k]
			if a == nil {
				a = &axisCount{values: make(map[string]int)}
				axes[k] = a
			}
			a.builders++
			a.values[v]++
		}
	}
	for name, a := range axes {
		av := axisView{Name: name, Builders: a.builders}
		for v, n := range a.values {
			av.Values = append(av.Values, axisValue{Value: v, Builders: n})
		}
		slices.SortFunc(av.Values, func(a, b axisValue) int { return naturalCompare(a.Value, b.Value) })
		p.Axes = append(p.Axes, av)
	}
	// Most used axes first: they are the defaults, and the list reads as
	// "what this matrix varies most".
	slices.SortFunc(p.Axes, func(a, b axisView) int {
		return cmp.Or(cmp.Compare(b.Builders, a.Builders), naturalCompare(a.Name, b.Name))
	})

	// Choose the axes: the reader's if builders have them, else the most
	// used ones not already taken. A bad choice (an old bookmark after a
	// config change) gets a note and the defaults, not an error page.
	var notices []string
	if x != "" && axes[x] == nil {
		notices = append(notices, fmt.Sprintf("No builder has the axis %q.", x))
		x = ""
	}
	if y != "" && axes[y] == nil {
		notices = append(notices, fmt.Sprintf("No builder has the axis %q.", y))
		y = ""
	}
	if x != "" && x == y {
		notices = append(notices, fmt.Sprintf("Both axes were %q; pick two different ones.", x))
		y = ""
	}
	p.Notice = strings.Join(notices, " ")
	p.X, p.Y = x, y
	for _, a := range p.Axes {
		if p.X == "" && a.Name != p.Y {
			p.X = a.Name
		} else if p.Y == "" && a.Name != p.X {
			p.Y = a.Name
		}
	}
	if p.X == "" {
		return p
	}
	for i := range p.Axes {
		a := &p.Axes[i]
		if a.Name == p.X || a.Name == p.Y {
			continue
		}
		q := url.Values{"x": {a.Name}}
		if p.Y != "" {
			q.Set("y", p.Y)
		}
		a.Href = "/classes?" + q.Encode()
	}
	if p.Y != "" {
		p.Swap = "/classes?" + url.Values{"x": {p.Y}, "y": {p.X}}.Encode()
	}

	// The grid: the axes' values, and "other" for builders without one.
	values := func(axis string) []axisValue {
		var vs []axisValue
		if a := axes[axis]; a != nil {
			for _, av := range p.Axes {
				if av.Name == axis {
					vs = slices.Clone(av.Values)
				}
			}
			if missing := len(builders) - a.builders; missing > 0 {
				vs = append(vs, axisValue{Missing: true, Builders: missing})
			}
		} else {
			vs = []axisValue{{Missing: true, Builders: len(builders)}}
		}
		return vs
	}
	p.XValues = values(p.X)
	yValues := values(p.Y)
	index := func(vs []axisValue, b drover.Builder, axis string) int {
		v, ok := b.Classes[axis]
		for i, av := range vs {
			if (!ok && av.Missing) || (ok && !av.Missing && av.Value == v) {
				return i
			}
		}
		return len(vs) - 1
	}
	p.YRows = make([]classRow, len(yValues))
	for i, yv := range yValues {
		p.YRows[i] = classRow{Value: yv, Cells: make([]classCell, len(p.XValues))}
	}
	for _, b := range builders {
		cell := &p.YRows[index(yValues, b, p.Y)].Cells[index(p.XValues, b, p.X)]
		cell.Builders = append(cell.Builders, classBuilder{Name: b.Name, Stable: b.Stable, Last: last[b.Name], Running: running[b.Name]})
	}
	for i := range p.YRows {
		for j := range p.YRows[i].Cells {
			p.YRows[i].Cells[j].Worst = worstClass(p.YRows[i].Cells[j].Builders)
		}
	}
	return p
}

// alarm orders results for tinting a cell: what a reader of a matrix
// must look at first. It differs from drover.Worst, which ranks a
// cancelled build above a failed one for merging.
func alarm(r drover.Result) int {
	switch r {
	case drover.Failure:
		return 5
	case drover.Exception:
		return 4
	case drover.Warnings:
		return 3
	case drover.Cancelled, drover.Retry:
		return 2
	case drover.Success, drover.Skipped:
		return 1
	}
	return 0
}

// worstClass is the status class of the most alarming last result among
// bs, or "" when none has finished a build.
func worstClass(bs []classBuilder) string {
	worst := drover.ResultNone
	for _, b := range bs {
		if b.Last != nil && alarm(b.Last.Result) > alarm(worst) {
			worst = b.Last.Result
		}
	}
	if worst == drover.ResultNone {
		return ""
	}
	return resultClass(string(worst))
}

// naturalCompare orders strings as people expect version-like values:
// runs of digits compare by number, so "gcc-9" comes before "gcc-12".
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, ea := strconv.ParseUint(a[:da], 10, 64)
			nb, eb := strconv.ParseUint(b[:db], 10, 64)
			if ea == nil && eb == nil && na != nb {
				return cmp.Compare(na, nb)
			}
			if c := cmp.Compare(a[:da], b[:db]); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return i
}
