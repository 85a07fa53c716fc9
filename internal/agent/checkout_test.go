package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

// gitRepo makes a bare repository with one commit on main, served over
// file:// with filters allowed, and returns its URL and the commit.
func gitRepo(t *testing.T) (url, rev string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	root := t.TempDir()
	env := append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+filepath.Join(root, "none"),
		"GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.org", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.org")
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	bare, work := filepath.Join(root, "proj.git"), filepath.Join(root, "work")
	git(root, "init", "-q", "--bare", "-b", "main", bare)
	git(bare, "config", "uploadpack.allowFilter", "true")
	git(root, "init", "-q", "-b", "main", work)
	if err := os.WriteFile(filepath.Join(work, "VERSION"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "VERSION")
	git(work, "commit", "-q", "-m", "one")
	git(work, "push", "-q", bare, "main")
	return "file://" + filepath.ToSlash(bare), git(work, "rev-parse", "HEAD")
}

// A checkout command is done by the worker with git: the revision is
// published as got_revision before the Finished, and a source that cannot
// be fetched from ends as SOURCE_FAILED, the source's fault.
func TestCheckoutCommand(t *testing.T) {
	url, rev := gitRepo(t)
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)

	s.Run(&workerproto.RunCommand{CommandId: "co1", Builder: "b", Workdir: "build",
		Checkout: &workerproto.Checkout{Source: "proj", Url: url, Branch: "main", Mode: "full", Filter: "blob:none"}})
	var published string
	var out strings.Builder
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := s.Next(t, time.Until(deadline))
		if u := msg.GetStepUpdate(); u != nil && u.GetCommandId() == "co1" {
			published = u.GetProperties()["got_revision"]
		}
		if o := msg.GetOutput(); o != nil {
			out.Write(o.GetData())
		}
		if f := msg.GetFinished(); f != nil {
			if f.GetExitCode() != 0 || f.GetReason() != workerproto.FinishReason_FINISH_REASON_EXITED {
				t.Fatalf("checkout finished %v\n%s", f, out.String())
			}
			break
		}
	}
	if published != rev {
		t.Errorf("got_revision published before the Finished = %q, want %q", published, rev)
	}
	if !strings.Contains(out.String(), "got_revision="+rev) || !strings.Contains(out.String(), "$ git clone") {
		t.Errorf("output lacks the clone or the revision:\n%s", out.String())
	}
	if b, err := os.ReadFile(filepath.Join(dir, "b", "build", "VERSION")); err != nil || string(b) != "1\n" {
		t.Errorf("checked-out VERSION = %q, %v", b, err)
	}

	gone := "file://" + filepath.ToSlash(filepath.Join(t.TempDir(), "gone.git"))
	s.Run(&workerproto.RunCommand{CommandId: "co2", Builder: "b", Workdir: "other",
		Checkout: &workerproto.Checkout{Source: "gone", Url: gone, Branch: "main", Mode: "incremental"}})
	_, f := s.Collect(t, "co2", 30*time.Second)
	if f.GetReason() != workerproto.FinishReason_FINISH_REASON_SOURCE_FAILED || !strings.Contains(f.GetError(), gone) {
		t.Errorf("checkout of a missing source finished %v, want SOURCE_FAILED naming it", f)
	}

	// Options the worker does not know fail the command, not guessed at.
	s.Run(&workerproto.RunCommand{CommandId: "co3", Builder: "b",
		Checkout: &workerproto.Checkout{Url: url, Mode: "sideways"}})
	_, f = s.Collect(t, "co3", 30*time.Second)
	if f.GetReason() != workerproto.FinishReason_FINISH_REASON_START_FAILED || !strings.Contains(f.GetError(), "sideways") {
		t.Errorf("checkout with a bad mode finished %v, want START_FAILED", f)
	}
}
