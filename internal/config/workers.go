package config

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/timewindow"
)

// WorkerConfig is what the master's config says of a named worker. Its
// facts are authoritative: they override whatever the worker reports, so
// membership of a trusted pool cannot be claimed by a worker itself. Its
// downtime is the operator's: in a downtime window the worker takes no new
// build, whatever the worker's own availability (DECISIONS 20).
type WorkerConfig struct {
	Name  string       `json:"name"`
	Facts drover.Facts `json:"facts"`
	// Downtime are the windows in which the master gives the worker no
	// new build (running ones finish).
	Downtime []timewindow.Window `json:"downtime,omitempty"`
	// Timezone is the zone the worker's downtime windows without one of
	// their own are read in, as drover.worker gives it; "" is the
	// master's (drover.master(timezone = ...)), else UTC.
	Timezone string `json:"timezone,omitempty"`
	Pos      string `json:"pos"`

	zone *time.Location // the zone the downtime is read in, resolved at the end of the load
}

// configZone loads a zone named in the config. The machine's local time is
// refused: it differs between the masters of a site, and between a master
// and the laptop running checkconfig.
func configZone(name string) (*time.Location, error) {
	if strings.EqualFold(name, "local") {
		return nil, drover.Errorf(drover.Invalid, "time zone %q: the machine's local time differs from machine to machine; name a zone such as Europe/Berlin or UTC", name)
	}
	return timewindow.LoadZone(name)
}

// workerFn implements drover.worker(name, facts = {fact: value or [values]},
// downtime = [window...], timezone = "").
func (l *loader) workerFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	w := WorkerConfig{Pos: s.line(), Facts: drover.Facts{}}
	var facts, downtime starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "name", &w.Name, "facts?", &facts,
		"downtime?", &downtime, "timezone?", &w.Timezone); err != nil {
		return nil, err
	}
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s %q: "+format, append([]any{fn.Name(), w.Name}, args...)...)
	}
	record := true
	switch first, dup := l.workerPos[w.Name]; {
	case !workerNameRE.MatchString(w.Name):
		errorf("bad worker name (want [A-Za-z0-9][A-Za-z0-9_.-]*)")
		record = false
	case dup:
		errorf("worker configured twice (first at %s)", first)
		record = false
	}
	if !isNone(facts) {
		d, ok := facts.(*starlark.Dict)
		if !ok {
			return nil, fmt.Errorf("%s: for parameter facts: got %s, want dict", fn.Name(), facts.Type())
		}
		for _, item := range d.Items() {
			k, ok := starlark.AsString(item[0])
			if !ok || !factNameRE.MatchString(k) {
				errorf("facts: bad fact name %s (want [a-z0-9_.-]+)", item[0])
				continue
			}
			var values []string
			if v, ok := starlark.AsString(item[1]); ok {
				values = []string{v}
			} else if list, err := toStringList(item[1]); err == nil {
				values = list
			} else {
				errorf("facts %s: want a string or a list of strings, got %s", k, item[1].Type())
				continue
			}
			w.Facts[k] = values
		}
	}
	if w.Timezone != "" {
		if _, err := configZone(w.Timezone); err != nil {
			errorf("timezone: %s", drover.Message(err))
		}
	}
	if !isNone(downtime) {
		specs, err := toStringList(downtime)
		if v, ok := starlark.AsString(downtime); ok {
			specs, err = []string{v}, nil
		}
		if err != nil {
			errorf("downtime: %v (want a list of windows such as \"Wed 08:00-10:00\")", err)
		}
		for i, spec := range specs {
			win, err := timewindow.Parse(spec)
			switch {
			case err != nil:
				errorf("downtime[%d]: %s", i, drover.Message(err))
			case win.Zone == "Local":
				errorf("downtime[%d]: time window %q: the machine's local time differs from machine to machine; name a zone such as Europe/Berlin or UTC", i, spec)
			default:
				w.Downtime = append(w.Downtime, win)
			}
		}
	}
	if record {
		l.workers = append(l.workers, w)
		l.workerPos[w.Name] = w.Pos
	}
	return starlark.None, nil
}

// sortedWorkers returns the configured workers by name, each with the
// zone its downtime is read in: its own timezone, else the master's
// (masterZone, "" for none), else UTC. The zones were checked as they were
// given, so one that fails to load here was reported already.
func sortedWorkers(ws []WorkerConfig, masterZone string) []WorkerConfig {
	out := append([]WorkerConfig{}, ws...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	def := time.UTC
	if masterZone != "" {
		if loc, err := configZone(masterZone); err == nil {
			def = loc
		}
	}
	for i := range out {
		out[i].zone = def
		if out[i].Timezone != "" {
			if loc, err := configZone(out[i].Timezone); err == nil {
				out[i].zone = loc
			}
		}
	}
	return out
}
