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

// A master killed (SIGKILL) in the middle of a build loses nothing: the
// command keeps running on its worker, which reconnects on its own; the
// restarted master re-attaches the build, the output printed meanwhile is
// replayed and stored exactly once, and the build goes on with its next
// step. A request queued while no worker could take it is still queued.
func TestMasterKilledMidBuild(t *testing.T) {
	t.Parallel()
	// The command prints half its output, then waits for the test to
	// kill the master and open the gate before it prints the rest.
	gate := filepath.Join(t.TempDir(), "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.builder(name = "slow", steps = [
    drover.shell("for i in $(seq 1 30); do echo line-$i; sleep 0.05; done; while [ ! -f %s ]; do sleep 0.05; done; for i in $(seq 31 60); do echo line-$i; sleep 0.05; done", name = "count"),
    drover.shell("echo next step ran", name = "next"),
])
drover.builder(name = "nobody", requires = {"os": "plan9"}, steps = [drover.shell("true")])
`, gate))
	w := m.StartWorker(t, "w1")
	r := m.Force(t, "slow", api.ForceRequest{})
	queued := m.Force(t, "nobody", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the first half of the output to be stored", func() bool {
		rd, err := m.Client.Request(context.Background(), r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		d, err := m.Client.Build(context.Background(), rd.Builds[0].ID)
		return err == nil && strings.Contains(m.StepLog(t, d, 0), "line-30\n")
	})

	m.Kill() // SIGKILL: some output stored, the rest printed while no master runs
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Restart(t, true) // already dead: started again on the same ports

	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("after restart: build %d %s (%s)", d.Build.ID, d.Build.Result, d.Build.Summary)
	}
	rd, err := m.Client.Request(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Builds) != 1 || rd.Request.Tries != 1 {
		t.Fatalf("request %d: %d builds, %d tries; want the one build re-attached", r.ID, len(rd.Builds), rd.Request.Tries)
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
		t.Errorf("the next step did not run after the re-attach")
	}
	q, err := m.Client.Request(context.Background(), queued.ID)
	if err != nil || q.Request.State != drover.RequestPending {
		t.Errorf("queued request after restart = %+v, %v", q, err)
	}
	if !strings.Contains(w.Output(), "connected to master") || !strings.Contains(m.Output(), "re-attaching a build") {
		t.Errorf("no sign of the worker reconnecting or the build being re-attached")
	}
}
