package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/gitcheckout"
)

// builtinFacts are the facts every worker reports itself; a probe of the
// same name would silently fight with them.
var builtinFacts = []string{"arch", "cpus", drover.FactProtocol, "drover_version", "hostname", "memory", "os"}

// module builds the drover module for one load. Its functions close over
// the loader, so two loads never share state.
func (l *loader) module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "drover", Members: starlark.StringDict{
		"master":    starlark.NewBuiltin("drover.master", l.masterFn),
		"git":       starlark.NewBuiltin("drover.git", l.gitFn),
		"checkout":  starlark.NewBuiltin("drover.checkout", l.checkoutFn),
		"shell":     starlark.NewBuiltin("drover.shell", l.shellFn),
		"upload":    starlark.NewBuiltin("drover.upload", l.uploadFn),
		"download":  starlark.NewBuiltin("drover.download", l.downloadFn),
		"builder":   starlark.NewBuiltin("drover.builder", l.builderFn),
		"scheduler": starlark.NewBuiltin("drover.scheduler", l.schedulerFn),
		"probe":     starlark.NewBuiltin("drover.probe", l.probeFn),
		"lock":      starlark.NewBuiltin("drover.lock", l.lockFn),
		"use":       starlark.NewBuiltin("drover.use", l.useFn),
		"worker":    starlark.NewBuiltin("drover.worker", l.workerFn),
	}}
}

// Each built-in below returns a Starlark error (which stops the config) only
// for a call that cannot be understood at all: a wrong argument count, an
// unknown keyword, a value of the wrong basic type. Everything else is
// recorded with l.errorf and execution goes on, so a config with ten
// mistakes shows ten errors at once.

func (l *loader) masterFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	m := defaultMaster()
	var artifactHorizon starlark.Value
	var logMax, horizon, grace, reluctantAfter, expireAfter, probeInterval, stopGrace, siteTimeout starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"title?", &m.Title,
		"url?", &m.URL,
		"http?", &m.HTTP,
		"workers?", &m.Workers,
		"database?", &m.Database,
		"log_max_bytes?", &logMax,
		"log_horizon?", &horizon,
		"artifact_horizon?", &artifactHorizon,
		"worker_grace?", &grace,
		"max_retries?", &m.MaxRetries,
		"public_reads?", &m.PublicReads,
		"allow_plaintext?", &m.AllowPlaintext,
		"approve_workers?", &m.ApproveWorkers,
		"reluctant_after?", &reluctantAfter,
		"expire_after?", &expireAfter,
		"probe_interval?", &probeInterval,
		"stop_grace?", &stopGrace,
		"shared_dir?", &m.SharedDir,
		"site_timeout?", &siteTimeout,
		"timezone?", &m.Timezone,
	); err != nil {
		return nil, err
	}
	if l.master != nil {
		l.errorf(s, "%s: called twice (first at %s)", fn.Name(), l.masterPos)
		return starlark.None, nil
	}
	if strings.TrimSpace(m.Title) == "" {
		l.errorf(s, "%s: title must not be empty", fn.Name())
	}
	if m.URL != "" {
		if err := checkPublicURL(m.URL); err != nil {
			l.errorf(s, "%s: url: %v", fn.Name(), err)
		}
	}
	if err := checkListenAddr(m.HTTP); err != nil {
		l.errorf(s, "%s: http: %v", fn.Name(), err)
	}
	if err := checkListenAddr(m.Workers); err != nil {
		l.errorf(s, "%s: workers: %v", fn.Name(), err)
	}
	if !isNone(logMax) {
		n, err := toSize(logMax)
		switch {
		case err != nil:
			l.errorf(s, "%s: log_max_bytes: %v", fn.Name(), err)
		case n == 0:
			l.errorf(s, "%s: log_max_bytes must be more than zero", fn.Name())
		default:
			m.LogMaxBytes = n
		}
	}
	if !isNone(horizon) {
		d, err := toDuration(horizon)
		if err != nil {
			l.errorf(s, "%s: log_horizon: %v", fn.Name(), err)
		}
		m.LogHorizon = d
	}
	if !isNone(artifactHorizon) {
		d, err := toDuration(artifactHorizon)
		if err != nil {
			l.errorf(s, "%s: artifact_horizon: %v", fn.Name(), err)
		}
		m.ArtifactHorizon = d
	}
	if !isNone(grace) {
		d, err := toDuration(grace)
		if err != nil {
			l.errorf(s, "%s: worker_grace: %v", fn.Name(), err)
		}
		m.WorkerGrace = d
	}
	if m.MaxRetries < 0 {
		l.errorf(s, "%s: max_retries must not be negative", fn.Name())
	}
	if !isNone(reluctantAfter) {
		d, err := toDuration(reluctantAfter)
		if err != nil {
			l.errorf(s, "%s: reluctant_after: %v", fn.Name(), err)
		}
		m.ReluctantAfter = d
	}
	if !isNone(expireAfter) {
		d, err := toDuration(expireAfter)
		if err != nil {
			l.errorf(s, "%s: expire_after: %v", fn.Name(), err)
		}
		m.ExpireAfter = d
	}
	if !isNone(stopGrace) {
		d, err := toDuration(stopGrace)
		if err != nil {
			l.errorf(s, "%s: stop_grace: %v", fn.Name(), err)
		}
		m.StopGrace = d
	}
	if !isNone(siteTimeout) {
		d, err := toDuration(siteTimeout)
		if err != nil || d < time.Second {
			l.errorf(s, "%s: site_timeout: want a duration of at least 1s", fn.Name())
		} else {
			m.SiteTimeout = d
		}
	}
	if !isNone(probeInterval) {
		d, err := toDuration(probeInterval)
		if err != nil || d < time.Minute {
			l.errorf(s, "%s: probe_interval: want a duration of at least 1m", fn.Name())
		}
		m.ProbeInterval = d
	}
	if m.Timezone != "" {
		if _, err := configZone(m.Timezone); err != nil {
			l.errorf(s, "%s: timezone: %s", fn.Name(), drover.Message(err))
			m.Timezone = ""
		}
	}
	l.master, l.masterPos = &m, s.line()
	return starlark.None, nil
}

func checkPublicURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL %q: %v", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bad URL %q: want http:// or https:// and a host", raw)
	}
	return nil
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad listen address %q (want host:port or :port)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port in listen address %q", addr)
	}
	return nil
}

func (l *loader) gitFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	var rawURL string
	var branches, poll, name starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"url", &rawURL, "branches?", &branches, "poll?", &poll, "name?", &name,
	); err != nil {
		return nil, err
	}
	src := &drover.GitSource{URL: rawURL, Pos: s.line()}
	if strings.TrimSpace(rawURL) == "" || strings.IndexFunc(rawURL, unicode.IsSpace) >= 0 {
		l.errorf(s, "%s: bad url %q", fn.Name(), rawURL)
	}
	if !isNone(branches) {
		bs, err := toStringList(branches)
		if err != nil {
			l.errorf(s, "%s: branches: %v", fn.Name(), err)
		}
		for _, b := range bs {
			switch {
			case b == "" || strings.IndexFunc(b, unicode.IsSpace) >= 0:
				l.errorf(s, "%s: bad branch name %q", fn.Name(), b)
			case slices.Contains(src.Branches, b):
				l.errorf(s, "%s: branch %q listed twice", fn.Name(), b)
			default:
				src.Branches = append(src.Branches, b)
			}
		}
	}
	if !isNone(poll) {
		d, err := toDuration(poll)
		if err != nil {
			l.errorf(s, "%s: poll: %v", fn.Name(), err)
		}
		src.Poll = d
	}
	if isNone(name) {
		src.Name = sourceName(rawURL)
	} else if n, ok := starlark.AsString(name); ok {
		src.Name = n
	} else {
		return nil, fmt.Errorf("%s: for parameter name: got %s, want string or None", fn.Name(), name.Type())
	}
	switch first, dup := l.sourcePos[src.Name]; {
	case !builderNameRE.MatchString(src.Name):
		if isNone(name) {
			l.errorf(s, "%s: cannot make a source name from url %q; give name=", fn.Name(), rawURL)
		} else {
			l.errorf(s, "%s: bad source name %q (want [A-Za-z0-9][A-Za-z0-9_.+-]*)", fn.Name(), src.Name)
		}
	case dup:
		l.errorf(s, "%s: duplicate source name %q (first at %s); give name=", fn.Name(), src.Name, first)
	default:
		l.sources = append(l.sources, src)
		l.sourcePos[src.Name] = src.Pos
	}
	return &sourceValue{src: src}, nil
}

// sourceName is the default name of a source: the last element of its URL
// (or scp-like address) without .git.
func sourceName(rawURL string) string {
	u := strings.TrimRight(rawURL, "/")
	if i := strings.LastIndexAny(u, "/:"); i >= 0 {
		u = u[i+1:]
	}
	return strings.TrimSuffix(u, ".git")
}

func (l *loader) checkoutFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	var source, timeout, maxTime, urls, method, depth, filter starlark.Value
	spec := drover.StepSpec{
		Kind:           drover.StepCheckout,
		Name:           "checkout",
		Mode:           "incremental",
		KillGrace:      DefaultKillGrace,
		HaltOnFailure:  true,
		FlunkOnFailure: true,
		Pos:            s.line(),
	}
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"source", &source, "mode?", &spec.Mode, "name?", &spec.Name,
		"timeout?", &timeout, "max_time?", &maxTime, "urls?", &urls,
		"method?", &method, "depth?", &depth, "filter?", &filter,
		"submodules?", &spec.Submodules, "reclone_on_failure?", &spec.RecloneOnFailure,
	); err != nil {
		return nil, err
	}
	if sv, ok := source.(*sourceValue); ok {
		spec.Source = sv.src
	} else {
		l.errorf(s, "%s: source must be a drover.git value, got %s", fn.Name(), source.Type())
	}
	if spec.Mode != gitcheckout.ModeIncremental && spec.Mode != gitcheckout.ModeFull {
		l.errorf(s, "%s: mode %q: want \"incremental\" or \"full\"", fn.Name(), spec.Mode)
	}
	l.checkoutOptions(s, fn, &spec, method, depth, filter)
	if err := checkStepName(spec.Name); err != nil {
		l.errorf(s, "%s: %v", fn.Name(), err)
	}
	spec.Timeout = l.optDuration(s, fn, "timeout", timeout, 0)
	spec.MaxTime = l.optDuration(s, fn, "max_time", maxTime, 0)
	spec.URLs = l.stepURLs(func(format string, args ...any) {
		l.errorf(s, "%s: "+format, append([]any{fn.Name()}, args...)...)
	}, urls)
	return &stepValue{spec: spec, site: s}, nil
}

// checkoutOptions reads checkout's method, depth and filter into spec.
func (l *loader) checkoutOptions(s site, fn *starlark.Builtin, spec *drover.StepSpec, method, depth, filter starlark.Value) {
	if !isNone(method) {
		m, ok := starlark.AsString(method)
		switch {
		case !ok:
			l.errorf(s, "%s: method: want a string, got %s", fn.Name(), method.Type())
		case m != gitcheckout.MethodFresh && m != gitcheckout.MethodClean && m != gitcheckout.MethodClobber:
			l.errorf(s, "%s: method %q: want \"fresh\", \"clean\" or \"clobber\"", fn.Name(), m)
		case spec.Mode != gitcheckout.ModeFull:
			l.errorf(s, "%s: method %q: only with mode = \"full\" (an incremental checkout cleans nothing)", fn.Name(), m)
		default:
			spec.Method = m
		}
	}
	if spec.Mode == gitcheckout.ModeFull && spec.Method == "" {
		spec.Method = gitcheckout.MethodFresh
	}
	if !isNone(depth) {
		n, err := starlark.AsInt32(depth)
		switch {
		case err != nil:
			l.errorf(s, "%s: depth: want a number of commits, got %s", fn.Name(), depth.Type())
		case n < 0:
			l.errorf(s, "%s: depth %d: want 0 (all history) or more", fn.Name(), n)
		default:
			spec.Depth = n
		}
	}
	if !isNone(filter) {
		f, ok := starlark.AsString(filter)
		if !ok {
			l.errorf(s, "%s: filter: want a string, got %s", fn.Name(), filter.Type())
		} else if err := gitcheckout.CheckFilter(f); err != nil {
			l.errorf(s, "%s: %v", fn.Name(), err)
		} else {
			spec.Filter = f
		}
	}
}

// optDuration reads an optional duration argument, recording an error and
// returning def when it is bad.
func (l *loader) optDuration(s site, fn *starlark.Builtin, param string, v starlark.Value, def time.Duration) time.Duration {
	if isNone(v) {
		return def
	}
	d, err := toDuration(v)
	if err != nil {
		l.errorf(s, "%s: %s: %v", fn.Name(), param, err)
		return def
	}
	return d
}

func checkStepName(name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("step name must not be empty")
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Errorf("step name %q has control characters", name)
	}
	return nil
}

func (l *loader) shellFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	spec := drover.StepSpec{
		Kind:           drover.StepShell,
		HaltOnFailure:  true,
		FlunkOnFailure: true,
		KillGrace:      DefaultKillGrace,
		Pos:            s.line(),
	}
	var command, name, env, timeout, maxTime, killGrace, decodeRC, when, setProperty, extract, stepLocks, shards, urls starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"command", &command,
		"name?", &name,
		"env?", &env,
		"workdir?", &spec.Workdir,
		"timeout?", &timeout,
		"max_time?", &maxTime,
		"kill_grace?", &killGrace,
		"halt_on_failure?", &spec.HaltOnFailure,
		"flunk_on_failure?", &spec.FlunkOnFailure,
		"warn_on_failure?", &spec.WarnOnFailure,
		"always_run?", &spec.AlwaysRun,
		"decode_rc?", &decodeRC,
		"when?", &when,
		"set_property?", &setProperty,
		"extract?", &extract,
		"locks?", &stepLocks,
		"shards?", &shards,
		"urls?", &urls,
	); err != nil {
		return nil, err
	}
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s: "+format, append([]any{fn.Name()}, args...)...)
	}

	switch c := command.(type) {
	case starlark.String:
		spec.Shell, spec.Command = true, []string{string(c)}
		if strings.TrimSpace(string(c)) == "" {
			errorf("command must not be empty")
		}
	default:
		argv, err := toStringList(command)
		switch {
		case err != nil:
			errorf("command: want a string (run by the shell) or a list of strings (argv), got %s", command.Type())
		case len(argv) == 0 || argv[0] == "":
			errorf("command: argv must not be empty")
		}
		spec.Command = argv
	}
	for _, arg := range spec.Command {
		if err := CheckInterpolation(arg); err != nil {
			errorf("command: %v", err)
		}
	}

	if isNone(name) {
		spec.Name = defaultStepName(spec.Command, spec.Shell)
	} else if n, ok := starlark.AsString(name); ok {
		spec.Name = n
		if err := checkStepName(n); err != nil {
			errorf("%v", err)
		}
	} else {
		return nil, fmt.Errorf("%s: for parameter name: got %s, want string or None", fn.Name(), name.Type())
	}

	if !isNone(env) {
		pairs, errs := toStringPairs(env, false)
		for _, err := range errs {
			errorf("env: %v", err)
		}
		for _, p := range pairs {
			if !envNameRE.MatchString(p.key) {
				errorf("env: bad variable name %q", p.key)
			}
			if err := CheckInterpolation(p.value); err != nil {
				errorf("env %s: %v", p.key, err)
			}
			if spec.Env == nil {
				spec.Env = make(map[string]string, len(pairs))
			}
			spec.Env[p.key] = p.value
		}
	}

	if spec.Workdir != "" {
		if err := CheckInterpolation(spec.Workdir); err != nil {
			errorf("workdir: %v", err)
		}
		if path.IsAbs(spec.Workdir) || filepath.IsAbs(spec.Workdir) || !filepath.IsLocal(filepath.FromSlash(spec.Workdir)) {
			errorf("workdir %q must be relative to the builder's directory and stay inside it", spec.Workdir)
		}
	}

	spec.Timeout = l.optDuration(s, fn, "timeout", timeout, 0)
	spec.MaxTime = l.optDuration(s, fn, "max_time", maxTime, 0)
	spec.KillGrace = l.optDuration(s, fn, "kill_grace", killGrace, DefaultKillGrace)

	if !isNone(decodeRC) {
		spec.DecodeRC = l.decodeRC(errorf, decodeRC)
	}
	if !isNone(when) {
		spec.When = l.conditions(errorf, when)
	}
	if !isNone(setProperty) {
		p, ok := starlark.AsString(setProperty)
		switch {
		case !ok:
			errorf("set_property: want a property name, got %s", setProperty.Type())
		case !propNameRE.MatchString(p):
			errorf("set_property: bad property name %q", p)
		default:
			spec.SetProperty = p
		}
	}
	if !isNone(extract) {
		spec.Extract = l.extract(errorf, extract)
	}
	l.shards(errorf, &spec, shards)
	spec.Locks = l.lockUses(errorf, stepLocks)
	spec.URLs = l.stepURLs(errorf, urls)
	return &stepValue{spec: spec, site: s}, nil
}

// defaultStepName names a step after the program it runs: the first word
// of the command that is not a VAR=value assignment, without its directory,
// so "./configure --x" is "configure" and "CC=gcc make -j" is "make".
func defaultStepName(command []string, shell bool) string {
	var words []string
	if shell && len(command) > 0 {
		words = strings.Fields(command[0])
	} else {
		words = command
	}
	for _, w := range words {
		if shell && isAssignment(w) {
			continue
		}
		w = strings.Trim(w, `"'`)
		w = path.Base(strings.TrimRight(w, "/"))
		if w == "" || w == "." || w == "/" || strings.Contains(w, "%(") || checkStepName(w) != nil {
			break
		}
		return w
	}
	return "shell"
}

var assignmentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

func isAssignment(w string) bool { return assignmentRE.MatchString(w) }

type errorfFunc func(format string, args ...any)

func (l *loader) decodeRC(errorf errorfFunc, v starlark.Value) map[int]drover.Result {
	d, ok := v.(*starlark.Dict)
	if !ok {
		errorf("decode_rc: want a dict of exit code to result, got %s", v.Type())
		return nil
	}
	out := make(map[int]drover.Result, d.Len())
	for _, item := range d.Items() {
		code, err := starlark.AsInt32(item[0])
		if err != nil {
			errorf("decode_rc: key %s: want an exit code", item[0])
			continue
		}
		name, ok := starlark.AsString(item[1])
		if !ok {
			errorf("decode_rc %d: want a result name, got %s", code, item[1].Type())
			continue
		}
		r, err := drover.ParseResult(name)
		if err != nil {
			errorf("decode_rc %d: %v", code, err)
			continue
		}
		out[code] = r
	}
	return out
}

// conditions reads when={prop: value}: "!value" negates and "*" means
// present. They are sorted by property so equal configs compare equal.
func (l *loader) conditions(errorf errorfFunc, v starlark.Value) []drover.Condition {
	pairs, errs := toStringPairs(v, true)
	for _, err := range errs {
		errorf("when: %v", err)
	}
	out := make([]drover.Condition, 0, len(pairs))
	for _, p := range pairs {
		c := drover.Condition{Prop: p.key, Value: p.value}
		if rest, ok := strings.CutPrefix(p.value, "!"); ok {
			c.Value, c.Negate = rest, true
		}
		switch {
		case !propNameRE.MatchString(p.key):
			errorf("when: bad property name %q", p.key)
		case c.Value == "":
			errorf("when %s: empty value (use \"*\" for present, \"!*\" for absent)", p.key)
		default:
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b drover.Condition) int { return strings.Compare(a.Prop, b.Prop) })
	return out
}

func (l *loader) extract(errorf errorfFunc, v starlark.Value) map[string]string {
	pairs, errs := toStringPairs(v, false)
	for _, err := range errs {
		errorf("extract: %v", err)
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		if !propNameRE.MatchString(p.key) {
			errorf("extract: bad property name %q", p.key)
			continue
		}
		re, err := regexp.Compile(p.value)
		if err != nil {
			errorf("extract %s: bad regexp: %v", p.key, err)
			continue
		}
		if re.NumSubexp() > 1 {
			errorf("extract %s: regexp %q has %d capture groups, want at most one", p.key, p.value, re.NumSubexp())
			continue
		}
		out[p.key] = p.value
	}
	return out
}

func (l *loader) builderFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	b := drover.Builder{Pos: s.line(), Collapse: true}
	var steps, requires, workers, classes, properties, locks, expireAfter starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"name", &b.Name,
		"steps", &steps,
		"requires?", &requires,
		"workers?", &workers,
		"classes?", &classes,
		"stable?", &b.Stable,
		"max_builds?", &b.MaxBuilds,
		"priority?", &b.Priority,
		"properties?", &properties,
		"description?", &b.Description,
		"locks?", &locks,
		"expire_after?", &expireAfter,
		"collapse?", &b.Collapse,
	); err != nil {
		return nil, err
	}
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s %q: "+format, append([]any{fn.Name(), b.Name}, args...)...)
	}
	record := true
	if !builderNameRE.MatchString(b.Name) {
		errorf("bad builder name (want [A-Za-z0-9][A-Za-z0-9_.+-]*)")
		record = false
	} else if first, dup := l.builderPos[b.Name]; dup {
		errorf("duplicate builder (first at %s)", first)
		record = false
	}

	b.Steps = l.builderSteps(errorf, steps)

	if !isNone(requires) {
		pairs, errs := toStringPairs(requires, false)
		for _, err := range errs {
			errorf("requires: %v", err)
		}
		for _, p := range pairs {
			if !factNameRE.MatchString(p.key) {
				errorf("requires: bad fact name %q (want [a-z0-9_.-]+)", p.key)
				continue
			}
			r, err := drover.ParseRequirement(p.key, p.value)
			if err != nil {
				errorf("requires: %v", err)
				continue
			}
			b.Requires = append(b.Requires, r)
		}
		slices.SortFunc(b.Requires, func(a, b drover.Requirement) int { return strings.Compare(a.Fact, b.Fact) })
	}
	if !isNone(workers) {
		names, err := toStringList(workers)
		if err != nil {
			errorf("workers: %v", err)
		}
		for _, w := range names {
			switch {
			case !workerNameRE.MatchString(w):
				errorf("workers: bad worker name %q (want [A-Za-z0-9][A-Za-z0-9_.-]*)", w)
			case slices.Contains(b.Workers, w):
				errorf("workers: %q listed twice", w)
			default:
				b.Workers = append(b.Workers, w)
			}
		}
	}
	if !isNone(classes) {
		pairs, errs := toStringPairs(classes, false)
		for _, err := range errs {
			errorf("classes: %v", err)
		}
		for _, p := range pairs {
			switch {
			case !classNameRE.MatchString(p.key):
				errorf("classes: bad axis name %q (want [A-Za-z0-9_.-]+)", p.key)
			case p.value == "":
				errorf("classes %s: empty value", p.key)
			default:
				if b.Classes == nil {
					b.Classes = make(map[string]string, len(pairs))
				}
				b.Classes[p.key] = p.value
			}
		}
	}
	if !isNone(properties) {
		pairs, errs := toStringPairs(properties, true)
		for _, err := range errs {
			errorf("properties: %v", err)
		}
		for _, p := range pairs {
			if !propNameRE.MatchString(p.key) {
				errorf("properties: bad property name %q", p.key)
				continue
			}
			if b.Properties == nil {
				b.Properties = make(drover.Properties, len(pairs))
			}
			b.Properties[p.key] = p.value
		}
	}
	if b.MaxBuilds < 0 {
		errorf("max_builds must not be negative")
	}
	b.Locks = l.lockUses(errorf, locks)
	if !isNone(expireAfter) {
		d, err := toDuration(expireAfter)
		if err != nil {
			errorf("expire_after: %v", err)
		}
		b.ExpireAfter = d
	}
	if record {
		l.builders = append(l.builders, b)
		l.builderPos[b.Name] = b.Pos
	}
	return starlark.None, nil
}

// builderSteps copies the step values of a builder's steps list and makes
// their names unique: the second "test" becomes "test_2", the third
// "test_3". A name that still collides (a step explicitly named "test_2")
// is an error rather than a silent renaming.
func (l *loader) builderSteps(errorf errorfFunc, v starlark.Value) []drover.StepSpec {
	seq, ok := v.(starlark.Indexable)
	if !ok || isString(v) {
		errorf("steps: want a list of steps, got %s", v.Type())
		return nil
	}
	if seq.Len() == 0 {
		errorf("steps: a builder needs at least one step")
		return nil
	}
	out := make([]drover.StepSpec, 0, seq.Len())
	count := make(map[string]int)
	for i := range seq.Len() {
		sv, ok := seq.Index(i).(*stepValue)
		if !ok {
			errorf("steps[%d]: want a step from drover.shell or drover.checkout, got %s", i, seq.Index(i).Type())
			continue
		}
		spec := cloneStep(sv.spec)
		count[spec.Name]++
		if n := count[spec.Name]; n > 1 {
			spec.Name = fmt.Sprintf("%s_%d", spec.Name, n)
		}
		out = append(out, spec)
	}
	seen := make(map[string]bool, len(out))
	for _, spec := range out {
		if seen[spec.Name] {
			errorf("two steps are named %q after numbering repeated names (the second from %s); rename one", spec.Name, spec.Pos)
		}
		seen[spec.Name] = true
	}
	return out
}

// pendingScheduler is a scheduler whose builder names are checked once the
// whole config has run.
type pendingScheduler struct {
	Scheduler
	site  site
	all   bool
	names []string
}

func (l *loader) schedulerFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	ps := &pendingScheduler{Scheduler: Scheduler{Pos: s.line()}, site: s}
	var source, builders, branch, treeStable starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"name", &ps.Name,
		"source", &source,
		"builders?", &builders,
		"branch?", &branch,
		"tree_stable?", &treeStable,
	); err != nil {
		return nil, err
	}
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s %q: "+format, append([]any{fn.Name(), ps.Name}, args...)...)
	}
	record := true
	if !builderNameRE.MatchString(ps.Name) {
		errorf("bad scheduler name (want [A-Za-z0-9][A-Za-z0-9_.+-]*)")
		record = false
	} else if first, dup := l.schedPos[ps.Name]; dup {
		errorf("duplicate scheduler (first at %s)", first)
		record = false
	}

	var src *drover.GitSource
	if sv, ok := source.(*sourceValue); ok {
		src = sv.src
		ps.Source, ps.Repository = src.Name, src.URL
	} else {
		errorf("source must be a drover.git value, got %s", source.Type())
	}

	switch b := builders.(type) {
	case nil:
		ps.all = true
	case starlark.String:
		if b != "*" {
			errorf("builders: want \"*\" or a list of builder names, got %q", string(b))
		}
		ps.all = true
	default:
		names, err := toStringList(builders)
		switch {
		case err != nil:
			errorf("builders: want \"*\" or a list of builder names, got %s", builders.Type())
		case len(names) == 0:
			errorf("builders: empty list (use \"*\" for every builder)")
		}
		for _, n := range names {
			if slices.Contains(ps.names, n) {
				errorf("builders: %q listed twice", n)
				continue
			}
			ps.names = append(ps.names, n)
		}
	}

	switch {
	case isNone(branch):
		if src != nil && len(src.Branches) == 1 {
			ps.Branch = src.Branches[0]
		}
	default:
		b, ok := starlark.AsString(branch)
		switch {
		case !ok:
			return nil, fmt.Errorf("%s: for parameter branch: got %s, want string or None", fn.Name(), branch.Type())
		case b == "" || strings.IndexFunc(b, unicode.IsSpace) >= 0:
			errorf("bad branch name %q", b)
		}
		ps.Branch = b
	}

	ps.TreeStable = l.optDuration(s, fn, "tree_stable", treeStable, 0)
	if record {
		l.schedulers = append(l.schedulers, ps)
		l.schedPos[ps.Name] = ps.Pos
	}
	return starlark.None, nil
}

// resolveSchedulers turns each scheduler's builder names into the resolved
// list, now that every builder is known.
func (l *loader) resolveSchedulers() {
	for _, ps := range l.schedulers {
		if ps.all {
			ps.Builders = make([]string, 0, len(l.builders))
			for _, b := range l.builders {
				ps.Builders = append(ps.Builders, b.Name)
			}
			continue
		}
		ps.Builders = make([]string, 0, len(ps.names))
		for _, n := range ps.names {
			if _, ok := l.builderPos[n]; !ok {
				l.errorf(ps.site, "drover.scheduler %q: unknown builder %q", ps.Name, n)
				continue
			}
			ps.Builders = append(ps.Builders, n)
		}
	}
}

func (l *loader) probeFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := callSite(thread)
	p := Probe{Timeout: DefaultProbeTime, Pos: s.line()}
	var timeout starlark.Value
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs,
		"name", &p.Name, "command", &p.Command, "timeout?", &timeout,
	); err != nil {
		return nil, err
	}
	record := true
	switch first, dup := l.probePos[p.Name]; {
	case !factNameRE.MatchString(p.Name):
		l.errorf(s, "%s: bad probe name %q: it names a fact, so want [a-z0-9_.-]+", fn.Name(), p.Name)
		record = false
	case slices.Contains(builtinFacts, p.Name):
		l.errorf(s, "%s: probe %q would hide the built-in fact of that name", fn.Name(), p.Name)
		record = false
	case dup:
		l.errorf(s, "%s: duplicate probe %q (first at %s)", fn.Name(), p.Name, first)
		record = false
	}
	if strings.TrimSpace(p.Command) == "" {
		l.errorf(s, "%s %q: command must not be empty", fn.Name(), p.Name)
	}
	p.Timeout = l.optDuration(s, fn, "timeout", timeout, DefaultProbeTime)
	if p.Timeout == 0 {
		l.errorf(s, "%s %q: timeout must be more than zero", fn.Name(), p.Name)
	}
	if record {
		l.probes = append(l.probes, p)
		l.probePos[p.Name] = p.Pos
	}
	return starlark.None, nil
}
