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

// A master killed in the middle of a build loses nothing: after it starts
// again, its worker reconnects on its own (backoff), the interrupted build
// is recorded as retry (an infra result), and the request runs again to
// success. A request queued while no worker could take it is still queued.
func TestMasterKilledMidBuild(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "runs")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(max_retries = 3)
drover.builder(name = "slow", steps = [drover.shell("echo run >> %s; n=$(wc -l < %s); if [ $n -eq 1 ]; then sleep 300; fi; echo finished run $n")])
drover.builder(name = "nobody", requires = {"os": "plan9"}, steps = [drover.shell("true")])
`, marker, marker))
	w := m.StartWorker(t, "w1")
	r := m.Force(t, "slow", api.ForceRequest{})
	queued := m.Force(t, "nobody", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the first run to start", func() bool {
		b, err := os.ReadFile(marker)
		return err == nil && len(b) > 0
	})

	m.Restart(t, true) // SIGKILL

	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success || !strings.Contains(m.StepLog(t, d, 0), "finished run 2") {
		t.Fatalf("after restart: build %d %s (%s)", d.Build.ID, d.Build.Result, d.Build.Summary)
	}
	rd, err := m.Client.Request(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Builds) != 2 || rd.Request.Tries != 2 {
		t.Fatalf("request %d: %d builds, %d tries; want 2 and 2", r.ID, len(rd.Builds), rd.Request.Tries)
	}
	for _, b := range rd.Builds {
		if b.ID != d.Build.ID && b.Result != drover.Retry {
			t.Errorf("interrupted build %d ended %s, want retry", b.ID, b.Result)
		}
	}
	q, err := m.Client.Request(context.Background(), queued.ID)
	if err != nil || q.Request.State != drover.RequestPending {
		t.Errorf("queued request after restart = %+v, %v", q, err)
	}
	if !strings.Contains(w.Output(), "connected to master") {
		t.Errorf("worker did not log its reconnection")
	}
}
