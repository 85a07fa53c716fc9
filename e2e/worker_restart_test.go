package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A worker process killed (SIGKILL) in the middle of a step loses
// nothing: the command runs on under its supervisor, a new worker process
// on the same directory adopts it, replays the output the master has not
// acknowledged, and reports its end; the log holds every line once, in
// order, and the build goes on.
func TestWorkerKilledMidStep(t *testing.T) {
	t.Parallel()
	// The command prints half its output, then waits for the test to
	// kill the worker and open the gate before it prints the rest.
	gate := filepath.Join(t.TempDir(), "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.builder(name = "slow", steps = [
    drover.shell("for i in $(seq 1 30); do echo line-$i; sleep 0.05; done; while [ ! -f %s ]; do sleep 0.05; done; for i in $(seq 31 60); do echo line-$i; sleep 0.05; done", name = "count"),
    drover.shell("echo next step ran", name = "next"),
])
`, gate))
	w := m.StartWorker(t, "w1")
	r := m.Force(t, "slow", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the first half of the output to reach the master", func() bool {
		rd, err := m.Client.Request(context.Background(), r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		d, err := m.Client.Build(context.Background(), rd.Builds[0].ID)
		return err == nil && strings.Contains(m.StepLog(t, d, 0), "line-30\n")
	})

	w.Kill() // SIGKILL: some output sent, the rest printed while no worker process runs
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w2 := testenv.Start(t, "worker w1 (restarted)", "worker", "run", "--dir", w.Dir, "--log-level", "debug")

	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("after the worker restart: build %d %s (%s)", d.Build.ID, d.Build.Result, d.Build.Summary)
	}
	log := m.StepLog(t, d, 0)
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "line-") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 60 {
		t.Errorf("log holds %d output lines, want 60 exactly once:\n%s", len(lines), log)
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line-%d", i+1) {
			t.Errorf("line %d is %q: lost, doubled or out of order", i+1, l)
			break
		}
	}
	if !strings.Contains(m.StepLog(t, d, 1), "next step ran") {
		t.Errorf("the next step did not run after the worker came back")
	}
	if !strings.Contains(w2.Output(), "adopting a command of a previous worker process") {
		t.Errorf("the new worker process did not adopt the command")
	}
}
