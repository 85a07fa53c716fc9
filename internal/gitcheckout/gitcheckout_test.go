package gitcheckout_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-ci/drover/internal/gitcheckout"
)

// The tests run the real git against "server" repositories made here:
// bare repositories served over file://, git's own transport, which
// honours uploadpack.allowFilter as a remote server does.

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("git"); err != nil {
		os.Stderr.WriteString("gitcheckout tests need git\n")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// env is an environment that no user or system git config reaches, with
// the file transport allowed for submodules (git refuses it by default
// since 2.38.1) and a fixed identity for commits.
func env(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	global := filepath.Join(home, "gitconfig")
	if err := os.WriteFile(global, []byte("[protocol \"file\"]\n\tallow = always\n[init]\n\tdefaultBranch = main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+global,
		"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada Lovelace", "GIT_COMMITTER_EMAIL=ada@example.org")
}

func git(t *testing.T, env []string, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// server is a bare repository and a working clone that pushes to it.
type server struct {
	t    *testing.T
	env  []string
	bare string
	work string
}

// URL is the server's file:// URL.
func (s *server) URL() string { return "file://" + filepath.ToSlash(s.bare) }

func newServer(t *testing.T, env []string) *server {
	t.Helper()
	root := t.TempDir()
	s := &server{t: t, env: env, bare: filepath.Join(root, "server.git"), work: filepath.Join(root, "work")}
	git(t, env, root, "init", "-q", "--bare", "-b", "main", s.bare)
	git(t, env, s.bare, "config", "uploadpack.allowFilter", "true")
	git(t, env, s.bare, "config", "uploadpack.allowAnySHA1InWant", "true")
	git(t, env, root, "init", "-q", "-b", "main", s.work)
	git(t, env, s.work, "remote", "add", "origin", s.bare)
	return s
}

// commit writes files (an empty value removes one) on the current branch
// and pushes it; it returns the revision.
func (s *server) commit(files map[string]string, msg string) string {
	s.t.Helper()
	for name, body := range files {
		p := filepath.Join(s.work, name)
		if body == "" {
			if err := os.Remove(p); err != nil {
				s.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	git(s.t, s.env, s.work, "add", "-A")
	git(s.t, s.env, s.work, "commit", "-q", "-m", msg)
	git(s.t, s.env, s.work, "push", "-q", "origin", "HEAD")
	return git(s.t, s.env, s.work, "rev-parse", "HEAD")
}

// checkout runs the checkout sp into dir and fails the test if it fails.
func checkout(t *testing.T, env []string, dir string, sp gitcheckout.Spec) (*gitcheckout.Result, string) {
	t.Helper()
	res, log, err := try(env, dir, sp)
	if err != nil {
		t.Fatalf("checkout: %v\n%s", err, log)
	}
	return res, log
}

func try(env []string, dir string, sp gitcheckout.Spec) (*gitcheckout.Result, string, error) {
	var buf bytes.Buffer
	sp.Dir, sp.Env, sp.Stdout = dir, env, &buf
	res, err := gitcheckout.Run(context.Background(), sp)
	return res, buf.String(), err
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// An incremental checkout clones once, then fetches into the same clone:
// tracked files follow the revision, untracked files stay.
func TestIncremental(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	r1 := s.commit(map[string]string{"VERSION": "1\n", ".gitignore": "*.o\n"}, "one")
	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main"}

	res, log := checkout(t, e, dir, sp)
	if res.Revision != r1 || res.Recloned || read(t, filepath.Join(dir, "VERSION")) != "1\n" {
		t.Fatalf("first checkout = %+v, VERSION %q\n%s", res, read(t, filepath.Join(dir, "VERSION")), log)
	}
	if !strings.Contains(log, "$ git clone --no-checkout --progress --branch main -- "+s.URL()) {
		t.Errorf("the log does not show the clone:\n%s", log)
	}
	write(t, filepath.Join(dir, "VERSION"), "changed by the build\n")
	write(t, filepath.Join(dir, "notes.txt"), "untracked\n")
	write(t, filepath.Join(dir, "main.o"), "ignored\n")
	marker := filepath.Join(dir, ".git", "drover-test-marker")
	write(t, marker, "the same clone\n")

	r2 := s.commit(map[string]string{"VERSION": "2\n"}, "two")
	res, log = checkout(t, e, dir, sp)
	if res.Revision != r2 || read(t, filepath.Join(dir, "VERSION")) != "2\n" {
		t.Fatalf("second checkout = %+v, VERSION %q\n%s", res, read(t, filepath.Join(dir, "VERSION")), log)
	}
	if !strings.Contains(log, "$ git fetch --force --progress origin +refs/heads/main:refs/remotes/origin/main") {
		t.Errorf("the second checkout did not fetch into the clone:\n%s", log)
	}
	for _, f := range []string{"notes.txt", "main.o", ".git/drover-test-marker"} {
		if !exists(filepath.Join(dir, f)) {
			t.Errorf("incremental checkout removed %s", f)
		}
	}

	// A revision older than the branch's head is checked out by its id.
	sp.Revision = r1
	res, _ = checkout(t, e, dir, sp)
	if res.Revision != r1 || read(t, filepath.Join(dir, "VERSION")) != "1\n" {
		t.Errorf("checkout of %s = %+v", r1, res)
	}
}

// A full checkout removes what the build left: "clean" keeps ignored
// files, "fresh" removes them too, "clobber" removes the clone itself.
func TestFullMethods(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	rev := s.commit(map[string]string{"VERSION": "1\n", ".gitignore": "*.o\n"}, "one")
	tests := []struct {
		method                        string
		untracked, ignored, sameClone bool
	}{
		{"", false, false, true}, // fresh is the default, as in Buildbot
		{gitcheckout.MethodClean, false, true, true},
		{gitcheckout.MethodFresh, false, false, true},
		{gitcheckout.MethodClobber, false, false, false},
	}
	for _, tt := range tests {
		t.Run("method="+tt.method, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "build")
			sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{Mode: gitcheckout.ModeFull, Method: tt.method}}
			checkout(t, e, dir, sp)
			write(t, filepath.Join(dir, "VERSION"), "changed by the build\n")
			write(t, filepath.Join(dir, "sub", "notes.txt"), "untracked\n")
			write(t, filepath.Join(dir, "main.o"), "ignored\n")
			write(t, filepath.Join(dir, ".git", "drover-test-marker"), "the same clone\n")

			res, log := checkout(t, e, dir, sp)
			if res.Revision != rev || read(t, filepath.Join(dir, "VERSION")) != "1\n" {
				t.Errorf("checkout = %+v, VERSION %q", res, read(t, filepath.Join(dir, "VERSION")))
			}
			if got := exists(filepath.Join(dir, "sub", "notes.txt")); got != tt.untracked {
				t.Errorf("untracked file kept = %v, want %v\n%s", got, tt.untracked, log)
			}
			if got := exists(filepath.Join(dir, "main.o")); got != tt.ignored {
				t.Errorf("ignored file kept = %v, want %v\n%s", got, tt.ignored, log)
			}
			if got := exists(filepath.Join(dir, ".git", "drover-test-marker")); got != tt.sameClone {
				t.Errorf("clone kept = %v, want %v\n%s", got, tt.sameClone, log)
			}
		})
	}
}

// Without a branch the remote's HEAD is checked out; a branch other than
// the default is fetched by name.
func TestBranches(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	main := s.commit(map[string]string{"f": "main\n"}, "main")
	git(t, e, s.work, "checkout", "-q", "-b", "feature")
	feature := s.commit(map[string]string{"f": "feature\n"}, "feature")

	dir := filepath.Join(t.TempDir(), "build")
	if res, _ := checkout(t, e, dir, gitcheckout.Spec{URL: s.URL()}); res.Revision != main {
		t.Errorf("default branch: got %s, want main's %s", res.Revision, main)
	}
	if res, _ := checkout(t, e, dir, gitcheckout.Spec{URL: s.URL(), Branch: "feature"}); res.Revision != feature || read(t, filepath.Join(dir, "f")) != "feature\n" {
		t.Errorf("branch feature: got %s, want %s", res.Revision, feature)
	}
	fresh := filepath.Join(t.TempDir(), "build")
	if res, _ := checkout(t, e, fresh, gitcheckout.Spec{URL: s.URL(), Branch: "feature"}); res.Revision != feature {
		t.Errorf("clone of branch feature: got %s, want %s", res.Revision, feature)
	}
}

// depth makes a shallow clone; a revision older than the fetched history
// is fetched by its id, shallow too.
func TestDepth(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	r1 := s.commit(map[string]string{"VERSION": "1\n"}, "one")
	s.commit(map[string]string{"VERSION": "2\n"}, "two")
	r3 := s.commit(map[string]string{"VERSION": "3\n"}, "three")

	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{Depth: 1}}
	res, log := checkout(t, e, dir, sp)
	if res.Revision != r3 {
		t.Fatalf("revision = %s, want %s", res.Revision, r3)
	}
	if !strings.Contains(log, "--depth 1") {
		t.Errorf("clone not shallow:\n%s", log)
	}
	if n := git(t, e, dir, "rev-list", "--count", "HEAD"); n != "1" {
		t.Errorf("a depth-1 clone has %s commits", n)
	}
	if git(t, e, dir, "rev-parse", "--is-shallow-repository") != "true" {
		t.Error("clone is not shallow")
	}

	sp.Revision = r1
	res, log = checkout(t, e, dir, sp)
	if res.Revision != r1 || read(t, filepath.Join(dir, "VERSION")) != "1\n" {
		t.Fatalf("checkout of the old revision = %+v\n%s", res, log)
	}
	if !strings.Contains(log, "$ git fetch --force --progress --depth 1 origin "+r1) {
		t.Errorf("old revision not fetched by id:\n%s", log)
	}

	// Depth 0 again: the clone gets its whole history.
	sp.Depth, sp.Revision = 0, ""
	checkout(t, e, dir, sp)
	if n := git(t, e, dir, "rev-list", "--count", "HEAD"); n != "3" {
		t.Errorf("after depth 0, %s commits, want 3", n)
	}
}

// filter = "blob:none" makes a partial clone: blobs of other revisions
// stay on the server until needed. A checkout with another filter (or
// none) clones anew.
func TestPartialClone(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	s.commit(map[string]string{"big.bin": strings.Repeat("old data\n", 1000)}, "one")
	rev := s.commit(map[string]string{"big.bin": strings.Repeat("new data\n", 1000)}, "two")

	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{Filter: "blob:none"}}
	res, log := checkout(t, e, dir, sp)
	if res.Revision != rev || !strings.HasPrefix(read(t, filepath.Join(dir, "big.bin")), "new data") {
		t.Fatalf("partial clone = %+v\n%s", res, log)
	}
	if got := git(t, e, dir, "config", "remote.origin.partialclonefilter"); got != "blob:none" {
		t.Errorf("partialclonefilter = %q", got)
	}
	// --missing=print lists what is not here without fetching it: the
	// old revision's blob.
	missing := git(t, e, dir, "rev-list", "--objects", "--all", "--missing=print")
	if !strings.Contains(missing, "\n?") && !strings.HasPrefix(missing, "?") {
		t.Errorf("a blob:none clone holds every object:\n%s", missing)
	}

	// Incremental again with the same filter: the same clone.
	write(t, filepath.Join(dir, ".git", "drover-test-marker"), "x")
	res, _ = checkout(t, e, dir, sp)
	if res.Recloned || !exists(filepath.Join(dir, ".git", "drover-test-marker")) {
		t.Errorf("same filter: recloned = %v", res.Recloned)
	}
	// Without the filter: a full clone, made anew.
	sp.Filter = ""
	res, log = checkout(t, e, dir, sp)
	if !res.Recloned || exists(filepath.Join(dir, ".git", "drover-test-marker")) {
		t.Errorf("filter dropped: recloned = %v\n%s", res.Recloned, log)
	}
	if missing := git(t, e, dir, "rev-list", "--objects", "--all", "--missing=print"); strings.Contains("\n"+missing, "\n?") {
		t.Errorf("a full clone misses objects:\n%s", missing)
	}
}

// submodules = True checks out submodules recursively, follows a moved
// submodule pointer, and cleans inside them in full mode.
func TestSubmodules(t *testing.T) {
	t.Parallel()
	e := env(t)
	lib := newServer(t, e)
	lib.commit(map[string]string{"lib.txt": "lib 1\n"}, "lib one")
	s := newServer(t, e)
	s.commit(map[string]string{"main.txt": "main\n"}, "main")
	git(t, e, s.work, "submodule", "add", "-q", lib.URL(), "vendor/lib")
	s.commit(nil, "add lib")

	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{Submodules: true}}
	_, log := checkout(t, e, dir, sp)
	if got := read(t, filepath.Join(dir, "vendor", "lib", "lib.txt")); got != "lib 1\n" {
		t.Fatalf("submodule file = %q\n%s", got, log)
	}

	lib.commit(map[string]string{"lib.txt": "lib 2\n"}, "lib two")
	git(t, e, filepath.Join(s.work, "vendor", "lib"), "pull", "-q", "origin", "main")
	s.commit(nil, "bump lib")
	write(t, filepath.Join(dir, "vendor", "lib", "junk.txt"), "untracked in the submodule\n")
	checkout(t, e, dir, sp)
	if got := read(t, filepath.Join(dir, "vendor", "lib", "lib.txt")); got != "lib 2\n" {
		t.Errorf("after the bump, submodule file = %q", got)
	}
	if !exists(filepath.Join(dir, "vendor", "lib", "junk.txt")) {
		t.Error("incremental checkout cleaned inside the submodule")
	}
	sp.Mode = gitcheckout.ModeFull
	checkout(t, e, dir, sp)
	if exists(filepath.Join(dir, "vendor", "lib", "junk.txt")) {
		t.Error("full checkout left an untracked file in the submodule")
	}

	// Without submodules = True they are not checked out.
	bare := filepath.Join(t.TempDir(), "build")
	checkout(t, e, bare, gitcheckout.Spec{URL: s.URL(), Branch: "main"})
	if exists(filepath.Join(bare, "vendor", "lib", "lib.txt")) {
		t.Error("submodule checked out without submodules = True")
	}
}

// corrupt breaks the clone in dir so that git cannot read it.
func corrupt(t *testing.T, dir string) {
	t.Helper()
	write(t, filepath.Join(dir, ".git", "HEAD"), "garbage\n")
	if err := os.RemoveAll(filepath.Join(dir, ".git", "objects")); err != nil {
		t.Fatal(err)
	}
}

// A corrupt clone fails the checkout as the worker's fault, unless
// reclone_on_failure is set: then it is removed and cloned anew, once.
func TestRecloneOnCorruption(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	rev := s.commit(map[string]string{"VERSION": "1\n"}, "one")
	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main"}
	checkout(t, e, dir, sp)

	corrupt(t, dir)
	_, log, err := try(e, dir, sp)
	if gitcheckout.KindOf(err) != gitcheckout.Worker {
		t.Fatalf("checkout of a corrupt clone: %v (kind %v), want a worker failure\n%s", err, gitcheckout.KindOf(err), log)
	}

	sp.RecloneOnFailure = true
	res, log := checkout(t, e, dir, sp)
	if !res.Recloned || res.Revision != rev || read(t, filepath.Join(dir, "VERSION")) != "1\n" {
		t.Errorf("reclone = %+v\n%s", res, log)
	}
	if !strings.Contains(log, "cloning anew") {
		t.Errorf("the log does not say it cloned anew:\n%s", log)
	}
}

// A source that cannot be reached fails the checkout as the source's
// fault, whether cloning or fetching into a clone, re-clone or not.
func TestUnreachableSource(t *testing.T) {
	t.Parallel()
	e := env(t)
	// A port that refuses connections: listened on, then closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/proj.git"
	l.Close()
	for _, url := range []string{"file://" + filepath.ToSlash(filepath.Join(t.TempDir(), "nothing-here.git")), refused} {
		dir := filepath.Join(t.TempDir(), "build")
		_, log, err := try(e, dir, gitcheckout.Spec{URL: url, Branch: "main"})
		if gitcheckout.KindOf(err) != gitcheckout.Source {
			t.Errorf("clone of %s: %v (kind %v), want a source failure\n%s", url, err, gitcheckout.KindOf(err), log)
		}
		if err != nil && !strings.Contains(err.Error(), url) {
			t.Errorf("the error does not name the source: %v", err)
		}
	}

	// A clone whose source went away.
	s := newServer(t, e)
	s.commit(map[string]string{"VERSION": "1\n"}, "one")
	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{RecloneOnFailure: true}}
	checkout(t, e, dir, sp)
	if err := os.Rename(s.bare, s.bare+".gone"); err != nil {
		t.Fatal(err)
	}
	_, log, err := try(e, dir, sp)
	if gitcheckout.KindOf(err) != gitcheckout.Source {
		t.Errorf("fetch from a vanished source: %v (kind %v), want a source failure\n%s", err, gitcheckout.KindOf(err), log)
	}
	if !exists(filepath.Join(dir, ".git")) && !strings.Contains(log, "cloning anew") {
		t.Errorf("the clone vanished without a word:\n%s", log)
	}
}

// A branch or revision the source does not have is not an infra failure.
func TestNotFound(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	s.commit(map[string]string{"VERSION": "1\n"}, "one")
	for name, sp := range map[string]gitcheckout.Spec{
		"missing branch":   {URL: s.URL(), Branch: "no-such-branch"},
		"missing revision": {URL: s.URL(), Branch: "main", Revision: strings.Repeat("ab", 20)},
	} {
		for _, existing := range []bool{false, true} {
			dir := filepath.Join(t.TempDir(), "build")
			if existing {
				checkout(t, e, dir, gitcheckout.Spec{URL: s.URL(), Branch: "main"})
			}
			sp.RecloneOnFailure = true
			_, log, err := try(e, dir, sp)
			if gitcheckout.KindOf(err) != gitcheckout.NotFound {
				t.Errorf("%s (existing clone %v): %v (kind %v), want not found\n%s", name, existing, err, gitcheckout.KindOf(err), log)
			}
			if strings.Contains(log, "cloning anew") {
				t.Errorf("%s: recloned for a missing ref:\n%s", name, log)
			}
		}
	}
}

// A checkout made by another user (git's ownership check) is still
// updated: the directory and its submodules are marked safe.directory on
// the commands. GIT_TEST_ASSUME_DIFFERENT_OWNER makes git treat every
// repository as another user's; the servers are marked safe in the
// global config, as a real server is owned by whoever runs it.
func TestSafeDirectory(t *testing.T) {
	t.Parallel()
	e := env(t)
	lib := newServer(t, e)
	lib.commit(map[string]string{"lib.txt": "lib\n"}, "lib")
	s := newServer(t, e)
	s.commit(map[string]string{"VERSION": "1\n"}, "one")
	git(t, e, s.work, "submodule", "add", "-q", lib.URL(), "lib")
	s.commit(nil, "add lib")
	dir := filepath.Join(t.TempDir(), "build")
	sp := gitcheckout.Spec{URL: s.URL(), Branch: "main", Options: gitcheckout.Options{Submodules: true, Mode: gitcheckout.ModeFull}}
	checkout(t, e, dir, sp)

	var global string
	for _, kv := range e {
		if v, ok := strings.CutPrefix(kv, "GIT_CONFIG_GLOBAL="); ok {
			global = v
		}
	}
	git(t, e, "", "config", "--file", global, "--add", "safe.directory", s.bare)
	git(t, e, "", "config", "--file", global, "--add", "safe.directory", lib.bare)
	other := append(e, "GIT_TEST_ASSUME_DIFFERENT_OWNER=1")
	cmd := exec.Command("git", "status")
	cmd.Dir, cmd.Env = dir, other
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "dubious ownership") {
		t.Fatalf("git status in a repository of \"another user\" did not refuse: %v\n%s", err, out)
	}
	rev := s.commit(map[string]string{"VERSION": "2\n"}, "two")
	res, log := checkout(t, other, dir, sp)
	if res.Revision != rev {
		t.Errorf("revision = %s, want %s\n%s", res.Revision, rev, log)
	}
}

// A checkout stops when its context ends, as a stopped checkout.
func TestStopped(t *testing.T) {
	t.Parallel()
	e := env(t)
	s := newServer(t, e)
	s.commit(map[string]string{"VERSION": "1\n"}, "one")
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("the step was cancelled")
	cancel(stop)
	var buf bytes.Buffer
	_, err := gitcheckout.Run(ctx, gitcheckout.Spec{Dir: filepath.Join(t.TempDir(), "b"), URL: s.URL(), Env: e, Stdout: &buf})
	if gitcheckout.KindOf(err) != gitcheckout.Stopped || !errors.Is(err, stop) {
		t.Errorf("cancelled checkout: %v (kind %v), want stopped by %v", err, gitcheckout.KindOf(err), stop)
	}
}

// Options are checked before git runs.
func TestValidate(t *testing.T) {
	good := []gitcheckout.Options{
		{}, {Mode: "incremental"}, {Mode: "full", Method: "fresh"}, {Mode: "full", Method: "clobber"},
		{Depth: 1, Filter: "blob:none"}, {Filter: "blob:limit=1m"}, {Filter: "tree:0"},
	}
	for _, o := range good {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	bad := []gitcheckout.Options{
		{Mode: "shallow"}, {Method: "fresh"}, {Mode: "full", Method: "copy"}, {Depth: -1}, {Filter: "sparse:oid=x"},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
