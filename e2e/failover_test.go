package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A worker killed with SIGKILL in the middle of a step does not come back:
// after the grace period its build ends as retry (an infra result charged
// to the worker) and the request runs again on another eligible worker and
// passes, with no action from anyone.
func TestFailoverAfterWorkerSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	pidFile := filepath.Join(dir, "pgid")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(worker_grace = "2s")
drover.builder(name = "pool", requires = {"pool": "p"}, steps = [
    drover.shell("echo $DROVER_WORKER >> %s; if [ $DROVER_WORKER = doomed ]; then echo $$ > %s; sleep 300; fi; echo done on $DROVER_WORKER"),
])
`, started, pidFile))
	doomed := m.StartWorker(t, "doomed", "--label", "pool=p")
	// The killed worker never comes back, so nobody adopts its command,
	// which runs on under its supervisor (as it must, for a worker that
	// does come back). The test stops both before its directories go.
	t.Cleanup(func() {
		// The command's shell and the supervisor each lead a process
		// group: kill the groups, then wait for the leaders to be gone
		// (the supervisor is what writes into the worker directory).
		var leaders []int
		files, _ := filepath.Glob(filepath.Join(doomed.Dir, "run", "*", "pid"))
		for _, f := range append(files, pidFile) {
			if b, err := os.ReadFile(f); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
					_ = syscall.Kill(-pid, syscall.SIGKILL)
					leaders = append(leaders, pid)
				}
			}
		}
		m.WaitFor(t, 10*time.Second, fmt.Sprintf("the doomed worker's command and supervisor (pids %v) to die", leaders), func() bool {
			for _, pid := range leaders {
				if testenv.ProcessAlive(pid) {
					return false
				}
			}
			return true
		})
	})
	r := m.Force(t, "pool", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the build to start on the doomed worker", func() bool {
		b, err := os.ReadFile(started)
		return err == nil && strings.Contains(string(b), "doomed")
	})
	m.StartWorker(t, "spare", "--label", "pool=p")
	doomed.Kill()

	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success || d.Build.Worker != "spare" {
		t.Fatalf("final build %d on %s: %s (%s)", d.Build.ID, d.Build.Worker, d.Build.Result, d.Build.Summary)
	}
	rd, err := m.Client.Request(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var lost *drover.Build
	for i := range rd.Builds {
		if rd.Builds[i].Worker == "doomed" {
			lost = &rd.Builds[i]
		}
	}
	if lost == nil || lost.Result != drover.Retry || !strings.Contains(lost.Summary, "did not come back") {
		t.Errorf("build on the killed worker = %+v", lost)
	}
}
