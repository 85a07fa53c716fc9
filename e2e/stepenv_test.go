package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A step's PWD is its own directory, not the one the worker was started
// in (this test's, which the worker process inherits), and `pwd` agrees.
// A shell mends a stale PWD by itself; a program run as argv (env here,
// make's $(PWD), a script's os.environ) does not, so env shows it.
func TestStepEnvironment(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(name = "env", steps = [
    drover.shell("echo \"pwd=$(pwd)\"", name = "pwd", workdir = "sub/dir"),
    drover.shell(["env"], name = "env", workdir = "sub/dir"),
])
`)
	w := m.StartWorker(t, "w1")
	d := m.WaitBuild(t, m.Force(t, "env", api.ForceRequest{}).ID, 2*time.Minute)
	log := m.StepLog(t, d, 0) + m.StepLog(t, d, 1)
	if d.Build.Result != drover.Success {
		t.Fatalf("build %s (%s)\n%s", d.Build.Result, d.Build.Summary, log)
	}
	wd := filepath.Join(w.Dir, "env", "sub", "dir")
	own, _ := os.Getwd()
	for _, want := range []string{"\npwd=" + wd + "\n", "\nPWD=" + wd + "\n", "\nDROVER_BUILDER=env\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("step logs lack %q (the worker started in %s):\n%s", want[1:], own, log)
		}
	}
	if strings.Contains(log, "OLDPWD=") {
		t.Errorf("the worker's OLDPWD reached the step:\n%s", log)
	}
}
