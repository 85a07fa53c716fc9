// Package gitcheckout checks out a revision of a git repository into a
// directory by running the git program with argv — never a shell — so the
// same code serves a worker on Linux, macOS, the BSDs and Windows. It is
// a leaf: it imports nothing of Drover's, so the worker's agent uses it
// for a checkout step and any other program (a VM host, `drover run`)
// may too.
//
// A checkout is, in order:
//
//	clobber (full mode, method "clobber"): the directory is emptied
//	update, when the directory holds a repository: remote set to the URL,
//	    fetch of the branch (or the remote's HEAD), fetch of the revision if
//	    the branch did not bring it, forced detached checkout, submodules,
//	    clean (full mode)
//	clone otherwise, or when the update failed and RecloneOnFailure is
//	    set, or when the repository was made with another filter: the
//	    directory is emptied and cloned anew, then the same steps
//
// Every git command is echoed to Stdout as "$ git …" before it runs, and
// its own output goes to Stdout and Stderr as it comes (fetch and clone
// with --progress, so that a long transfer is not mistaken for silence).
// Every command runs with -c safe.directory=<the directory>, so that a
// checkout made by another user (a worker that was run as root once) can
// still be updated; with GIT_TERMINAL_PROMPT=0, so that a URL that wants a
// password fails instead of waiting for one; and with the directory's
// parent as GIT_CEILING_DIRECTORIES, so that a damaged .git never makes
// git fall back on a repository that happens to enclose the worker's
// directory.
//
// Failures are classified (see Error and Kind) so that the caller can say
// whose fault they are: the source's (it could not be fetched from: infra,
// charged to the source), the worker's (git failed locally: infra,
// charged to the worker), or the request's (the source answered but has
// no such branch or revision: not infra).
package gitcheckout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Modes.
const (
	// ModeIncremental keeps the clone and its untracked files, fetches,
	// and checks out the revision over it (tracked files are reset).
	ModeIncremental = "incremental"
	// ModeFull also removes what the build left, as Method says.
	ModeFull = "full"
)

// Methods of a full checkout, with Buildbot's meanings.
const (
	// MethodClean removes untracked files but keeps ignored ones
	// (git clean -ffd): a build tree's ignored objects survive.
	MethodClean = "clean"
	// MethodFresh removes untracked and ignored files (git clean -ffdx):
	// the default, as in Buildbot.
	MethodFresh = "fresh"
	// MethodClobber deletes the whole directory and clones anew.
	MethodClobber = "clobber"
)

// Options are how a checkout is done.
type Options struct {
	// Mode is ModeIncremental (the default, "") or ModeFull.
	Mode string
	// Method is, for ModeFull only, MethodFresh (the default, ""),
	// MethodClean or MethodClobber.
	Method string
	// Depth, when more than 0, makes a shallow clone of that many commits.
	Depth int
	// Filter, when set, makes a partial clone with that filter (e.g.
	// "blob:none": blobs are fetched as a checkout needs them). The
	// server must allow filters (uploadpack.allowFilter).
	Filter string
	// Submodules checks out the submodules too, recursively, after
	// syncing their URLs from .gitmodules. Depth and Filter apply to the
	// top repository only.
	Submodules bool
	// RecloneOnFailure empties the directory and clones once more when an
	// update of an existing repository fails (a corrupt repository, a
	// fetch that fails): a second chance that costs a full clone.
	RecloneOnFailure bool
}

var filterRE = regexp.MustCompile(`^(blob:none|blob:limit=[0-9]+[kmg]?|tree:[0-9]+)$`)

// Validate reports the first thing wrong with o, in words for the config
// that set it.
func (o Options) Validate() error {
	switch o.Mode {
	case "", ModeIncremental, ModeFull:
	default:
		return fmt.Errorf("mode %q: want %q or %q", o.Mode, ModeIncremental, ModeFull)
	}
	switch o.Method {
	case "":
	case MethodClean, MethodFresh, MethodClobber:
		if o.Mode != ModeFull {
			return fmt.Errorf("method %q: only for mode %q", o.Method, ModeFull)
		}
	default:
		return fmt.Errorf("method %q: want %q, %q or %q", o.Method, MethodClean, MethodFresh, MethodClobber)
	}
	if o.Depth < 0 {
		return fmt.Errorf("depth %d: want 0 (all history) or more", o.Depth)
	}
	return CheckFilter(o.Filter)
}

// CheckFilter reports whether f is a partial-clone filter a checkout
// accepts: "" (none), "blob:none", "blob:limit=<size>" or "tree:<depth>".
func CheckFilter(f string) error {
	if f != "" && !filterRE.MatchString(f) {
		return fmt.Errorf("filter %q: want \"blob:none\", \"blob:limit=<size>\" or \"tree:<depth>\"", f)
	}
	return nil
}

// Spec is one checkout.
type Spec struct {
	// Dir is the working tree. It is made if missing; if it holds
	// anything but a git repository, that is removed.
	Dir string
	// URL is the repository, as git understands it.
	URL string
	// Branch is the branch to fetch; "" means the remote's HEAD.
	Branch string
	// Revision is the commit to check out; "" means the branch's head.
	Revision string
	Options
	// Git is the git program; "" means "git", found on the PATH.
	Git string
	// Env is git's environment; nil means this process's.
	Env []string
	// Stdout and Stderr receive what git prints and the commands run;
	// a nil Stderr means Stdout. They need not be safe for concurrent use.
	Stdout, Stderr io.Writer
	// IdleTimeout, when more than 0, kills a git command that prints
	// nothing for that long: the checkout fails with ErrIdle.
	IdleTimeout time.Duration
}

// Result is what a checkout did.
type Result struct {
	// Revision is the full id of the commit checked out (HEAD).
	Revision string
	// Recloned says the directory was emptied and cloned again after
	// its update failed or its clone no longer matched the options.
	Recloned bool
}

// Kind says whose fault a failed checkout is.
type Kind int

const (
	// Source: the repository could not be fetched from (unreachable,
	// refused, broken mid-transfer). Infra, charged to the source: when
	// it fails the same way on several workers, the source is down.
	Source Kind = iota + 1
	// Worker: git failed on this machine (no git, a full disk, a corrupt
	// repository that re-cloning did not mend). Infra, charged to the
	// worker.
	Worker
	// NotFound: the source answered, but has no such branch or revision.
	// Not infra: the request named something that is not there.
	NotFound
	// Stopped: the context ended, or a command was silent for
	// IdleTimeout (see ErrIdle): the caller knows why.
	Stopped
)

func (k Kind) String() string {
	switch k {
	case Source:
		return "source"
	case Worker:
		return "worker"
	case NotFound:
		return "not found"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// Error is a failed checkout.
type Error struct {
	Kind Kind
	// Op is what failed, in words: "fetch of branch main from URL".
	Op  string
	Err error
}

func (e *Error) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// KindOf is the kind of a checkout's error; 0 for nil or an error not
// from Run.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// ErrIdle is why a git command was killed after IdleTimeout of silence.
var ErrIdle = errors.New("no output from git: killed")

// waitDelay bounds the wait for git's output pipes after git itself has
// exited or been killed: a helper it started (ssh, git-remote-https) may
// hold them a little longer, never for ever.
const waitDelay = 5 * time.Second

// Run performs the checkout s describes and returns what it checked out.
// It returns an *Error when it fails.
func Run(ctx context.Context, s Spec) (*Result, error) {
	if err := s.Options.Validate(); err != nil {
		return nil, &Error{Kind: Worker, Op: "checkout options", Err: err}
	}
	if s.URL == "" {
		return nil, &Error{Kind: Worker, Op: "checkout", Err: errors.New("no repository URL")}
	}
	dir, err := filepath.Abs(s.Dir)
	if err != nil {
		return nil, &Error{Kind: Worker, Op: "checkout directory", Err: err}
	}
	if s.Stderr == nil {
		s.Stderr = s.Stdout
	}
	if s.Stdout == nil {
		s.Stdout, s.Stderr = io.Discard, io.Discard
	}
	r := &runner{s: s, dir: dir}
	r.out = &lockedWriter{w: s.Stdout}
	r.errw = r.out
	if s.Stderr != s.Stdout {
		r.errw = &lockedWriter{w: s.Stderr}
	}
	r.env = gitEnv(s.Env, dir)
	return r.run(ctx)
}

type runner struct {
	s         Spec
	dir       string // absolute
	env       []string
	out, errw io.Writer
	// subs are the checked-out submodules' directories, marked safe
	// like dir.
	subs []string
}

// errReclone asks for a clone anew whatever RecloneOnFailure says: the
// repository was made with other options than these.
type errReclone struct{ why string }

func (e errReclone) Error() string { return e.why }

func (r *runner) run(ctx context.Context) (*Result, error) {
	res := &Result{}
	if r.s.Mode == ModeFull && r.s.Method == MethodClobber {
		r.note("clobber: removing %s", r.dir)
		if err := emptyDir(r.dir); err != nil {
			return nil, &Error{Kind: Worker, Op: "clobber " + r.dir, Err: err}
		}
	}
	if isRepo(r.dir) {
		err := r.update(ctx)
		var again errReclone
		switch {
		case err == nil:
			return r.finish(ctx, res)
		case errors.As(err, &again):
			r.note("%s: cloning anew", again.why)
		case !r.s.RecloneOnFailure || KindOf(err) == NotFound || KindOf(err) == Stopped || ctx.Err() != nil:
			return nil, err
		default:
			r.note("update failed (%v): removing the repository and cloning anew", err)
		}
		res.Recloned = true
		r.subs = nil
		if err := emptyDir(r.dir); err != nil {
			return nil, &Error{Kind: Worker, Op: "empty " + r.dir, Err: err}
		}
	} else if entries, err := os.ReadDir(r.dir); err == nil && len(entries) > 0 {
		r.note("%s holds no git repository: emptying it for a clone", r.dir)
		if err := emptyDir(r.dir); err != nil {
			return nil, &Error{Kind: Worker, Op: "empty " + r.dir, Err: err}
		}
	}
	if err := r.clone(ctx); err != nil {
		return nil, err
	}
	return r.finish(ctx, res)
}

// update brings an existing repository to the wanted revision's commit
// being present, and checks it out.
func (r *runner) update(ctx context.Context) error {
	if _, err := r.capture(ctx, r.dir, "rev-parse", "--git-dir"); err != nil {
		return r.local(ctx, "read the repository in "+r.dir, err)
	}
	url, err := r.capture(ctx, r.dir, "config", "--get", "remote.origin.url")
	switch {
	case err != nil && exitCode(err) == 1: // no such key
		if err := r.git(ctx, r.dir, "remote", "add", "origin", r.s.URL); err != nil {
			return r.local(ctx, "add remote origin", err)
		}
	case err != nil:
		return r.local(ctx, "read remote origin", err)
	case url != r.s.URL:
		if err := r.git(ctx, r.dir, "remote", "set-url", "origin", r.s.URL); err != nil {
			return r.local(ctx, "set remote origin", err)
		}
	}
	filter, _ := r.capture(ctx, r.dir, "config", "--get", "remote.origin.partialclonefilter")
	if filter != r.s.Filter {
		return errReclone{fmt.Sprintf("the repository was cloned with filter %q, not %q", filter, r.s.Filter)}
	}
	args := []string{"fetch", "--force", "--progress"}
	switch shallow, _ := r.capture(ctx, r.dir, "rev-parse", "--is-shallow-repository"); {
	case r.s.Depth > 0:
		args = append(args, "--depth", strconv.Itoa(r.s.Depth))
	case shallow == "true":
		args = append(args, "--unshallow")
	}
	args = append(args, "origin", r.refspec())
	if err := r.git(ctx, r.dir, args...); err != nil {
		return r.remote(ctx, r.what(), err)
	}
	return r.checkout(ctx, "FETCH_HEAD")
}

// clone clones into the (empty or missing) directory, without checking
// out, and checks out the wanted revision.
func (r *runner) clone(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(r.dir), 0o755); err != nil {
		return &Error{Kind: Worker, Op: "create " + filepath.Dir(r.dir), Err: err}
	}
	args := []string{"clone", "--no-checkout", "--progress"}
	if r.s.Depth > 0 {
		args = append(args, "--depth", strconv.Itoa(r.s.Depth))
	}
	if r.s.Filter != "" {
		args = append(args, "--filter="+r.s.Filter)
	}
	if r.s.Branch != "" {
		args = append(args, "--branch", r.s.Branch)
	}
	args = append(args, "--", r.s.URL, r.dir)
	if err := r.git(ctx, filepath.Dir(r.dir), args...); err != nil {
		return r.remote(ctx, "clone of "+r.what(), err)
	}
	return r.checkout(ctx, "HEAD")
}

// refspec is what a fetch asks for: the branch, or the remote's HEAD.
func (r *runner) refspec() string {
	if r.s.Branch == "" {
		return "HEAD"
	}
	return "+refs/heads/" + r.s.Branch + ":refs/remotes/origin/" + r.s.Branch
}

// what names what is fetched, for errors.
func (r *runner) what() string {
	if r.s.Branch == "" {
		return "the default branch of " + r.s.URL
	}
	return "branch " + r.s.Branch + " of " + r.s.URL
}

// checkout checks out the revision, or target (what the fetch or clone
// brought) when no revision is asked for; a revision the fetch did not
// bring (older than a shallow fetch, or on no fetched branch) is fetched
// by its id.
func (r *runner) checkout(ctx context.Context, target string) error {
	if rev := r.s.Revision; rev != "" {
		if _, err := r.capture(ctx, r.dir, "rev-parse", "--quiet", "--verify", rev+"^{commit}"); err != nil {
			if ctx.Err() != nil {
				return r.stopped(ctx, "look up revision "+rev)
			}
			args := []string{"fetch", "--force", "--progress"}
			if r.s.Depth > 0 {
				args = append(args, "--depth", strconv.Itoa(r.s.Depth))
			}
			args = append(args, "origin", rev)
			if err := r.git(ctx, r.dir, args...); err != nil {
				return r.remote(ctx, "fetch of revision "+rev+" from "+r.s.URL, err)
			}
		}
		target = rev
	}
	if err := r.git(ctx, r.dir, "checkout", "--quiet", "--force", "--detach", target); err != nil {
		return r.local(ctx, "check out "+target, err)
	}
	return nil
}

// finish updates the submodules, cleans the tree in full mode and reads
// the revision checked out.
func (r *runner) finish(ctx context.Context, res *Result) (*Result, error) {
	if r.s.Submodules {
		// The submodules already checked out are marked safe before git
		// works in them; those the update adds, after.
		if err := r.findSubmodules(ctx); err != nil {
			return nil, r.local(ctx, "list submodules", err)
		}
		if err := r.git(ctx, r.dir, "submodule", "sync", "--recursive"); err != nil {
			return nil, r.local(ctx, "sync submodules", err)
		}
		if err := r.git(ctx, r.dir, "submodule", "update", "--init", "--recursive", "--force", "--progress"); err != nil {
			return nil, r.remote(ctx, "update of the submodules of "+r.s.URL, err)
		}
		if err := r.findSubmodules(ctx); err != nil {
			return nil, r.local(ctx, "list submodules", err)
		}
	}
	if r.s.Mode == ModeFull && r.s.Method != MethodClobber {
		args := []string{"clean", "-ffdx"}
		if r.s.Method == MethodClean {
			args = []string{"clean", "-ffd"}
		}
		for _, d := range append([]string{r.dir}, r.subs...) {
			if err := r.git(ctx, d, args...); err != nil {
				return nil, r.local(ctx, "clean "+d, err)
			}
		}
	}
	if err := r.git(ctx, r.dir, "log", "-1", "--format=%H %an: %s"); err != nil {
		return nil, r.local(ctx, "show the revision", err)
	}
	rev, err := r.capture(ctx, r.dir, "rev-parse", "HEAD")
	if err != nil {
		return nil, r.local(ctx, "read the revision", err)
	}
	res.Revision = rev
	return res, nil
}

// findSubmodules sets r.subs to the checked-out submodules, recursively,
// found from the index's gitlinks: no shell, unlike `git submodule
// foreach`. Each is marked safe before git looks inside it.
func (r *runner) findSubmodules(ctx context.Context) error {
	r.subs = nil
	return r.walkSubmodules(ctx, r.dir)
}

func (r *runner) walkSubmodules(ctx context.Context, dir string) error {
	out, err := r.capture(ctx, dir, "ls-files", "--stage", "-z")
	if err != nil {
		return err
	}
	for entry := range strings.SplitSeq(out, "\x00") {
		meta, path, ok := strings.Cut(entry, "\t")
		if !ok || !strings.HasPrefix(meta, "160000 ") {
			continue
		}
		sub := filepath.Join(dir, filepath.FromSlash(path))
		if !isRepo(sub) {
			continue // not initialised
		}
		r.subs = append(r.subs, sub)
		if err := r.walkSubmodules(ctx, sub); err != nil {
			return err
		}
	}
	return nil
}

// remote classifies a failed command that talks to the source. The
// source is asked (git ls-remote) whether it answers and has the branch:
// one that does not answer is at fault; one that answers without the
// branch, or without the revision asked for, makes the request wrong;
// one that answers and has it points at this repository.
func (r *runner) remote(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil || errors.Is(err, ErrIdle) {
		return r.stoppedErr(ctx, op, err)
	}
	r.note("asking whether %s answers (git ls-remote)", r.s.URL)
	args := []string{"ls-remote", "--", r.s.URL}
	if r.s.Branch != "" {
		args = append(args, "refs/heads/"+r.s.Branch)
	}
	refs, lerr := r.capture(ctx, filepath.Dir(r.dir), args...)
	switch {
	case ctx.Err() != nil:
		return r.stoppedErr(ctx, op, err)
	case lerr != nil:
		return &Error{Kind: Source, Op: op, Err: fmt.Errorf("%w (the source does not answer)", err)}
	case r.s.Branch != "" && !strings.Contains(refs, "refs/heads/"+r.s.Branch):
		return &Error{Kind: NotFound, Op: op, Err: fmt.Errorf("no branch %q at %s", r.s.Branch, r.s.URL)}
	case strings.HasPrefix(op, "fetch of revision"):
		return &Error{Kind: NotFound, Op: op, Err: fmt.Errorf("no revision %q at %s: %w", r.s.Revision, r.s.URL, err)}
	}
	return &Error{Kind: Worker, Op: op, Err: fmt.Errorf("%w (the source answers: the local repository is at fault)", err)}
}

// local classifies a failed command that works on this machine only.
func (r *runner) local(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil || errors.Is(err, ErrIdle) {
		return r.stoppedErr(ctx, op, err)
	}
	return &Error{Kind: Worker, Op: op, Err: err}
}

func (r *runner) stopped(ctx context.Context, op string) error {
	return r.stoppedErr(ctx, op, context.Cause(ctx))
}

func (r *runner) stoppedErr(ctx context.Context, op string, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(err, ErrIdle) {
		err = c
	}
	return &Error{Kind: Stopped, Op: op, Err: err}
}

// note writes a line of the checkout's own to its output.
func (r *runner) note(format string, args ...any) {
	fmt.Fprintf(r.out, format+"\n", args...)
}

// git runs one git command in dir, its output streamed.
func (r *runner) git(ctx context.Context, dir string, args ...string) error {
	return r.exec(ctx, dir, nil, args)
}

// capture runs one git command in dir and returns its stdout, trimmed;
// its stderr is streamed.
func (r *runner) capture(ctx context.Context, dir string, args ...string) (string, error) {
	var buf bytes.Buffer
	err := r.exec(ctx, dir, &buf, args)
	return strings.TrimSpace(buf.String()), err
}

func (r *runner) exec(ctx context.Context, dir string, stdout *bytes.Buffer, args []string) error {
	argv := r.argv(args)
	if stdout == nil {
		fmt.Fprintf(r.out, "$ git %s\n", strings.Join(args, " "))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	touch := func() {}
	if d := r.s.IdleTimeout; d > 0 {
		t := time.AfterFunc(d, func() { cancel(ErrIdle) })
		defer t.Stop()
		touch = func() { t.Reset(d) }
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = r.env
	setProcessGroup(cmd)
	cmd.WaitDelay = waitDelay
	var outw io.Writer = r.out
	if stdout != nil {
		outw = stdout
	}
	var last lastLine
	cmd.Stdout = &activityWriter{w: outw, touch: touch}
	cmd.Stderr = &activityWriter{w: io.MultiWriter(r.errw, &last), touch: touch}
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
		return fmt.Errorf("git %s: %w", args[0], c)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &gitError{sub: args[0], code: ee.ExitCode(), msg: last.String()}
	}
	return fmt.Errorf("run git %s: %w", args[0], err)
}

// argv is the full command line: git, the safe directories, args.
func (r *runner) argv(args []string) []string {
	git := r.s.Git
	if git == "" {
		git = "git"
	}
	argv := []string{git}
	for _, d := range append([]string{r.dir}, r.subs...) {
		argv = append(argv, "-c", "safe.directory="+safePath(d))
	}
	return append(argv, args...)
}

// safePath is a directory as git's safe.directory compares it: forward
// slashes, also on Windows.
func safePath(dir string) string {
	if runtime.GOOS == "windows" {
		return filepath.ToSlash(dir)
	}
	return dir
}

// gitError is a git command that exited non-zero; msg is the last line
// it printed on stderr, which says why.
type gitError struct {
	sub  string
	code int
	msg  string
}

func (e *gitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("git %s: exit status %d", e.sub, e.code)
	}
	return fmt.Sprintf("git %s: exit status %d: %s", e.sub, e.code, e.msg)
}

// lastLine keeps the last non-empty line written to it (lines end at
// "\n" or, for progress, "\r"), at most lastLineMax bytes of it.
type lastLine struct {
	line, cur []byte
}

const lastLineMax = 500

func (l *lastLine) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' || c == '\r' {
			if len(bytes.TrimSpace(l.cur)) > 0 {
				l.line = append(l.line[:0], l.cur...)
			}
			l.cur = l.cur[:0]
			continue
		}
		if len(l.cur) < lastLineMax {
			l.cur = append(l.cur, c)
		}
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	if len(bytes.TrimSpace(l.cur)) > 0 {
		return string(bytes.TrimSpace(l.cur))
	}
	return string(bytes.TrimSpace(l.line))
}

func exitCode(err error) int {
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.code
	}
	return -1
}

// repoLocating are the variables that point git at a repository other
// than the one in its working directory; a worker started from a git hook
// or a shell inside a checkout must not pass them on.
var repoLocating = []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
	"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES"}

// gitEnv is git's environment: base (or this process's) without the
// variables that relocate the repository, with prompts off and discovery
// stopped above dir.
func gitEnv(base []string, dir string) []string {
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+2)
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range repoLocating {
			if strings.EqualFold(name, n) || (name == "GIT_TERMINAL_PROMPT") {
				drop = true
				break
			}
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return append(env, "GIT_TERMINAL_PROMPT=0", "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))
}

// isRepo reports whether dir is the top of a working tree: it holds .git
// (a directory, or a file pointing at one).
func isRepo(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, ".git"))
	return err == nil
}

// emptyDir removes everything in dir, and makes dir if it is missing.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			// Read-only files (git's pack files on Windows) need their
			// write bit before they can go.
			_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
				if err == nil {
					_ = os.Chmod(path, 0o700)
				}
				return nil
			})
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// lockedWriter serializes writes from git's two output streams.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// activityWriter passes output on and says it came.
type activityWriter struct {
	w     io.Writer
	touch func()
}

func (a *activityWriter) Write(p []byte) (int, error) {
	a.touch()
	return a.w.Write(p)
}
