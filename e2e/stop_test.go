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

// `drover master stop` (SIGTERM) takes no new builds but lets a running
// one finish within stop_grace, with its worker still connected; the build
// ends as success, not retry. A queued request stays queued for the next
// start.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	// The command waits for two gates: one opened once the master
	// drains, to show it still carries the build's output; one to end.
	tmp := t.TempDir()
	draining, gate := filepath.Join(tmp, "draining"), filepath.Join(tmp, "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(stop_grace = "1m")
drover.builder(name = "long", steps = [drover.shell("echo started; while [ ! -f %s ]; do sleep 0.1; done; echo output-while-draining; while [ ! -f %s ]; do sleep 0.1; done; echo finished")])
`, draining, gate))
	m.StartWorker(t, "w1")
	ctx := context.Background()
	r := m.Force(t, "long", api.ForceRequest{})
	var buildID int64
	m.WaitFor(t, time.Minute, "the build to start", func() bool {
		rd, err := m.Client.Request(ctx, r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		buildID = rd.Builds[0].ID
		return true
	})
	queued := m.Force(t, "long", api.ForceRequest{})

	stop := testenv.Start(t, "master stop", "master", "stop", m.Dir, "--graceful", "--timeout", "2m")
	m.WaitFor(t, 30*time.Second, "the master to start draining", func() bool {
		return strings.Contains(m.Output(), "stopping gracefully")
	})
	// Draining, the master still drives the build: output printed after
	// the stop began reaches it and is stored. Had it exited instead, the
	// wait fails at once.
	if err := os.WriteFile(draining, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.WaitFor(t, 30*time.Second, "output printed after the stop began to be stored", func() bool {
		select {
		case <-m.Done():
			t.Fatal("master exited while a build was running within its grace")
		default:
		}
		d, err := m.Client.Build(ctx, buildID)
		return err == nil && strings.Contains(m.StepLog(t, d, 0), "output-while-draining")
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := stop.Wait(time.Minute); err != nil {
		t.Fatalf("master stop: %v\n%s", err, stop.Output())
	}
	if !strings.Contains(stop.Output(), "master stopped") {
		t.Errorf("master stop output:\n%s", stop.Output())
	}

	restarted := time.Now()
	m.Restart(t, false)
	rd, err := m.Client.Request(ctx, r.ID)
	if err != nil || len(rd.Builds) != 1 || rd.Builds[0].Result != drover.Success {
		t.Fatalf("drained build = %+v, %v; want one successful build", rd, err)
	}
	// The request queued before the stop never started then; it runs
	// after the restart (its worker comes back on its own).
	d := m.WaitBuild(t, queued.ID, time.Minute)
	if d.Build.Started.Before(restarted) || d.Build.Result != drover.Success {
		t.Errorf("request queued during the stop: build started %s (restart at %s), %s", d.Build.Started, restarted, d.Build.Result)
	}
}
