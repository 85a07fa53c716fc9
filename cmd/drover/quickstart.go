//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/agent"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
)

func quickstartCmd(g *globals) *cobra.Command {
	var dir, httpAddr string
	var workers int
	c := &cobra.Command{
		Use:   "quickstart",
		Short: "Run a master, local workers and a sample project, and build it",
		Long: `Quickstart creates a directory holding a master (SQLite store), a sample
project in a real git repository, and local workers; starts them all in this
process; forces a first build and prints its URL. Commit to the sample
repository and a build starts on its own. Stop with Ctrl-C; run again to
carry on where you left off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return quickstart(cmd.Context(), g, dir, httpAddr, workers)
		},
	}
	c.Flags().StringVar(&dir, "dir", "drover-quickstart", "directory for the master, workers and sample repository")
	c.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8010", "web UI and API address")
	c.Flags().IntVar(&workers, "workers", 2, "local workers to start")
	return c
}

// sampleFiles are the sample project: a small Go program with a test, since
// a machine that runs `go run` has what it needs to build it.
var sampleFiles = map[string]string{
	"go.mod": "module example.org/hello\n\ngo 1.22\n",
	"hello.go": `// Command hello greets.
package main

import "fmt"

// Greeting is what hello says to name.
func Greeting(name string) string { return "Hello, " + name + "!" }

func main() { fmt.Println(Greeting("Drover")) }
`,
	"hello_test.go": `package main

import "testing"

func TestGreeting(t *testing.T) {
	if got := Greeting("Drover"); got != "Hello, Drover!" {
		t.Fatalf("Greeting = %q", got)
	}
}
`,
}

func sampleConfig(repo string) string {
	return fmt.Sprintf(`# Quickstart config: a sample Go project in a local git repository.
drover.master(title = "Drover quickstart")

hello = drover.git(%q, branches = ["main"], poll = "5s")

drover.builder(
    name = "hello",
    description = "Builds and tests the sample project",
    requires = {"os": "*"},
    classes = {"lang": "go"},
    stable = True,
    steps = [
        drover.checkout(hello),
        drover.shell("go vet ./... && go build -o hello . && ./hello", name = "compile", timeout = "5m"),
        drover.shell("go test -v ./...", name = "test", timeout = "5m"),
    ],
)

drover.scheduler("main", source = hello, branch = "main", builders = "*")
`, repo)
}

func gitRun(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Drover Quickstart", "GIT_AUTHOR_EMAIL=quickstart@drover.invalid",
		"GIT_COMMITTER_NAME=Drover Quickstart", "GIT_COMMITTER_EMAIL=quickstart@drover.invalid")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// makeSampleRepo creates the sample repository unless it exists.
func makeSampleRepo(ctx context.Context, repo string) error {
	if _, err := os.Stat(filepath.Join(repo, ".git")); err == nil {
		return nil
	}
	if _, err := exec.LookPath("git"); err != nil {
		return errors.New("quickstart needs the git program on PATH")
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return err
	}
	for name, body := range sampleFiles {
		if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := gitRun(ctx, repo, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := gitRun(ctx, repo, "add", "."); err != nil {
		return err
	}
	return gitRun(ctx, repo, "commit", "-q", "-m", "Sample project")
}

func quickstart(ctx context.Context, g *globals, dir, httpAddr string, nworkers int) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	logger := g.logger()
	repo := filepath.Join(dir, "sample-repo")
	if err := makeSampleRepo(ctx, repo); err != nil {
		return fmt.Errorf("sample repository: %w", err)
	}
	mdir := filepath.Join(dir, "master")
	secrets, err := initDir(ctx, mdir, sampleConfig(repo), nil, "")
	if err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(mdir, configFile))
	if err != nil {
		return exitError{code: 1, msg: "drover: config refused:\n" + err.Error()}
	}
	sm, err := openMaster(ctx, masterSetup{dir: mdir, cfg: cfg, configPath: filepath.Join(mdir, configFile),
		httpAddr: httpAddr, workersAddr: "127.0.0.1:0", logger: logger})
	if err != nil {
		return err
	}
	m := sm.m.API()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return sm.run(ctx) })
	for i := 1; i <= nworkers; i++ {
		a, err := agent.New(agent.Config{
			Masters: []string{sm.WorkersAddr()}, Name: fmt.Sprintf("local-%d", i), Token: secrets.enrollToken,
			Dir: filepath.Join(dir, "workers", fmt.Sprintf("local-%d", i)), CAFingerprint: sm.fingerprint,
			Labels: map[string]string{"quickstart": "yes"}, Version: version, Logger: logger,
		})
		if err != nil {
			cancel()
			_ = eg.Wait()
			return err
		}
		eg.Go(func() error { return a.Run(ctx) })
	}

	req := &drover.BuildRequest{Builder: "hello", Reason: "quickstart"}
	if err := m.Force(ctx, req); err != nil {
		cancel()
		_ = eg.Wait()
		return err
	}
	url := m.URL()
	if b := waitForBuild(ctx, m.Reader(), req.ID); b != nil {
		url = fmt.Sprintf("%s/builds/%d", m.URL(), b.ID)
	}
	fmt.Fprintf(g.stdout, `
Drover is running.

  First build:    %s
  Web UI:         %s
  Sample project: %s  (commit to it: a build starts within seconds)
  Master dir:     %s

Try the CLI from another terminal:
  export DROVER_MASTER=%s DROVER_TOKEN=%s
  go run ./cmd/drover builds
  go run ./cmd/drover force hello --wait

Press Ctrl-C to stop.
`, url, m.URL(), repo, mdir, m.URL(), secrets.adminToken)
	err = eg.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	fmt.Fprintln(g.stdout, "Drover stopped.")
	return err
}

// waitForBuild waits briefly for the request's build to start so that the
// URL printed is the build's own page.
func waitForBuild(ctx context.Context, st api.Reader, reqID int64) *drover.Build {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		bs, err := st.ListBuilds(ctx, drover.BuildFilter{RequestID: reqID, Limit: 1})
		if err == nil && len(bs) > 0 {
			return &bs[0]
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
