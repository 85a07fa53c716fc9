// Package testenv runs real Drover processes on loopback for end-to-end
// tests: it builds the drover binary once per test process, starts a
// master from a config in a temporary directory, starts workers that
// enroll with it over TLS, and tears everything down with t.Cleanup. When a
// test fails, the processes' output is printed.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of a drover binary built from this module, with
// the race detector when the tests run with it. It is built once per test
// process, unless $DROVER_TEST_BINARY names one.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// A binary built beforehand (by a caller that wants one build for
		// several test runs) is used as it is.
		if p := os.Getenv("DROVER_TEST_BINARY"); p != "" {
			binPath = p
			return
		}
		dir, err := os.MkdirTemp("", "drover-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "drover")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/drover-ci/drover/cmd/drover")
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Proc is a running drover process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs the drover binary with args; output is kept and printed if
// the test fails. The process is stopped (SIGTERM, then SIGKILL) at cleanup.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(Binary(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.Output())
		}
	})
	return p
}

// Output is what the process has printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Stop sends SIGTERM and, after timeout, SIGKILL.
func (p *Proc) Stop(timeout time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Kill()
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL to the process alone (not its children), as a crash.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Run runs the drover binary to completion and returns its output and exit
// code.
func Run(t testing.TB, timeout time.Duration, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("drover %s: timed out after %s\n%s", strings.Join(args, " "), timeout, out)
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("drover %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// Master is a running master process.
type Master struct {
	*Proc
	Dir         string
	HTTP        string // host:port
	Workers     string // host:port
	Fingerprint string
	AdminToken  string
	EnrollToken string
	Client      *api.Client
}

// URL is the master's base URL.
func (m *Master) URL() string { return "http://" + m.HTTP }

// Env is the environment for CLI commands against this master.
func (m *Master) Env() []string {
	return []string{"DROVER_MASTER=" + m.URL(), "DROVER_TOKEN=" + m.AdminToken}
}

// StartMaster initialises a master directory with config (Starlark text)
// and runs the master on loopback ports chosen by the system.
func StartMaster(t testing.TB, config string) *Master {
	t.Helper()
	dir := t.TempDir()
	// The config goes first: init keeps it, and puts the tokens in the
	// database it names.
	if err := os.WriteFile(filepath.Join(dir, "master.star"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	m := initMaster(t, dir)
	m.start(t)
	return m
}

// initMaster runs `drover master init DIR --json` with extra arguments
// and returns the master it describes, not yet started.
func initMaster(t testing.TB, dir string, extra ...string) *Master {
	t.Helper()
	args := append([]string{"master", "init", dir, "--json"}, extra...)
	out, code := Run(t, time.Minute, nil, args...)
	if code != 0 {
		t.Fatalf("drover %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	var secrets struct {
		CA     string `json:"ca_sha256"`
		Admin  string `json:"admin_token"`
		Enroll string `json:"enroll_token"`
	}
	if err := json.Unmarshal([]byte(out), &secrets); err != nil {
		t.Fatalf("master init output: %v\n%s", err, out)
	}
	return &Master{Dir: dir, Fingerprint: secrets.CA, AdminToken: secrets.Admin, EnrollToken: secrets.Enroll}
}

// StartSiteMaster starts a second master of m's site: its own directory
// with m's config (the same database and shared directory) and m's CA, so
// that workers pinned to m's fingerprint trust it too.
func (m *Master) StartSiteMaster(t testing.TB) *Master {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(m.Dir, "master.star"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.star"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	s := initMaster(t, dir, "--ca-from", m.Dir)
	if s.Fingerprint != m.Fingerprint {
		t.Fatalf("second master's CA %s, want the site's %s", s.Fingerprint, m.Fingerprint)
	}
	s.start(t)
	return s
}

func (m *Master) start(t testing.TB) {
	t.Helper()
	addrFile := filepath.Join(m.Dir, "addresses.json")
	_ = os.Remove(addrFile)
	// A restarted master comes back on the same ports, as a real one does,
	// so that its workers find it again.
	httpAddr, workersAddr := "127.0.0.1:0", "127.0.0.1:0"
	if m.HTTP != "" {
		httpAddr, workersAddr = m.HTTP, m.Workers
	}
	m.Proc = Start(t, "master", "master", "run", m.Dir, "--http", httpAddr, "--workers", workersAddr, "--log-level", "debug")
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := os.ReadFile(addrFile)
		if err == nil {
			var a struct{ HTTP, Workers string }
			if json.Unmarshal(data, &a) == nil && a.HTTP != "" {
				m.HTTP, m.Workers = a.HTTP, a.Workers
				break
			}
		}
		select {
		case <-m.Done():
			t.Fatalf("master exited at start: %v\n%s", m.err, m.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("master did not start in time\n%s", m.Output())
		}
	}
	m.Client = api.NewClient(m.URL(), m.AdminToken)
}

// Restart stops the master (gracefully, or with SIGKILL when kill is set)
// and starts it again on the same ports. A master that has already exited
// (after Kill, say) is just started again.
func (m *Master) Restart(t testing.TB, kill bool) {
	t.Helper()
	if kill {
		m.Kill()
	} else {
		m.Stop(30 * time.Second)
	}
	m.start(t)
}

// Worker is a running worker process.
type Worker struct {
	*Proc
	Name string
	Dir  string
}

// StartWorker enrolls and runs a worker named name with the given extra
// arguments (e.g. "--label", "gpu=yes"), and waits until the master sees it.
func (m *Master) StartWorker(t testing.TB, name string, extra ...string) *Worker {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"worker", "run", "--master", m.Workers, "--token", m.EnrollToken, "--name", name,
		"--dir", dir, "--ca-sha256", m.Fingerprint, "--log-level", "debug"}, extra...)
	w := &Worker{Proc: Start(t, "worker "+name, args...), Name: name, Dir: dir}
	m.WaitFor(t, 60*time.Second, fmt.Sprintf("worker %s connected", name), func() bool {
		ws, err := m.Client.Workers(context.Background())
		if err != nil {
			return false
		}
		for _, x := range ws {
			if x.Name == name && x.Connected {
				return true
			}
		}
		select {
		case <-w.Done():
			t.Fatalf("worker %s exited: %v\n%s", name, w.err, w.Output())
		default:
		}
		return false
	})
	return w
}

// WaitFor polls cond until it holds or timeout passes.
func (m *Master) WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Force queues a build and returns the request.
func (m *Master) Force(t testing.TB, builder string, req api.ForceRequest) *drover.BuildRequest {
	t.Helper()
	r, err := m.Client.Force(context.Background(), builder, req)
	if err != nil {
		t.Fatalf("force %s: %v", builder, err)
	}
	return r
}

// WaitBuild waits until request reqID has a finished build and returns it
// with its steps and logs.
func (m *Master) WaitBuild(t testing.TB, reqID int64, timeout time.Duration) *api.BuildDetail {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b, req, err := m.Client.WaitRequest(ctx, reqID)
	if err != nil {
		t.Fatalf("wait for request %d: %v", reqID, err)
	}
	if b == nil {
		t.Fatalf("request %d ended %s without a build", reqID, req.State)
	}
	d, err := m.Client.Build(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// StepLog returns the text of a build's log for step index.
func (m *Master) StepLog(t testing.TB, d *api.BuildDetail, step int) string {
	t.Helper()
	for _, l := range d.Logs {
		if l.StepIndex == step {
			var buf bytes.Buffer
			if err := m.Client.Log(context.Background(), l.ID, 0, false, &buf); err != nil {
				t.Fatal(err)
			}
			return buf.String()
		}
	}
	return ""
}

// Git runs git in dir with a fixed identity and no user config.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada Lovelace", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada Lovelace", "GIT_COMMITTER_EMAIL=ada@example.org", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// NewRepo makes a git repository with files committed on branch main.
func NewRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	Git(t, dir, "init", "-q", "-b", "main")
	Commit(t, dir, files, "initial commit")
	return dir
}

// Commit writes files into repo and commits them; it returns the revision.
func Commit(t testing.TB, repo string, files map[string]string, msg string) string {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, repo, "add", "-A")
	Git(t, repo, "commit", "-q", "-m", msg)
	return Git(t, repo, "rev-parse", "HEAD")
}

// ProcessAlive reports whether pid exists (and is not a zombie).
func ProcessAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "State:") {
			return !strings.Contains(sc.Text(), "Z")
		}
	}
	return true
}
