package config

import (
	"fmt"

	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
)

// lockValue is what drover.lock returns: a handle drover.use accepts.
type lockValue struct{ def *drover.LockDef }

func (v *lockValue) String() string        { return fmt.Sprintf("<drover.lock %q>", v.def.Name) }
func (v *lockValue) Type() string          { return "drover.lock" }
func (v *lockValue) Freeze()               {}
func (v *lockValue) Truth() starlark.Bool  { return true }
func (v *lockValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: %s", v.Type()) }

// useValue is what drover.use returns: a need of one lock, in a mode.
type useValue struct{ use drover.LockUse }

func (v *useValue) String() string {
	mode := "counting"
	if v.use.Exclusive {
		mode = "exclusive"
	}
	return fmt.Sprintf("<drover.use %q %s>", v.use.Lock, mode)
}
func (v *useValue) Type() string          { return "drover.use" }
func (v *useValue) Freeze()               {}
func (v *useValue) Truth() starlark.Bool  { return true }
func (v *useValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: %s", v.Type()) }

// lockFn implements drover.lock(name, max = 1, scope = "master").
func (l *loader) lockFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	def := &drover.LockDef{Max: 1, Scope: drover.LockMaster, Pos: s.line()}
	var scope string = string(drover.LockMaster)
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "name", &def.Name, "max?", &def.Max, "scope?", &scope); err != nil {
		return nil, err
	}
	def.Scope = drover.LockScope(scope)
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s %q: "+format, append([]any{fn.Name(), def.Name}, args...)...)
	}
	switch {
	case !builderNameRE.MatchString(def.Name):
		errorf("bad lock name (want [A-Za-z0-9][A-Za-z0-9_.+-]*)")
	case l.lockPos[def.Name] != "":
		errorf("duplicate lock (first at %s)", l.lockPos[def.Name])
	default:
		l.lockPos[def.Name] = def.Pos
		l.locks = append(l.locks, def)
	}
	if def.Max < 1 {
		errorf("max must be at least 1")
	}
	if def.Scope != drover.LockMaster && def.Scope != drover.LockWorker {
		errorf("scope must be \"master\" or \"worker\", not %q", scope)
	}
	return &lockValue{def: def}, nil
}

// useFn implements drover.use(lock, exclusive = False): lock is a value of
// drover.lock or the name of one declared before.
func (l *loader) useFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	var lock starlark.Value
	var u drover.LockUse
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "lock", &lock, "exclusive?", &u.Exclusive); err != nil {
		return nil, err
	}
	switch v := lock.(type) {
	case *lockValue:
		u.Lock = v.def.Name
	case starlark.String:
		u.Lock = string(v)
		if l.lockPos[u.Lock] == "" {
			l.errorf(s, "%s: no lock named %q is declared before this line (use drover.lock first)", fn.Name(), u.Lock)
		}
	default:
		return nil, fmt.Errorf("%s: for parameter lock: got %s, want a drover.lock or its name", fn.Name(), lock.Type())
	}
	return &useValue{use: u}, nil
}

// lockUses reads a locks = [drover.use(...), ...] argument. A lock may be
// listed once per list: holding it twice in one build would deadlock it.
func (l *loader) lockUses(errorf errorfFunc, v starlark.Value) []drover.LockUse {
	if isNone(v) {
		return nil
	}
	seq, ok := v.(starlark.Indexable)
	if !ok || isString(v) {
		errorf("locks: want a list of drover.use(...), got %s", v.Type())
		return nil
	}
	var out []drover.LockUse
	seen := map[string]bool{}
	for i := range seq.Len() {
		var u drover.LockUse
		switch x := seq.Index(i).(type) {
		case *useValue:
			u = x.use
		case *lockValue: // a bare lock means a counting use of it
			u = drover.LockUse{Lock: x.def.Name}
		default:
			errorf("locks[%d]: want drover.use(...), got %s", i, seq.Index(i).Type())
			continue
		}
		if seen[u.Lock] {
			errorf("locks: %q listed twice", u.Lock)
			continue
		}
		seen[u.Lock] = true
		out = append(out, u)
	}
	return out
}

// maxShards bounds a step's parts: each is a build of its own.
const maxShards = 256

// shards reads shards = N or shards = ["battery", ...].
func (l *loader) shards(errorf errorfFunc, spec *drover.StepSpec, v starlark.Value) {
	if isNone(v) {
		return
	}
	if n, ok := v.(starlark.Int); ok {
		i, ok := n.Int64()
		if !ok || i < 1 || i > maxShards {
			errorf("shards: want 1 to %d parts, got %s", maxShards, n)
			return
		}
		spec.Shards = int(i)
		return
	}
	names, err := toStringList(v)
	if err != nil {
		errorf("shards: want a number of parts or a list of battery names, got %s", v.Type())
		return
	}
	if len(names) == 0 || len(names) > maxShards {
		errorf("shards: want 1 to %d batteries, got %d", maxShards, len(names))
		return
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !classNameRE.MatchString(n) || seen[n] {
			errorf("shards: bad or repeated battery name %q", n)
			return
		}
		seen[n] = true
	}
	spec.ShardNames = names
}
