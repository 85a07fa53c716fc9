package master

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// defaultWorkdir is where steps run inside DIR/<builder>/ unless they say
// otherwise, as in Buildbot, so a checkout and its build share a tree and
// the builder directory can hold other things beside it.
const defaultWorkdir = "build"

// defaultKillGrace is the wait between SIGTERM and SIGKILL.
const defaultKillGrace = 10 * time.Second

// checkoutScript fetches and checks out the build's revision with the git
// program. Everything variable arrives in the environment, so no value is
// ever pasted into shell text. It prints got_revision=<sha> for the master
// to record.
const checkoutScript = `set -e
if [ "$DROVER_CHECKOUT_MODE" = full ] && [ -d .git ]; then
  git reset -q --hard
  git clean -qffdx
fi
if [ ! -d .git ]; then
  git init -q .
fi
if [ -n "$DROVER_GIT_BRANCH" ]; then ref="refs/heads/$DROVER_GIT_BRANCH"; else ref=HEAD; fi
echo "fetching $ref from $DROVER_GIT_URL"
git fetch --force --no-tags "$DROVER_GIT_URL" "$ref"
target=FETCH_HEAD
if [ -n "$DROVER_GIT_REVISION" ]; then
  if ! git cat-file -e "$DROVER_GIT_REVISION^{commit}" 2>/dev/null; then
    git fetch --force --no-tags "$DROVER_GIT_URL" "$DROVER_GIT_REVISION"
  fi
  target="$DROVER_GIT_REVISION"
fi
git checkout -q -f --detach "$target"
if [ "$DROVER_CHECKOUT_MODE" = full ]; then git clean -qffdx; fi
git log -1 --format='%H %an: %s'
echo "got_revision=$(git rev-parse HEAD)"
`

var gotRevision = regexp.MustCompile(`(?m)^got_revision=([0-9a-f]{7,64})\s*$`)

// checkoutProtocol is the first worker protocol with RunCommand.checkout:
// a worker that checks out with git itself. An older worker gets
// checkoutScript, which needs a POSIX shell and knows only the mode.
const checkoutProtocol = 9

// commandFor turns a step into the command the worker runs; proto is the
// protocol the worker speaks.
func commandFor(id string, b *drover.Build, builder *drover.Builder, spec *drover.StepSpec, idx int, props drover.Properties, facts drover.Facts, proto uint32) *pb.RunCommand {
	env := map[string]string{
		"DROVER_BUILDER":      b.Builder,
		"DROVER_BUILD_NUMBER": fmt.Sprint(b.Number),
		"DROVER_BUILD_ID":     fmt.Sprint(b.ID),
		"DROVER_WORKER":       b.Worker,
		"DROVER_BRANCH":       props["branch"],
		"DROVER_REVISION":     props["revision"],
		"DROVER_REPOSITORY":   props["repository"],
	}
	for k, v := range spec.Env {
		env[k] = interpolate(v, props, facts)
	}
	workdir := spec.Workdir
	if workdir == "" {
		workdir = defaultWorkdir
	} else {
		workdir = interpolate(workdir, props, facts)
	}
	var argv []string
	var transfer *pb.Transfer
	var checkout *pb.Checkout
	switch spec.Kind {
	case drover.StepUpload, drover.StepDownload:
		transfer = transferFor(spec, workdir, props, facts)
	case drover.StepCheckout:
		src := spec.Source
		branch, revision := checkoutTarget(b, src)
		if proto >= checkoutProtocol {
			checkout = &pb.Checkout{
				Source: src.Name, Url: src.URL, Branch: branch, Revision: revision,
				Mode: spec.Mode, Method: spec.Method, Depth: int32(spec.Depth), Filter: spec.Filter,
				Submodules: spec.Submodules, RecloneOnFailure: spec.RecloneOnFailure,
			}
			break
		}
		env["DROVER_GIT_URL"] = src.URL
		env["DROVER_CHECKOUT_MODE"] = spec.Mode
		env["DROVER_GIT_BRANCH"] = branch
		env["DROVER_GIT_REVISION"] = revision
		argv = shellArgv(facts, checkoutScript)
	default:
		if spec.Shell {
			argv = shellArgv(facts, interpolate(spec.Command[0], props, facts))
		} else {
			for _, a := range spec.Command {
				argv = append(argv, interpolate(a, props, facts))
			}
		}
	}
	grace := spec.KillGrace
	if grace == 0 {
		grace = defaultKillGrace
	}
	return &pb.RunCommand{
		CommandId:         id,
		Builder:           builder.Name,
		Argv:              argv,
		Env:               env,
		Workdir:           workdir,
		NoOutputTimeoutMs: spec.Timeout.Milliseconds(),
		MaxTimeMs:         spec.MaxTime.Milliseconds(),
		KillGraceMs:       grace.Milliseconds(),
		BuildId:           b.ID,
		Step:              int32(idx),
		Transfer:          transfer,
		Checkout:          checkout,
	}
}

// checkoutTarget is the branch and revision a checkout of src in build b
// fetches. The build's source stamp applies when it names this repository
// (or none); another source of a multi-repository build is checked out at
// its default branch's head.
func checkoutTarget(b *drover.Build, src *drover.GitSource) (branch, revision string) {
	if b.Source.Repository == "" || b.Source.Repository == src.URL || b.Source.Repository == src.Name {
		branch, revision = b.Source.Branch, b.Source.Revision
	}
	if branch == "" && revision == "" && len(src.Branches) > 0 {
		branch = src.Branches[0]
	}
	return branch, revision
}

func shellArgv(facts drover.Facts, script string) []string {
	for _, os := range facts["os"] {
		if os == "windows" {
			return []string{"cmd", "/c", script}
		}
	}
	return []string{"sh", "-c", script}
}

// stepResult maps how a command ended to a step result and a summary.
func stepResult(spec *drover.StepSpec, f *pb.Finished) (drover.Result, string) {
	switch f.GetReason() {
	case pb.FinishReason_FINISH_REASON_CANCELLED:
		return drover.Cancelled, "cancelled"
	case pb.FinishReason_FINISH_REASON_START_FAILED:
		return drover.Exception, "could not start: " + f.GetError()
	case pb.FinishReason_FINISH_REASON_SOURCE_FAILED:
		// Infra, but the source's: retried, and blamed on the source by
		// name rather than on the worker (DECISIONS 13).
		return drover.Retry, fmt.Sprintf("source %s could not be fetched: %s", sourceName(spec), f.GetError())
	case pb.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT, pb.FinishReason_FINISH_REASON_MAX_TIME:
		return drover.Failure, "timed out: " + f.GetError()
	}
	code := int(f.GetExitCode())
	if r, ok := spec.DecodeRC[code]; ok {
		return r, fmt.Sprintf("exit %d (%s)", code, r)
	}
	if code == 0 {
		return drover.Success, ""
	}
	if f.GetExitCode() < 0 {
		return drover.Failure, "killed by a signal"
	}
	if spec.Kind == drover.StepCheckout && f.GetError() != "" {
		return drover.Failure, f.GetError() // no such branch or revision
	}
	return drover.Failure, fmt.Sprintf("exit %d", code)
}

// sourceName names a checkout step's source, for blame.
func sourceName(spec *drover.StepSpec) string {
	if spec.Source == nil {
		return "(none)"
	}
	return fmt.Sprintf("%s (%s)", spec.Source.Name, spec.Source.URL)
}

// applyStep folds a step's result into the build's, following the step's
// flags. It reports whether the build must stop running normal steps.
func applyStep(build drover.Result, spec *drover.StepSpec, r drover.Result) (drover.Result, bool) {
	switch r {
	case drover.Success, drover.Skipped:
		return build, false
	case drover.Warnings:
		return drover.Worst(build, drover.Warnings), false
	case drover.Failure:
		switch {
		case spec.FlunkOnFailure:
			build = drover.Worst(build, drover.Failure)
		case spec.WarnOnFailure:
			build = drover.Worst(build, drover.Warnings)
		}
		return build, spec.HaltOnFailure
	default: // exception, retry, cancelled: the infrastructure or a person stopped it
		return drover.Worst(build, r), true
	}
}

// extractProperties reads properties a step sets from its stdout.
func extractProperties(spec *drover.StepSpec, stdout []byte) drover.Properties {
	out := drover.Properties{}
	if spec.Kind == drover.StepCheckout {
		if m := gotRevision.FindSubmatch(stdout); m != nil {
			out["got_revision"] = string(m[1])
		}
	}
	if spec.SetProperty != "" {
		out[spec.SetProperty] = strings.TrimSpace(string(stdout))
	}
	for name, expr := range spec.Extract {
		re, err := regexp.Compile("(?m)" + expr)
		if err != nil {
			continue // the loader compiled it already
		}
		m := re.FindSubmatch(stdout)
		switch {
		case m == nil:
		case len(m) > 1:
			out[name] = string(m[1])
		default:
			out[name] = string(m[0])
		}
	}
	return out
}
