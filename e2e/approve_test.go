package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// With approve_workers, a worker that enrolls is held as pending and
// cannot connect; `drover workers approve` lets it in at its next attempt
// and it runs a build; `drover workers reject` makes another give up.
func TestWorkerApproval(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.master(approve_workers = True)
drover.builder(name = "hello", steps = [drover.shell("echo approved-and-building")])
`)
	ctx := context.Background()
	// testenv.StartWorker waits for the worker to connect, which a held
	// worker never does: start the processes as it would.
	start := func(name string) *testenv.Proc {
		return testenv.Start(t, "worker "+name, "worker", "run", "--master", m.Workers, "--token", m.EnrollToken,
			"--name", name, "--dir", t.TempDir(), "--ca-sha256", m.Fingerprint, "--log-level", "debug")
	}
	w1, w2 := start("held-1"), start("held-2")

	approval := func(name string) (drover.Worker, bool) {
		ws, err := m.Client.Workers(ctx)
		if err != nil {
			return drover.Worker{}, false
		}
		for _, w := range ws {
			if w.Name == name {
				return w, true
			}
		}
		return drover.Worker{}, false
	}
	for _, name := range []string{"held-1", "held-2"} {
		m.WaitFor(t, time.Minute, name+" listed as pending", func() bool {
			w, ok := approval(name)
			return ok && w.Approval == drover.ApprovalPending
		})
	}
	// A few connection attempts later, they are still out, and trying.
	m.WaitFor(t, time.Minute, "a refused attempt", func() bool {
		return strings.Contains(w1.Output(), "awaiting approval by an admin")
	})
	if w, _ := approval("held-1"); w.Connected {
		t.Fatalf("a pending worker connected: %+v", w)
	}
	select {
	case <-w1.Done():
		t.Fatalf("a pending worker gave up:\n%s", w1.Output())
	default:
	}
	req := m.Force(t, "hello", api.ForceRequest{})

	out, code := testenv.Run(t, time.Minute, m.Env(), "workers", "approve", "held-1")
	if code != 0 || !strings.Contains(out, "worker held-1: approved") {
		t.Fatalf("drover workers approve: exit %d\n%s", code, out)
	}
	m.WaitFor(t, 90*time.Second, "held-1 to connect", func() bool {
		w, ok := approval("held-1")
		return ok && w.Connected
	})
	b := m.WaitBuild(t, req.ID, time.Minute)
	if b.Build.Result != drover.Success || b.Build.Worker != "held-1" {
		t.Fatalf("build %+v, want success on held-1", b.Build)
	}

	out, code = testenv.Run(t, time.Minute, m.Env(), "workers", "reject", "held-2")
	if code != 0 || !strings.Contains(out, "worker held-2: rejected") {
		t.Fatalf("drover workers reject: exit %d\n%s", code, out)
	}
	if err := w2.Wait(90 * time.Second); err == nil {
		t.Errorf("a rejected worker exited without an error:\n%s", w2.Output())
	}
	if !strings.Contains(w2.Output(), "worker held-2 was rejected") {
		t.Errorf("the rejected worker did not say why it stopped:\n%s", w2.Output())
	}
	if w, _ := approval("held-2"); w.Connected || w.Approval != drover.ApprovalRejected {
		t.Errorf("rejected worker: %+v", w)
	}

	// Without an admin token, nothing is approved.
	out, code = testenv.Run(t, time.Minute, []string{"DROVER_MASTER=" + m.URL(), "DROVER_TOKEN=nope"}, "workers", "approve", "held-2")
	if code == 0 {
		t.Errorf("approve with a bad token succeeded:\n%s", out)
	}
}
