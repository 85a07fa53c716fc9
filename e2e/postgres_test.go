package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A master whose config names a PostgreSQL database keeps its state there:
// builds run, and a restart finds its queue and history.
func TestMasterOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDSN(t)
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(database = %q)
drover.builder(name = "pg", steps = [drover.shell("echo on postgres")])
drover.builder(name = "nobody", requires = {"os": "plan9"}, steps = [drover.shell("true")])
`, dsn))
	m.StartWorker(t, "w1")
	d := m.WaitBuild(t, m.Force(t, "pg", api.ForceRequest{}).ID, time.Minute)
	if d.Build.Result != drover.Success || d.Build.Number != 1 {
		t.Fatalf("build = %+v", d.Build)
	}
	waiting := m.Force(t, "nobody", api.ForceRequest{})
	m.Restart(t, true)
	rd, err := m.Client.Request(t.Context(), waiting.ID)
	if err != nil || rd.Request.State != drover.RequestPending {
		t.Fatalf("queued request after restart = %+v, %v", rd, err)
	}
	d = m.WaitBuild(t, m.Force(t, "pg", api.ForceRequest{}).ID, time.Minute)
	if d.Build.Number != 2 {
		t.Errorf("second build number %d, want 2 (history kept)", d.Build.Number)
	}
}
