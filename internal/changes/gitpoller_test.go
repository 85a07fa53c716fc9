package changes

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.org", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func commit(t *testing.T, repo, file, msg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(repo, file), []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "add", file)
	git(t, repo, "commit", "-q", "-m", msg)
}

func TestGitPoller(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is required")
	}
	repo := t.TempDir()
	git(t, repo, "init", "-q", "-b", "main")
	commit(t, repo, "a.txt", "first")

	p := NewGitPoller(drover.GitSource{Name: "proj", URL: repo, Branches: []string{"main"}, Poll: time.Second},
		t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	cs, err := p.Poll(ctx)
	if err != nil || len(cs) != 0 {
		t.Fatalf("first poll = %v, %v; want nothing (history is not news)", cs, err)
	}
	cs, err = p.Poll(ctx)
	if err != nil || len(cs) != 0 {
		t.Fatalf("idle poll = %v, %v", cs, err)
	}
	commit(t, repo, "b.txt", "second\n\nwith a body")
	commit(t, repo, "c.txt", "third")
	cs, err = p.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("got %d changes, want 2: %+v", len(cs), cs)
	}
	head := git(t, repo, "rev-parse", "HEAD")
	if cs[1].Revision+"\n" != head || cs[0].Comments != "second\n\nwith a body" || cs[1].Branch != "main" ||
		cs[1].Author != "Ada <ada@example.org>" || len(cs[1].Files) != 1 || cs[1].Files[0] != "c.txt" {
		t.Errorf("changes = %+v / %+v", cs[0], cs[1])
	}
	// A new poller on the same state directory remembers what it saw.
	p2 := NewGitPoller(p.src, filepath.Dir(p.dir), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if cs, err := p2.Poll(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("poll after restart = %v, %v", cs, err)
	}
	// A bad URL is an error, not a panic or a hang.
	bad := NewGitPoller(drover.GitSource{Name: "bad", URL: filepath.Join(repo, "nope")}, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := bad.Poll(ctx); err == nil {
		t.Error("poll of a missing repository succeeded")
	}
}
