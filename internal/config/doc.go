// Package config turns a Starlark master.star into plain, validated Go
// values, or into errors that point at file:line.
//
// The config is a program, as Buildbot's Python config is, but a hermetic
// one: it can loop over a matrix and share step lists through functions, yet
// it sees no clock, no randomness, no environment and no file outside its
// own directory, and it runs under an execution-step budget. Loading the
// same files therefore always gives the same Config (and the same Hash), so
// the master can reload it at any time, and `drover checkconfig` sees exactly
// what the master will see, because both call Load.
//
// The config talks to Drover through one predeclared module, drover:
//
//	drover.master(title=, url=, http=, workers=, database=, log_max_bytes=,
//	              log_horizon=, worker_grace=, max_retries=, public_reads=,
//	              allow_plaintext=, approve_workers=, shared_dir=,
//	              site_timeout="15s", timezone="UTC")      # at most once
//	drover.git(url, branches=[], poll=None, name=None)     # → source
//	drover.checkout(source, mode="incremental", method=None, depth=0,
//	                filter=None, submodules=False,
//	                reclone_on_failure=False, name="checkout",
//	                timeout=None, max_time=None, urls={})  # → step
//	drover.shell(command, name=None, env={}, workdir="", timeout=None,
//	             max_time=None, kill_grace="10s", halt_on_failure=True,
//	             flunk_on_failure=True, warn_on_failure=False,
//	             always_run=False, decode_rc=None, when=None,
//	             set_property=None, extract=None, urls={}) # → step
//	drover.builder(name, steps, requires={}, workers=[], classes={},
//	               stable=False, max_builds=0, priority=0,
//	               properties={}, description="")
//	drover.scheduler(name, source, builders="*", branch=None, tree_stable=None)
//	drover.probe(name, command, timeout="30s")
//	drover.worker(name, facts={}, downtime=[], timezone="")
//
// Besides drover, a config has Starlark's universe (len, range, sorted,
// fail, ...) and struct(). print() is accepted and discarded.
//
// drover.worker sets what the master decides for a named worker: facts
// that override the worker's own claims, and downtime, windows in which
// the master gives it no new build (running ones finish) whatever the
// worker's own availability and --available windows say. A window is
// "[DAYS] HH:MM-HH:MM [ZONE]": "22:00-06:00" (daily, across midnight),
// "Wed 08:00-10:00", "Mon-Fri 09:00-17:00", "Sat,Sun 00:00-24:00",
// "Wed 08:00-10:00 Europe/Berlin". One without a zone is read in the
// worker's timezone=, else drover.master(timezone=), else UTC, never the
// machine's local time, so that every master of a site reads it alike. A
// bad window fails the load at the drover.worker call, saying which window
// and at which column.
//
// Durations are strings such as "90s", "1m", "2h30m" or "1d", or a number
// of seconds. Sizes are a number of bytes or strings such as "64MiB", "10MB"
// or "1GiB". load("lib/steps.star", "sym") reads another file, relative to
// the file that loads it and never outside the config's directory.
//
// Unlike Buildbot, a shell step halts the build when it fails
// (halt_on_failure=True by default): a failed compile should not go on to
// run the tests against stale objects and report a second, misleading
// failure. A step that should not stop the build says halt_on_failure=False,
// and a step that must run even after a halt (cleanup, collecting results)
// says always_run=True.
//
// drover.checkout is done by the worker, which runs git itself (argv, no
// shell, the same on Windows as elsewhere). mode="incremental" keeps the
// clone and its untracked files and checks the revision out over it;
// mode="full" also cleans, by method, as in Buildbot: "fresh" (the
// default: untracked and ignored files go), "clean" (untracked files go,
// ignored ones such as object files stay) or "clobber" (the directory
// goes and is cloned anew). depth=N makes a shallow clone, filter =
// "blob:none" a partial one (the server must allow filters),
// submodules=True checks submodules out recursively, and
// reclone_on_failure=True clones anew, once, when updating the existing
// clone fails. A checkout that cannot fetch from its source ends the build
// as retry (infra, blamed on the source, not the worker); one whose
// branch or revision the source does not have fails. Workers older than
// protocol 9 get a shell script that knows only mode. docs/steps.md says
// what a step's command gets on its worker: directory, environment.
//
// urls = {"coverage": "https://cov.example.org/%(prop:buildnumber)s/"}
// gives a step links, shown on the build page and in the API, interpolated
// when the step starts. A running command adds more with `drover step url
// NAME URL`, and sets build properties for later steps with `drover step
// property KEY VALUE`.
//
// Command strings may hold property interpolations, %(prop:NAME)s,
// %(prop:NAME:-default)s and %(fact:NAME)s, with %% for a literal percent
// sign. The loader does not expand them (the master does, per build) but
// rejects malformed ones, so a typo fails at load time rather than in the
// middle of a build.
//
// Errors have the form "master.star:12:5: message", paths relative to the
// config's directory. A config with several mistakes reports all it can find,
// one per line (see ErrorList); a Starlark runtime error stops execution, so
// only the problems found before it are reported with it.
package config
