package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A step with shards = 3 runs as three parallel parts on three different
// workers, each told its index; the step's result merges the parts'. A
// failing part fails the step, and the build says which part.
func TestShardingAcrossThreeWorkers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	repo := testenv.NewRepo(t, map[string]string{"suite.sh": "#!/bin/sh\necho part $DROVER_SHARD_INDEX of $DROVER_SHARD_COUNT ${DROVER_SHARD_NAME:-} on $DROVER_WORKER\n"})
	m := testenv.StartMaster(t, fmt.Sprintf(`
src = drover.git(%[1]q, branches = ["main"])
drover.builder(name = "sharded", steps = [
    drover.checkout(src),
    drover.shell("echo compiled", name = "compile"),
    drover.shell("./suite.sh > %[2]s/part-$DROVER_SHARD_INDEX; sleep 1; cat %[2]s/part-$DROVER_SHARD_INDEX", name = "test", shards = 3),
    drover.shell("echo after the shards", name = "report"),
])
drover.builder(name = "batteries", steps = [
    drover.checkout(src),
    drover.shell("./suite.sh; test $DROVER_SHARD_NAME != browser", name = "test", shards = ["unit", "integration", "browser"]),
])
`, repo, dir))
	for _, w := range []string{"w1", "w2", "w3"} {
		m.StartWorker(t, w, "--max-builds", "3")
	}

	d := m.WaitBuild(t, m.Force(t, "sharded", api.ForceRequest{}).ID, 3*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("sharded build: %s (%s)", d.Build.Result, d.Build.Summary)
	}
	step := d.Steps[2]
	if len(step.Parts) != 3 || step.Result != drover.Success {
		t.Fatalf("test step = %+v", step)
	}
	workers := map[string]bool{}
	for i, p := range step.Parts {
		workers[p.Worker] = true
		if p.Result != drover.Success || p.BuildID == 0 {
			t.Errorf("part %d = %+v", i, p)
		}
		out, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("part-%d", i)))
		if err != nil || !strings.Contains(string(out), fmt.Sprintf("part %d of 3", i)) {
			t.Errorf("part %d wrote %q, %v", i, out, err)
		}
	}
	if len(workers) != 3 {
		t.Errorf("parts ran on %v, want three different workers", workers)
	}
	if d.Steps[3].Result != drover.Success {
		t.Errorf("step after the shards: %s", d.Steps[3].Result)
	}
	// A part is a build of its own, with its log, and runs no later steps.
	part, err := m.Client.Build(t.Context(), step.Parts[1].BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.StepLog(t, part, 2), "part 1 of 3") || part.Steps[3].Result != drover.Skipped {
		t.Errorf("part build steps: %+v", part.Steps)
	}

	d = m.WaitBuild(t, m.Force(t, "batteries", api.ForceRequest{}).ID, 3*time.Minute)
	step = d.Steps[1]
	names := []string{}
	for _, p := range step.Parts {
		names = append(names, p.Name+"="+string(p.Result))
	}
	sort.Strings(names)
	if d.Build.Result != drover.Failure || strings.Join(names, ",") != "browser=failure,integration=success,unit=success" ||
		!strings.Contains(step.Summary, "browser failure") {
		t.Errorf("batteries: build %s, parts %v, summary %q", d.Build.Result, names, step.Summary)
	}
}
