// Package e2e tests Drover end to end: the real drover binary as master and
// workers over loopback sockets, real git repositories, the real CLI.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

// A change pushed to a real git repository triggers a build through the
// poller and scheduler; the build checks out that revision and passes.
func TestPushTriggersBuild(t *testing.T) {
	t.Parallel()
	repo := testenv.NewRepo(t, map[string]string{"build.sh": "#!/bin/sh\necho building version $(cat VERSION)\n", "VERSION": "1\n"})
	m := testenv.StartMaster(t, fmt.Sprintf(`
src = drover.git(%q, branches = ["main"], poll = "1s")
drover.builder(
    name = "unit",
    requires = {"os": "linux"},
    steps = [
        drover.checkout(src),
        drover.shell("./build.sh", name = "compile"),
        drover.shell("test -f VERSION && echo tests pass on %%(prop:workername)s at %%(prop:got_revision)s", name = "test"),
    ],
)
drover.scheduler("main", source = src, branch = "main", builders = ["unit"])
`, repo))
	m.StartWorker(t, "w1")
	// The poller records the initial history first (it is not news) and
	// says so; a commit made after that is news.
	m.WaitFor(t, time.Minute, "the poller's first poll", func() bool {
		return strings.Contains(m.Output(), "poller started")
	})
	rev := testenv.Commit(t, repo, map[string]string{"VERSION": "2\n"}, "bump version")

	var b drover.Build
	m.WaitFor(t, 60*time.Second, "a finished build of the pushed revision", func() bool {
		bs, err := m.Client.Builds(context.Background(), api.BuildQuery{Builder: "unit"})
		if err != nil || len(bs) == 0 || bs[0].State != drover.BuildFinished {
			return false
		}
		b = bs[0]
		return true
	})
	if b.Result != drover.Success || b.Source.Revision != rev || b.Worker != "w1" {
		t.Fatalf("build = %+v, want success of %s on w1", b, rev)
	}
	d, err := m.Client.Build(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Build.Properties["got_revision"]; got != rev {
		t.Errorf("got_revision = %q, want %q", got, rev)
	}
	if log := m.StepLog(t, d, 1); !strings.Contains(log, "building version 2") {
		t.Errorf("compile log lacks the new version:\n%s", log)
	}
	if log := m.StepLog(t, d, 2); !strings.Contains(log, "tests pass on w1 at "+rev) {
		t.Errorf("test log lacks interpolated properties:\n%s", log)
	}
	changes, err := m.Client.Changes(context.Background(), 10)
	if err != nil || len(changes) != 1 || changes[0].Revision != rev || !strings.Contains(changes[0].Author, "Ada") {
		t.Errorf("changes = %+v, %v", changes, err)
	}

	// The CLI sees the same thing.
	out, code := testenv.Run(t, time.Minute, m.Env(), "builds", "--builder", "unit")
	if code != 0 || !strings.Contains(out, "success") || !strings.Contains(out, rev[:10]) {
		t.Errorf("drover builds: exit %d\n%s", code, out)
	}
	out, code = testenv.Run(t, time.Minute, m.Env(), "logs", strconv.FormatInt(b.ID, 10))
	if code != 0 || !strings.Contains(out, "building version 2") || !strings.Contains(out, "=== step 2: test ===") {
		t.Errorf("drover logs: exit %d\n%s", code, out)
	}
	// sendchange goes through the same scheduler.
	rev3 := testenv.Commit(t, repo, map[string]string{"VERSION": "3\n"}, "bump again")
	out, code = testenv.Run(t, time.Minute, m.Env(), "sendchange", "--repo", repo, "--branch", "main", "--revision", rev3, "--who", "Grace")
	if code != 0 {
		t.Fatalf("sendchange: exit %d\n%s", code, out)
	}
	m.WaitFor(t, 60*time.Second, "a build of "+rev3, func() bool {
		bs, _ := m.Client.Builds(context.Background(), api.BuildQuery{Builder: "unit"})
		for _, b := range bs {
			if b.Source.Revision == rev3 && b.State == drover.BuildFinished {
				return b.Result == drover.Success
			}
		}
		return false
	})
}

// A failing command fails the build, halts later steps but runs
// always_run ones, and `force --wait` exits 1.
func TestFailureAndStepSemantics(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(
    name = "semantics",
    steps = [
        drover.shell("echo VERSION=4.2; echo noise", name = "version", extract = {"version": "^VERSION=(.*)$"}),
        drover.shell("echo version is %(prop:version)s; exit 5", name = "lint", decode_rc = {0: "success", 5: "warnings"}),
        drover.shell("echo only on main", name = "main-only", when = {"branch": "main"}),
        drover.shell("echo compiling; exit 2", name = "compile"),
        drover.shell("echo never", name = "test"),
        drover.shell("echo cleaning up", name = "cleanup", always_run = True),
    ],
)
`)
	m.StartWorker(t, "w1")
	out, code := testenv.Run(t, 2*time.Minute, m.Env(), "force", "semantics", "--branch", "dev", "--wait")
	if code != 1 || !strings.Contains(out, "failure") {
		t.Fatalf("force --wait: exit %d, want 1\n%s", code, out)
	}
	bs, err := m.Client.Builds(context.Background(), api.BuildQuery{Builder: "semantics"})
	if err != nil || len(bs) != 1 {
		t.Fatalf("builds = %v, %v", bs, err)
	}
	d, err := m.Client.Build(context.Background(), bs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []drover.Result{drover.Success, drover.Warnings, drover.Skipped, drover.Failure, drover.Skipped, drover.Success}
	for i, s := range d.Steps {
		if s.Result != want[i] {
			t.Errorf("step %d %s = %s, want %s (%s)", i, s.Name, s.Result, want[i], s.Summary)
		}
	}
	if d.Steps[3].ExitCode == nil || *d.Steps[3].ExitCode != 2 {
		t.Errorf("compile exit code = %v", d.Steps[3].ExitCode)
	}
	if d.Build.Result != drover.Failure || !strings.Contains(d.Build.Summary, "compile") {
		t.Errorf("build = %s %q", d.Build.Result, d.Build.Summary)
	}
	if d.Build.Properties["version"] != "4.2" {
		t.Errorf("version property = %q", d.Build.Properties["version"])
	}
	if log := m.StepLog(t, d, 1); !strings.Contains(log, "version is 4.2") {
		t.Errorf("lint log:\n%s", log)
	}
	// A passing build makes force --wait exit 0.
	if _, err := m.Client.Force(context.Background(), "semantics", api.ForceRequest{}); err != nil {
		t.Fatal(err)
	}
}

var pidLine = regexp.MustCompile(`PIDS (\d+) (\d+) (\d+)`)

// A command that hangs is killed by its no-output timeout, with every
// process it started; a cancelled build stops its command the same way.
func TestTimeoutAndCancelKillTheTree(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(
    name = "hang",
    steps = [drover.shell("sleep 300 & a=$!; sleep 300 & b=$!; echo PIDS $$ $a $b; sleep 300", timeout = "2s", kill_grace = "1s")],
)
drover.builder(
    name = "long",
    steps = [drover.shell("sleep 300 & a=$!; sleep 300 & b=$!; echo PIDS $$ $a $b; while true; do echo tick; sleep 0.2; done", kill_grace = "1s")],
)
`)
	m.StartWorker(t, "w1", "--max-builds", "2")
	pidsOf := func(log string) []int {
		mm := pidLine.FindStringSubmatch(log)
		if mm == nil {
			t.Fatalf("no PIDS line in log:\n%s", log)
		}
		var pids []int
		for _, s := range mm[1:] {
			n, _ := strconv.Atoi(s)
			pids = append(pids, n)
		}
		return pids
	}

	r := m.Force(t, "hang", api.ForceRequest{})
	d := m.WaitBuild(t, r.ID, time.Minute)
	if d.Build.Result != drover.Failure || !strings.Contains(d.Steps[0].Summary, "timed out") {
		t.Errorf("hang build = %s, step summary %q", d.Build.Result, d.Steps[0].Summary)
	}
	for _, pid := range pidsOf(m.StepLog(t, d, 0)) {
		if testenv.ProcessAlive(pid) {
			t.Errorf("process %d survived the timeout", pid)
		}
	}

	r = m.Force(t, "long", api.ForceRequest{})
	var buildID int64
	var log string
	m.WaitFor(t, time.Minute, "the long build to print its PIDs", func() bool {
		rd, err := m.Client.Request(context.Background(), r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		buildID = rd.Builds[0].ID
		d, err := m.Client.Build(context.Background(), buildID)
		if err != nil {
			return false
		}
		log = m.StepLog(t, d, 0)
		return pidLine.MatchString(log)
	})
	out, code := testenv.Run(t, time.Minute, m.Env(), "cancel", strconv.FormatInt(buildID, 10), "--reason", "test says stop")
	if code != 0 {
		t.Fatalf("cancel: exit %d\n%s", code, out)
	}
	d = m.WaitBuild(t, r.ID, time.Minute)
	if d.Build.Result != drover.Cancelled {
		t.Errorf("cancelled build = %s (%s)", d.Build.Result, d.Build.Summary)
	}
	for _, pid := range pidsOf(log) {
		if testenv.ProcessAlive(pid) {
			t.Errorf("process %d survived the cancel", pid)
		}
	}
	// Cancelling a finished build is a conflict, reported as such.
	out, code = testenv.Run(t, time.Minute, m.Env(), "cancel", strconv.FormatInt(buildID, 10))
	if code == 0 || !strings.Contains(out, "finished") {
		t.Errorf("second cancel: exit %d\n%s", code, out)
	}
}

// Two workers serve one builder: concurrent requests spread across them.
func TestTwoWorkersShareABuilder(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(name = "shared", requires = {"pool": "blue"}, steps = [drover.shell("sleep 1; echo on %(prop:workername)s")])
`)
	m.StartWorker(t, "blue-1", "--label", "pool=blue")
	m.StartWorker(t, "blue-2", "--label", "pool=blue")
	m.StartWorker(t, "red-1", "--label", "pool=red")
	var reqs []*drover.BuildRequest
	for i := 0; i < 4; i++ {
		reqs = append(reqs, m.Force(t, "shared", api.ForceRequest{}))
	}
	used := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := m.WaitBuild(t, r.ID, 2*time.Minute)
			mu.Lock()
			defer mu.Unlock()
			used[d.Build.Worker]++
			if d.Build.Result != drover.Success {
				t.Errorf("build %d: %s", d.Build.ID, d.Build.Result)
			}
		}()
	}
	wg.Wait()
	if used["blue-1"] == 0 || used["blue-2"] == 0 || used["red-1"] != 0 {
		t.Errorf("builds per worker = %v, want both blue workers and no red one", used)
	}
	el, err := m.Client.Eligibility(context.Background(), "shared")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range el {
		if e.Worker == "red-1" && (e.Eligible || !strings.Contains(strings.Join(e.Reasons, ";"), "pool: is red, required blue")) {
			t.Errorf("red-1 eligibility = %+v", e)
		}
	}
	out, code := testenv.Run(t, time.Minute, m.Env(), "why", "shared", "red-1")
	if code != 0 || !strings.Contains(out, "red-1: NOT eligible for shared") || !strings.Contains(out, "pool: is red, required blue") {
		t.Errorf("drover why: exit %d\n%s", code, out)
	}
}

// A worker with a wrong token is refused and logged; nothing is registered.
func TestWrongTokenRefused(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `drover.builder(name = "b", steps = [drover.shell("true")])`)
	for _, tok := range []string{"drover_enroll_000000000000_wrongsecret", "not-a-token", m.AdminToken} {
		p := testenv.Start(t, "bad worker", "worker", "run", "--master", m.Workers, "--token", tok, "--name", "intruder",
			"--dir", t.TempDir(), "--ca-sha256", m.Fingerprint)
		if err := p.Wait(30 * time.Second); err == nil {
			t.Errorf("worker with token %q exited 0", tok[:10])
		}
		// A malformed token is refused by the worker itself; a wrong one by the master.
		if out := strings.ToLower(p.Output()); !strings.Contains(out, "refused") && !strings.Contains(out, "token must") {
			t.Errorf("worker output does not say why:\n%s", p.Output())
		}
	}
	// A wrong CA pin is refused by the worker before it sends its token.
	p := testenv.Start(t, "pinned worker", "worker", "run", "--master", m.Workers, "--token", m.EnrollToken, "--name", "pinned",
		"--dir", t.TempDir(), "--ca-sha256", "sha256:"+strings.Repeat("ab", 32))
	if err := p.Wait(30 * time.Second); err == nil || !strings.Contains(p.Output(), "fingerprint") {
		t.Errorf("worker with a wrong pin: %v\n%s", err, p.Output())
	}
	ws, err := m.Client.Workers(context.Background())
	if err != nil || len(ws) != 0 {
		t.Errorf("workers = %+v, %v; want none registered", ws, err)
	}
	if !strings.Contains(m.Output(), "refused") {
		t.Errorf("master did not log the refusal")
	}
	// A plain API write without a token is refused too.
	_, code := testenv.Run(t, time.Minute, []string{"DROVER_MASTER=" + m.URL(), "DROVER_TOKEN="}, "force", "b")
	if code == 0 {
		t.Error("force without a token succeeded")
	}
}

// A broken config is rejected with file:line by checkconfig and by a
// master that has no other config to run.
func TestBrokenConfigRejected(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "master.star")
	if err := os.WriteFile(cfg, []byte("drover.builder(name = \"ok\", steps = [drover.shell(\"true\")])\n\ndrover.builder(name = \"bad\", steps = [drover.shell(\"true\", timeout = \"soon\")])\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := testenv.Run(t, time.Minute, nil, "checkconfig", dir)
	if code != 1 || !regexp.MustCompile(`master\.star:3(:\d+)?: `).MatchString(out) {
		t.Errorf("checkconfig: exit %d, want 1 with master.star:3:\n%s", code, out)
	}
	out, code = testenv.Run(t, time.Minute, nil, "master", "run", dir, "--http", "127.0.0.1:0", "--workers", "127.0.0.1:0")
	if code != 1 || !strings.Contains(out, "master.star:3") {
		t.Errorf("master run with a broken config: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(cfg, []byte("drover.builder(name = \"ok\", steps = [drover.shell(\"true\")])\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := testenv.Run(t, time.Minute, nil, "checkconfig", cfg); code != 0 {
		t.Errorf("checkconfig of a good file: exit %d\n%s", code, out)
	}
}

// A running master offered a broken config (SIGHUP) refuses it with
// file:line, keeps serving the old one, and takes a good one.
func TestReloadKeepsOldConfigOnError(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `drover.builder(name = "one", steps = [drover.shell("true")])`)
	m.StartWorker(t, "w1")
	cfg := filepath.Join(m.Dir, "master.star")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("drover.builder(name = \"one\", steps = [drover.shell(\"true\")])\ndrover.builder(name = \"two\", steps = [])\n")
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m.WaitFor(t, 30*time.Second, "the refusal in the master's log", func() bool {
		return strings.Contains(m.Output(), "config refused") && strings.Contains(m.Output(), "master.star:2")
	})
	if d := m.WaitBuild(t, m.Force(t, "one", api.ForceRequest{}).ID, time.Minute); d.Build.Result != drover.Success {
		t.Errorf("build on the old config = %s", d.Build.Result)
	}
	write("drover.builder(name = \"one\", steps = [drover.shell(\"true\")])\ndrover.builder(name = \"two\", steps = [drover.shell(\"echo two\")])\n")
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m.WaitFor(t, 30*time.Second, "builder two", func() bool {
		_, err := m.Client.Builder(context.Background(), "two")
		return err == nil
	})
	if d := m.WaitBuild(t, m.Force(t, "two", api.ForceRequest{}).ID, time.Minute); d.Build.Result != drover.Success {
		t.Errorf("build on the new config = %s", d.Build.Result)
	}
}

// A command that prints far more than the log limit keeps head and tail
// with a marker, and the build still passes.
func TestHugeLogIsBounded(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.master(log_max_bytes = "1MiB")
drover.builder(name = "loud", steps = [drover.shell("echo FIRST-LINE; head -c 60000000 /dev/zero | tr '\\0' 'x'; echo; echo LAST-LINE")])
`)
	m.StartWorker(t, "w1")
	r := m.Force(t, "loud", api.ForceRequest{})
	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("build = %s (%s)", d.Build.Result, d.Build.Summary)
	}
	log := m.StepLog(t, d, 0)
	if len(log) > 1<<20+4096 || !strings.Contains(log, "FIRST-LINE") || !strings.Contains(log, "LAST-LINE") || !strings.Contains(log, "dropped") {
		t.Errorf("log of %d bytes; head %q … tail %q", len(log), log[:min(200, len(log))], log[max(0, len(log)-200):])
	}
	if len(d.Logs) != 1 || d.Logs[0].Dropped < 58_000_000 {
		t.Errorf("logs = %+v", d.Logs)
	}
}
