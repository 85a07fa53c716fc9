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

// Facts the config sets for a named worker override what the worker
// claims: a worker cannot put itself in a trusted pool. Version
// constraints on detected facts decide eligibility too.
func TestServerSideFactsAndVersions(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.worker("impostor", facts = {"pool": "public"})
drover.worker("vault", facts = {"pool": "trusted"})
drover.builder(name = "release", requires = {"pool": "trusted", "cpus": ">= 1"}, steps = [drover.shell("echo releasing on $DROVER_WORKER")])
drover.builder(name = "huge", requires = {"memory": ">= 100000000"}, steps = [drover.shell("true")])
`)
	m.StartWorker(t, "impostor", "--label", "pool=trusted")
	m.StartWorker(t, "vault")
	for i := 0; i < 2; i++ {
		d := m.WaitBuild(t, m.Force(t, "release", api.ForceRequest{}).ID, time.Minute)
		if d.Build.Worker != "vault" || d.Build.Result != drover.Success {
			t.Errorf("release build ran on %s: %s", d.Build.Worker, d.Build.Result)
		}
	}
	el, err := m.Client.Eligibility(context.Background(), "release")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range el {
		if e.Worker == "impostor" && (e.Eligible || !strings.Contains(strings.Join(e.Reasons, "; "), "pool: is public, required trusted")) {
			t.Errorf("impostor: %+v", e)
		}
	}
	// No worker has 100 TB of memory: the request stays queued and says why.
	r := m.Force(t, "huge", api.ForceRequest{})
	m.WaitFor(t, 30*time.Second, "the huge request to explain its wait", func() bool {
		q, err := m.Client.Queue(context.Background())
		return err == nil && len(q) == 1 && q[0].Request.ID == r.ID && strings.Contains(q[0].Waiting, "no eligible worker online")
	})
	out, _ := testenv.Run(t, time.Minute, m.Env(), "why", "huge")
	if !strings.Contains(out, "does not satisfy >= 100000000") {
		t.Errorf("drover why huge:\n%s", out)
	}
}
