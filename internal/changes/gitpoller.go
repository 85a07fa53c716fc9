// Package changes turns activity in repositories into drover.Change
// values: a git poller now, webhook parsers next.
package changes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// gitTimeout bounds one git command so a hung remote cannot stall a
// poller forever.
const gitTimeout = 5 * time.Minute

// maxChangesPerPoll bounds how many commits one poll reports, so a push of
// a long history does not flood the change list.
const maxChangesPerPoll = 100

// GitPoller watches the branches of a git repository with the git program.
// It keeps a bare mirror under its state directory; the mirror's refs are
// its memory of what it has seen, so a restarted master neither re-reports
// old commits nor misses new ones. The first poll of a new mirror reports
// nothing (as Buildbot's does): history before the poller is not news.
type GitPoller struct {
	src    drover.GitSource
	dir    string
	logger *slog.Logger
}

// NewGitPoller makes a poller for src keeping its mirror under stateDir.
func NewGitPoller(src drover.GitSource, stateDir string, logger *slog.Logger) *GitPoller {
	sum := sha256.Sum256([]byte(src.URL))
	name := src.Name
	if name == "" {
		name = "repo"
	}
	return &GitPoller{
		src:    src,
		dir:    filepath.Join(stateDir, fmt.Sprintf("%s-%s.git", sanitize(name), hex.EncodeToString(sum[:4]))),
		logger: logger.With("component", "gitpoller", "source", src.Name),
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// Run polls every src.Poll until ctx is done, passing new changes to emit.
func (p *GitPoller) Run(ctx context.Context, emit func([]*drover.Change)) {
	interval := p.src.Poll
	if interval <= 0 {
		return
	}
	for {
		cs, err := p.Poll(ctx)
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("poll failed", "url", p.src.URL, "err", err)
		}
		if len(cs) > 0 {
			emit(cs)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Poll fetches once and returns the commits new since the last poll, oldest
// first.
func (p *GitPoller) Poll(ctx context.Context) ([]*drover.Change, error) {
	fresh := false
	if _, err := os.Stat(filepath.Join(p.dir, "HEAD")); os.IsNotExist(err) {
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			return nil, fmt.Errorf("poller state: %w", err)
		}
		if _, err := p.git(ctx, "init", "--bare", "--quiet"); err != nil {
			return nil, err
		}
		fresh = true
	}
	branches := p.src.Branches
	if len(branches) == 0 {
		branches = []string{"*"}
	}
	old, err := p.heads(ctx)
	if err != nil {
		return nil, err
	}
	args := []string{"fetch", "--quiet", "--force", "--prune", "--no-tags", p.src.URL}
	for _, b := range branches {
		args = append(args, fmt.Sprintf("+refs/heads/%s:refs/drover/%s", b, b))
	}
	if _, err := p.git(ctx, args...); err != nil {
		return nil, err
	}
	now, err := p.heads(ctx)
	if err != nil {
		return nil, err
	}
	if fresh {
		p.logger.Info("poller started", "url", p.src.URL, "branches", len(now))
		return nil, nil
	}
	var out []*drover.Change
	for branch, rev := range now {
		prev := old[branch]
		if prev == rev {
			continue
		}
		cs, err := p.commits(ctx, branch, prev, rev)
		if err != nil {
			return out, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// heads maps each mirrored branch to its commit.
func (p *GitPoller) heads(ctx context.Context) (map[string]string, error) {
	outp, err := p.git(ctx, "for-each-ref", "--format=%(objectname) %(refname)", "refs/drover/")
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(outp)), "\n") {
		rev, ref, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		heads[strings.TrimPrefix(ref, "refs/drover/")] = rev
	}
	return heads, nil
}

// fieldSep and recordSep split git log output; they cannot appear in
// commit metadata that git prints with these formats.
const (
	fieldSep  = "\x1f"
	recordSep = "\x1e"
)

func (p *GitPoller) commits(ctx context.Context, branch, from, to string) ([]*drover.Change, error) {
	rangeArg := to
	if from != "" {
		rangeArg = from + ".." + to
	}
	limit := fmt.Sprintf("--max-count=%d", maxChangesPerPoll)
	if from == "" {
		limit = "--max-count=1" // a new branch: report its head only
	}
	format := "--format=" + strings.Join([]string{"%H", "%an <%ae>", "%ct", "%B"}, fieldSep) + recordSep
	outp, err := p.git(ctx, "log", "--reverse", limit, format, rangeArg)
	if err != nil {
		return nil, err
	}
	var out []*drover.Change
	for _, rec := range strings.Split(string(outp), recordSep) {
		rec = strings.TrimLeft(rec, "\n")
		if rec == "" {
			continue
		}
		f := strings.SplitN(rec, fieldSep, 4)
		if len(f) < 4 {
			continue
		}
		var secs int64
		fmt.Sscan(f[2], &secs)
		out = append(out, &drover.Change{
			Repository: p.src.URL, Branch: branch, Revision: f[0], Author: f[1],
			Comments: strings.TrimSpace(f[3]), When: time.Unix(secs, 0).UTC(), Category: "poll",
		})
	}
	if len(out) > 0 {
		p.attachFiles(ctx, out)
	}
	return out, nil
}

func (p *GitPoller) attachFiles(ctx context.Context, cs []*drover.Change) {
	for _, c := range cs {
		outp, err := p.git(ctx, "diff-tree", "--no-commit-id", "--name-only", "-r", "--root", c.Revision)
		if err != nil {
			continue
		}
		for _, f := range strings.Split(strings.TrimSpace(string(outp)), "\n") {
			if f != "" {
				c.Files = append(c.Files, f)
			}
		}
	}
}

func (p *GitPoller) git(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_DIR="+p.dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
