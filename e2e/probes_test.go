package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// The master's probes run on each worker and become facts; requirements
// with version constraints on them decide eligibility; a probe whose
// answer changes is seen without restarting the worker.
func TestProbesDecideEligibility(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	toolVersion := filepath.Join(dir, "tool-version")
	if err := os.WriteFile(toolVersion, []byte("1.4.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := func(timeout string) string {
		return fmt.Sprintf(`
drover.probe("gtk", "echo 3.24.36; echo gtk-extra-line")
drover.probe("tool", "cat %s", timeout = %q)
drover.probe("absent", "exit 1")
drover.builder(name = "gtk3", requires = {"gtk": ">= 3.22, < 4", "absent": "!"}, steps = [drover.shell("echo gtk %%(fact:gtk)s")])
drover.builder(name = "newtool", requires = {"tool": ">= 2"}, steps = [drover.shell("echo tool %%(fact:tool)s")])
`, toolVersion, timeout)
	}
	m := testenv.StartMaster(t, config("10s"))
	m.StartWorker(t, "w1")
	ctx := context.Background()

	d := m.WaitBuild(t, m.Force(t, "gtk3", api.ForceRequest{}).ID, time.Minute)
	if d.Build.Result != drover.Success || !strings.Contains(m.StepLog(t, d, 0), "gtk 3.24.36") {
		t.Fatalf("gtk3 build: %s\n%s", d.Build.Result, m.StepLog(t, d, 0))
	}
	r := m.Force(t, "newtool", api.ForceRequest{})
	m.WaitFor(t, 30*time.Second, "newtool to wait for an eligible worker", func() bool {
		q, err := m.Client.Queue(ctx)
		return err == nil && len(q) == 1 && strings.Contains(q[0].Waiting, "no eligible worker")
	})
	out, _ := testenv.Run(t, time.Minute, m.Env(), "why", "newtool", "w1")
	if !strings.Contains(out, "tool: 1.4.2 does not satisfy >= 2") {
		t.Errorf("drover why:\n%s", out)
	}

	// The tool is upgraded on the worker; a reload that changes the probes
	// makes workers run them again at once.
	if err := os.WriteFile(toolVersion, []byte("2.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "master.star"), []byte(config("20s")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d = m.WaitBuild(t, r.ID, time.Minute)
	if d.Build.Result != drover.Success || !strings.Contains(m.StepLog(t, d, 0), "tool 2.1.0") {
		t.Errorf("newtool build: %s\n%s", d.Build.Result, m.StepLog(t, d, 0))
	}
	w, err := m.Client.Worker(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.Facts["gtk"], ","); got != "3.24.36,gtk-extra-line" {
		t.Errorf("gtk fact = %q", got)
	}
	if _, ok := w.Facts["absent"]; ok {
		t.Error("a failing probe set a fact")
	}
}
