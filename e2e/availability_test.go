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

// Availability changes dispatch at once and never kills a running build:
// an operator drains a worker through the API while it builds (the build
// finishes, nothing new starts there); the worker's owner takes it offline
// and back with `drover worker availability` on the worker's machine.
func TestAvailabilityChangesDispatch(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.builder(name = "long", steps = [drover.shell("while [ ! -f %s ]; do sleep 0.1; done; echo done")])
drover.builder(name = "quick", steps = [drover.shell("echo quick")])
`, gate))
	w := m.StartWorker(t, "w1")
	ctx := context.Background()

	long := m.Force(t, "long", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the long build to start", func() bool {
		rd, err := m.Client.Request(ctx, long.ID)
		return err == nil && len(rd.Builds) > 0
	})
	if _, err := m.Client.SetAvailability(ctx, "w1", "draining", "disk swap tonight"); err != nil {
		t.Fatal(err)
	}
	quick := m.Force(t, "quick", api.ForceRequest{})
	m.WaitFor(t, 30*time.Second, "quick to wait on the draining worker", func() bool {
		q, err := m.Client.Queue(ctx)
		return err == nil && len(q) == 1 && strings.Contains(q[0].Waiting, "w1 is draining (1 build running)")
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if d := m.WaitBuild(t, long.ID, time.Minute); d.Build.Result != drover.Success {
		t.Fatalf("the running build was disturbed by draining: %s (%s)", d.Build.Result, d.Build.Summary)
	}
	// The freed worker wakes the dispatcher, whose next round, with w1
	// running nothing, says quick waits because w1 is draining.
	m.WaitFor(t, 30*time.Second, "a dispatch round to see w1 free and still draining", func() bool {
		if rd, err := m.Client.Request(ctx, quick.ID); err == nil && rd.Request.State != drover.RequestPending {
			t.Fatalf("quick ran on a draining worker: %+v", rd)
		}
		q, err := m.Client.Queue(ctx)
		return err == nil && len(q) == 1 && strings.HasSuffix(q[0].Waiting, "w1 is draining")
	})
	if rd, _ := m.Client.Request(ctx, quick.ID); rd == nil || rd.Request.State != drover.RequestPending {
		t.Fatalf("quick ran on a draining worker: %+v", rd)
	}
	ws, err := m.Client.Worker(ctx, "w1")
	if err != nil || ws.Override == nil || !strings.Contains(ws.Override.By, "operator") || ws.Override.Reason != "disk swap tonight" {
		t.Fatalf("worker after the override = %+v, %v", ws, err)
	}

	// The owner says offline on the worker's machine (the operator's
	// override still wins), then the operator clears the override: the
	// owner's offline applies, and quick keeps waiting.
	out, code := testenv.Run(t, time.Minute, nil, "worker", "availability", "offline", "--dir", w.Dir, "--reason", "owner gaming")
	if code != 0 {
		t.Fatalf("worker availability offline: exit %d\n%s", code, out)
	}
	m.WaitFor(t, 30*time.Second, "the owner's setting to reach the master", func() bool {
		wk, err := m.Client.Worker(ctx, "w1")
		return err == nil && wk.Availability == drover.Offline && wk.AvailabilityReason == "owner gaming"
	})
	if _, err := m.Client.SetAvailability(ctx, "w1", "auto", ""); err != nil {
		t.Fatal(err)
	}
	m.WaitFor(t, 30*time.Second, "quick to wait on the offline worker", func() bool {
		q, err := m.Client.Queue(ctx)
		return err == nil && len(q) == 1 && strings.Contains(q[0].Waiting, "w1 is offline")
	})
	out, code = testenv.Run(t, time.Minute, nil, "worker", "availability", "eager", "--dir", w.Dir)
	if code != 0 {
		t.Fatalf("worker availability eager: exit %d\n%s", code, out)
	}
	if d := m.WaitBuild(t, quick.ID, time.Minute); d.Build.Result != drover.Success {
		t.Errorf("quick after eager: %s", d.Build.Result)
	}
}
