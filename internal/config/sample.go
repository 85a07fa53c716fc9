package config

import (
	"strings"

	"go.starlark.net/syntax"
)

// sampleConfig is the master.star that `drover master init` writes, with
// REPO_URL standing for the repository's URL. It loads as it is, so a new
// master builds something from its first start, and its comments teach the
// rest.
const sampleConfig = `# master.star: the configuration of this Drover master.
#
# It is Starlark, a small dialect of Python: loops, functions, lists and
# dicts work as you expect, but there is no clock, no randomness, no
# environment and no file access beyond load("other.star", "name") of files
# in this directory. Check it with "drover checkconfig"; the master reloads
# it without interrupting running builds.

drover.master(
    title = "Drover",
    # url = "https://ci.example.org/",  # public address of the web UI
    # http = ":8010",                   # web UI and REST API
    # workers = ":9989",                # workers connect here (gRPC)
    # database = "postgres://drover@db/drover",  # default: state.sqlite here
    # log_horizon = "30d",              # expire old logs
)

# What to build. The scheduler below requests builds when main changes;
# poll = "1m" asks the master to look for changes every minute (a webhook
# from your code host makes it immediate).
src = drover.git(REPO_URL, branches = ["main"], poll = "1m")

# Steps shared by every builder. A failing step stops the build (unlike
# Buildbot, halt_on_failure defaults to True); say halt_on_failure = False
# for a step whose failure should not stop the rest.
def steps(make):
    return [
        drover.checkout(src),
        drover.shell(make + " -j%(fact:cpus)s", name = "compile", timeout = "20m"),
        drover.shell(make + " test", name = "test", max_time = "1h"),
    ]

# A builder names what it needs from a worker ("requires", matched against
# the facts each worker reports), not a machine: any connected worker that
# satisfies it may run the build. "classes" are the axes of the matrix, shown
# on the classes page. Stable builders decide the release gate.
for os in ["linux", "freebsd"]:
    drover.builder(
        name = os,
        description = "Build and test on " + os,
        requires = {"os": os},
        classes = {"os": os},
        stable = os == "linux",
        steps = steps("make" if os == "linux" else "gmake"),
    )

drover.scheduler("main", source = src, branch = "main", builders = "*", tree_stable = "10s")
`

// SampleConfig returns the commented sample master.star that `drover master
// init` writes: a git source at repoURL, two builders with checkout, compile
// and test steps, and a scheduler on main.
func SampleConfig(repoURL string) string {
	return strings.Replace(sampleConfig, "REPO_URL", syntax.Quote(repoURL, false), 1)
}
