package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"

	"github.com/drover-ci/drover"
)

// fileOptions are the Starlark dialect of a config: what users of Python
// configs expect (sets, while, top-level if/for, reassigned globals) but no
// recursion, which with the step budget keeps every config terminating.
func fileOptions() *syntax.FileOptions {
	return &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true}
}

// loader holds the state of one Load: the files read and the values the
// config's calls have recorded so far. It lives for one Load and is used by
// one goroutine.
type loader struct {
	dir  string   // absolute config directory
	root *os.Root // the config directory, opened by the first load()

	files   []string // absolute, in load order
	names   []string // the same files relative to dir, as positions show them
	hash    hash.Hash
	modules map[string]*module // by path relative to dir, slash-separated

	thread      *starlark.Thread
	predeclared starlark.StringDict
	errs        ErrorList

	master     *Master
	masterPos  string
	sources    []*drover.GitSource
	sourcePos  map[string]string // source name → where defined
	builders   []drover.Builder
	builderPos map[string]string // builder name → where defined
	schedulers []*pendingScheduler
	schedPos   map[string]string
	probes     []Probe
	probePos   map[string]string
	locks      []*drover.LockDef
	lockPos    map[string]string
	workers    []WorkerConfig
	workerPos  map[string]string
}

// module is one loaded file, cached so that two loads of it share values
// (Starlark requires it) and a load cycle is caught rather than recursed.
type module struct {
	loading bool
	globals starlark.StringDict
	err     error
}

// loadFailure carries the converted errors of a loaded file up through the
// load statement that read it, so they keep their own positions.
type loadFailure struct{ errs ErrorList }

func (e *loadFailure) Error() string { return e.errs.Error() }

func newLoader(dir string) *loader {
	l := &loader{
		dir:        dir,
		hash:       sha256.New(),
		modules:    make(map[string]*module),
		sourcePos:  make(map[string]string),
		builderPos: make(map[string]string),
		schedPos:   make(map[string]string),
		probePos:   make(map[string]string),
		lockPos:    make(map[string]string),
		workerPos:  make(map[string]string),
	}
	l.thread = &starlark.Thread{
		Name:  "config",
		Print: func(*starlark.Thread, string) {}, // configs have no side effects, not even output
		Load:  l.load,
		OnMaxSteps: func(t *starlark.Thread) {
			t.Cancel(fmt.Sprintf("config exceeded %d execution steps (an endless loop?)", MaxSteps))
		},
	}
	l.thread.SetMaxExecutionSteps(MaxSteps)
	l.predeclared = starlark.StringDict{
		"drover": l.module(),
		"struct": starlark.NewBuiltin("struct", starlarkstruct.Make),
	}
	return l
}

func (l *loader) close() {
	if l.root != nil {
		l.root.Close()
		l.root = nil
	}
}

// load runs the main file at abs and, if it and everything it loads are
// valid, returns the Config.
func load(abs string, src []byte) (*Config, error) {
	l := newLoader(filepath.Dir(abs))
	defer l.close()

	name := filepath.Base(abs)
	l.record(name, abs, src)
	l.modules[name] = &module{loading: true}
	_, err := starlark.ExecFileOptions(fileOptions(), l.thread, name, src, l.predeclared)
	if err != nil {
		l.errs = append(l.errs, l.convert(err, name)...)
	} else {
		// Cross-references are only checked once the whole config has run:
		// a scheduler may name a builder defined after it. After a runtime
		// error they would only add noise about builders never reached.
		l.resolveSchedulers()
	}
	if len(l.errs) > 0 {
		sortErrors(l.errs, l.names)
		return nil, l.errs.invalid()
	}
	return l.config(), nil
}

// record adds a file to Files and Hash. Each file is hashed as its length
// then its bytes, so moving text from one file to the next changes the hash.
func (l *loader) record(name, abs string, src []byte) {
	l.files = append(l.files, abs)
	l.names = append(l.names, name)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(src)))
	l.hash.Write(n[:])
	l.hash.Write(src)
}

func (l *loader) config() *Config {
	c := &Config{
		Master:     defaultMaster(),
		Sources:    make([]drover.GitSource, 0, len(l.sources)),
		Builders:   l.builders,
		Schedulers: make([]Scheduler, 0, len(l.schedulers)),
		Probes:     l.probes,
		Hash:       hex.EncodeToString(l.hash.Sum(nil)),
		Files:      l.files,
	}
	if l.master != nil {
		c.Master = *l.master
	}
	for _, s := range l.sources {
		c.Sources = append(c.Sources, *s)
	}
	for _, s := range l.schedulers {
		c.Schedulers = append(c.Schedulers, s.Scheduler)
	}
	c.Workers = sortedWorkers(l.workers, c.Master.Timezone)
	c.Locks = make([]drover.LockDef, 0, len(l.locks))
	for _, lk := range l.locks {
		c.Locks = append(c.Locks, *lk)
	}
	if c.Builders == nil {
		c.Builders = []drover.Builder{}
	}
	if c.Probes == nil {
		c.Probes = []Probe{}
	}
	return c
}

// load implements load() for the thread: name is resolved against the
// directory of the loading file and must stay inside the config directory.
// os.Root enforces that for symbolic links too.
func (l *loader) load(thread *starlark.Thread, name string) (starlark.StringDict, error) {
	from := thread.CallFrame(0).Pos.Filename()
	rel, err := resolveModule(from, name)
	if err != nil {
		return nil, err
	}
	if m, ok := l.modules[rel]; ok {
		if m.loading {
			return nil, fmt.Errorf("load cycle: %s is already being loaded", rel)
		}
		return m.globals, m.err
	}
	if l.root == nil {
		root, err := os.OpenRoot(l.dir)
		if err != nil {
			return nil, fmt.Errorf("open config directory: %w", err)
		}
		l.root = root
	}
	src, err := l.root.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in the message starlark adds
		}
		return nil, err
	}
	l.record(rel, filepath.Join(l.dir, filepath.FromSlash(rel)), src)

	m := &module{loading: true}
	l.modules[rel] = m
	globals, err := starlark.ExecFileOptions(fileOptions(), thread, rel, src, l.predeclared)
	m.loading = false
	if err != nil {
		m.err = &loadFailure{errs: l.convert(err, rel)}
		return nil, m.err
	}
	m.globals = globals
	return globals, nil
}

// resolveModule turns the name in a load statement into a slash path
// relative to the config directory.
func resolveModule(from, module string) (string, error) {
	switch {
	case module == "":
		return "", errors.New("empty module name")
	case path.IsAbs(module) || filepath.IsAbs(module) || strings.Contains(module, `\`):
		return "", errors.New("module must be a relative slash-separated path")
	case !strings.HasSuffix(module, ".star"):
		return "", errors.New("module must be a .star file")
	}
	rel := path.Join(path.Dir(from), module)
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", errors.New("path escapes the config directory")
	}
	return rel, nil
}

// convert turns an error from Starlark into positioned config errors. file
// is the file being executed, for the rare error that carries no position.
func (l *loader) convert(err error, file string) ErrorList {
	var lf *loadFailure
	if errors.As(err, &lf) {
		return lf.errs
	}
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		return ErrorList{evalError(ee, file)}
	}
	var se syntax.Error
	if errors.As(err, &se) {
		return ErrorList{newError(se.Pos, file, se.Msg)}
	}
	var rl resolve.ErrorList
	if errors.As(err, &rl) {
		out := make(ErrorList, 0, len(rl))
		for _, e := range rl {
			out = append(out, newError(e.Pos, file, e.Msg))
		}
		return out
	}
	return ErrorList{newError(syntax.Position{}, file, err.Error())}
}

// evalError places a runtime error at the innermost line of config code on
// its stack (not inside a built-in) and names the call sites above it.
func evalError(ee *starlark.EvalError, file string) *Error {
	var frames []starlark.CallFrame
	for _, fr := range ee.CallStack {
		if fr.Pos.IsValid() && fr.Pos.Filename() != "<builtin>" {
			frames = append(frames, fr)
		}
	}
	if len(frames) == 0 {
		return newError(syntax.Position{}, file, ee.Msg)
	}
	inner := frames[len(frames)-1]
	var via []string
	for i := len(frames) - 2; i >= 0; i-- {
		via = append(via, posString(frames[i].Pos, file))
	}
	return newError(inner.Pos, file, withVia(ee.Msg, via))
}

func withVia(msg string, via []string) string {
	if len(via) == 0 {
		return msg
	}
	return msg + " (via " + strings.Join(via, ", ") + ")"
}

// posString formats p as file:line:col, always with a line so that every
// error starts with a position.
func posString(p syntax.Position, file string) string {
	if p.IsValid() {
		file = p.Filename()
	}
	line := max(p.Line, 1)
	if p.Col > 0 {
		return fmt.Sprintf("%s:%d:%d", file, line, p.Col)
	}
	return fmt.Sprintf("%s:%d", file, line)
}

// site is where a built-in was called from: the position of the call in
// config code and the call sites of the functions around it.
type site struct {
	pos syntax.Position
	via []string
}

// callSite finds the caller of the running built-in.
func callSite(thread *starlark.Thread) site {
	stack := thread.CallStack()
	// stack[len-1] is the built-in itself.
	s := site{}
	if len(stack) >= 2 {
		s.pos = stack[len(stack)-2].Pos
	}
	for i := len(stack) - 3; i >= 0; i-- {
		s.via = append(s.via, posString(stack[i].Pos, ""))
	}
	return s
}

// line is the "file:line" a value records as its Pos.
func (s site) line() string {
	return fmt.Sprintf("%s:%d", s.pos.Filename(), max(s.pos.Line, 1))
}

// errorf records a validation error at s and lets execution go on, so that
// one load reports every mistake it can.
func (l *loader) errorf(s site, format string, args ...any) {
	l.errs = append(l.errs, newError(s.pos, l.names[0], withVia(fmt.Sprintf(format, args...), s.via)))
}
