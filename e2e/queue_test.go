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

// Changes that pile up while a builder is busy collapse into one build of
// the newest (as Buildbot users expect); the older requests say why.
func TestCollapseNewestWins(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "go-on")
	repo := testenv.NewRepo(t, map[string]string{"a": "1"})
	m := testenv.StartMaster(t, fmt.Sprintf(`
src = drover.git(%q, branches = ["main"])
drover.builder(name = "blocker", steps = [drover.shell("while [ ! -f %s ]; do sleep 0.1; done")])
drover.builder(name = "ci", steps = [drover.shell("echo building %%(prop:revision)s")])
drover.scheduler("main", source = src, branch = "main", builders = ["ci"])
`, repo, gate))
	m.StartWorker(t, "w1")
	ctx := context.Background()
	block := m.Force(t, "blocker", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "the blocker to start", func() bool {
		rd, err := m.Client.Request(ctx, block.ID)
		return err == nil && len(rd.Builds) > 0
	})
	var revs []string
	for i := 0; i < 3; i++ {
		rev := testenv.Commit(t, repo, map[string]string{"a": fmt.Sprint(i + 2)}, fmt.Sprint("change ", i))
		revs = append(revs, rev)
		if _, err := m.Client.SendChange(ctx, &drover.Change{Repository: repo, Branch: "main", Revision: rev, Author: "ada"}); err != nil {
			t.Fatal(err)
		}
	}
	m.WaitFor(t, 30*time.Second, "three requests for ci", func() bool {
		rs, err := m.Client.Requests(ctx, api.RequestQuery{Builder: "ci"})
		return err == nil && len(rs) == 3
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.WaitFor(t, time.Minute, "one build of the newest revision, the others collapsed", func() bool {
		rs, err := m.Client.Requests(ctx, api.RequestQuery{Builder: "ci"})
		if err != nil {
			return false
		}
		finished, collapsed := 0, 0
		for _, r := range rs {
			switch {
			case r.State == drover.RequestFinished && r.Source.Revision == revs[2]:
				finished++
			case r.State == drover.RequestCancelled && strings.Contains(r.CancelReason, "collapsed into request"):
				collapsed++
			}
		}
		return finished == 1 && collapsed == 2
	})
}
