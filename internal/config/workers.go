package config

import (
	"fmt"
	"sort"

	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
)

// WorkerConfig is what the master's config says of a named worker. Its
// facts are authoritative: they override whatever the worker reports, so
// membership of a trusted pool cannot be claimed by a worker itself.
type WorkerConfig struct {
	Name  string       `json:"name"`
	Facts drover.Facts `json:"facts"`
	Pos   string       `json:"pos"`
}

// workerFn implements drover.worker(name, facts = {fact: value or [values]}).
func (l *loader) workerFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	w := WorkerConfig{Pos: s.line(), Facts: drover.Facts{}}
	var facts starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "name", &w.Name, "facts?", &facts); err != nil {
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
	if record {
		l.workers = append(l.workers, w)
		l.workerPos[w.Name] = w.Pos
	}
	return starlark.None, nil
}

// sortedWorkers returns the configured workers by name.
func sortedWorkers(ws []WorkerConfig) []WorkerConfig {
	out := append([]WorkerConfig{}, ws...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
