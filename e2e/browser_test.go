package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// The build page of a real master shows the build, its steps and its log
// growing live in a real browser, then the final result, without reload.
func TestBuildPageLiveLog(t *testing.T) {
	t.Parallel()
	ctx := testenv.Browser(t)
	gate := filepath.Join(t.TempDir(), "go-on")
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.builder(name = "live", steps = [
    drover.shell("echo first-line; while [ ! -f %s ]; do sleep 0.1; done; echo second-line", name = "slow"),
    drover.shell("echo done", name = "after"),
])
`, gate))
	m.StartWorker(t, "w1")
	r := m.Force(t, "live", api.ForceRequest{})
	var buildID int64
	m.WaitFor(t, time.Minute, "the build to start", func() bool {
		rd, err := m.Client.Request(context.Background(), r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		buildID = rd.Builds[0].ID
		return true
	})
	m.WaitFor(t, time.Minute, "the first line to reach the master", func() bool {
		d, err := m.Client.Build(context.Background(), buildID)
		return err == nil && len(d.Logs) > 0 && strings.Contains(m.StepLog(t, d, 0), "first-line")
	})

	url := fmt.Sprintf("%s/builds/%d", m.URL(), buildID)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitJS(t, ctx, "the page to show the running build", `document.querySelector("#build-state")?.textContent.includes("running")`, 15*time.Second)
	testenv.WaitJS(t, ctx, "the first line", `[...document.querySelectorAll("pre.logtext")].some(p => p.textContent.includes("first-line"))`, 15*time.Second)

	// `drover logs --follow` tails the same build from the command line.
	follow := testenv.Start(t, "logs --follow", "logs", fmt.Sprint(buildID), "--follow", "--master", m.URL())

	// Output printed after the page loaded arrives live.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.WaitJS(t, ctx, "the second line, live", `[...document.querySelectorAll("pre.logtext")].some(p => p.textContent.includes("second-line"))`, 20*time.Second)
	testenv.WaitJS(t, ctx, "the final result", `document.querySelector("#build-result")?.textContent.includes("success")`, 20*time.Second)
	steps, err := chromedp.Run(ctx, chromedp.Text("#steps"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(steps, "slow") || !strings.Contains(steps, "after") {
		t.Errorf("steps section: %q", steps)
	}
	if header := mustText(t, ctx, "#build-header"); !strings.Contains(header, "w1") {
		t.Errorf("build header does not name the worker: %q", header)
	}
	if err := follow.Wait(30 * time.Second); err != nil {
		t.Fatalf("logs --follow did not end with the build: %v", err)
	}
	for _, want := range []string{"first-line", "second-line", "=== step 1: after ===", "done", "=== build"} {
		if !strings.Contains(follow.Output(), want) {
			t.Errorf("logs --follow output lacks %q:\n%s", want, follow.Output())
		}
	}
}

func mustText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
