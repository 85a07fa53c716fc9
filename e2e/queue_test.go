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

// The queue is served by priority, then age; it says why each request
// waits; a request with no eligible worker online expires with a reason.
func TestQueuePriorityAndExpiry(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(expire_after = "3s")
drover.builder(name = "blocker", steps = [drover.shell("while [ ! -f %s ]; do sleep 0.1; done")])
drover.builder(name = "low", steps = [drover.shell("true")])
drover.builder(name = "high", priority = 10, steps = [drover.shell("true")])
drover.builder(name = "plan9", requires = {"os": "plan9"}, steps = [drover.shell("true")])
`, gate))
	m.StartWorker(t, "w1")
	ctx := context.Background()
	block := m.Force(t, "blocker", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the blocker to start", func() bool {
		rd, err := m.Client.Request(ctx, block.ID)
		return err == nil && len(rd.Builds) > 0
	})
	low1 := m.Force(t, "low", api.ForceRequest{})
	low2 := m.Force(t, "low", api.ForceRequest{Priority: 20}) // a request may outrank its builder
	high := m.Force(t, "high", api.ForceRequest{})
	gone := m.Force(t, "plan9", api.ForceRequest{})

	m.WaitFor(t, 30*time.Second, "the queue to explain itself", func() bool {
		q, err := m.Client.Queue(ctx)
		if err != nil || len(q) != 4 {
			return false
		}
		why := map[int64]string{}
		for _, e := range q {
			why[e.Request.ID] = e.Waiting
		}
		return q[0].Request.ID == low2.ID && q[1].Request.ID == high.ID && q[2].Request.ID == low1.ID &&
			strings.Contains(why[low1.ID], "busy") && strings.Contains(why[gone.ID], "no eligible worker online")
	})
	out, code := testenv.Run(t, time.Minute, m.Env(), "queue")
	if code != 0 || !strings.Contains(out, "no eligible worker online") {
		t.Errorf("drover queue: exit %d\n%s", code, out)
	}

	// The plan9 request expires, with a reason; the others run in
	// priority order.
	m.WaitFor(t, 30*time.Second, "the plan9 request to expire", func() bool {
		rd, err := m.Client.Request(ctx, gone.ID)
		return err == nil && rd.Request.State == drover.RequestCancelled && strings.Contains(rd.Request.CancelReason, "expired: no eligible worker online")
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var order []int64
	for _, r := range []*drover.BuildRequest{low1, low2, high} {
		d := m.WaitBuild(t, r.ID, time.Minute)
		order = append(order, d.Build.ID)
	}
	if !(order[1] < order[2] && order[2] < order[0]) {
		t.Errorf("build IDs (start order) low1=%d low2=%d high=%d; want low2 < high < low1", order[0], order[1], order[2])
	}
}
