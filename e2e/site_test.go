package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// siteConfig is the config both masters of the site run.
func siteConfig(dsn, shared, marker, extra string) string {
	return fmt.Sprintf(`
drover.master(database = %q, shared_dir = %q, site_timeout = "3s", worker_grace = "2m")
drover.builder(name = "slow", steps = [
    drover.shell("touch %s; for i in $(seq 1 80); do echo line-$i; sleep 0.1; done", name = "count"),
    drover.shell("echo next step ran", name = "next"),
])
drover.builder(name = "quick", steps = [drover.shell("echo quick")])
%s`, dsn, shared, marker, extra)
}

// Two masters on one PostgreSQL database form one site: a build queued
// on either runs on whichever master has the worker, its events and its
// log reach a browser on the other live, a cancel on either reaches the
// build's master, a reconfig on one reloads both, and when the build's
// master is killed (SIGKILL) its workers reconnect to the other master,
// which re-attaches the running build and finishes it with its output
// stored exactly once.
func TestSiteOfTwoMasters(t *testing.T) {
	t.Parallel()
	browser := testenv.Browser(t)
	dsn := testenv.PostgresDSN(t)
	shared := t.TempDir()
	marker := filepath.Join(t.TempDir(), "started")
	a := testenv.StartMaster(t, siteConfig(dsn, shared, marker, ""))
	b := a.StartSiteMaster(t)

	// The workers list both masters, A first: they connect to A.
	a.StartWorker(t, "w1", "--master", b.Workers)
	a.StartWorker(t, "w2", "--master", b.Workers)
	aID, bID := masterID(t, a), masterID(t, b)
	if aID == bID {
		t.Fatalf("both masters have ID %s", aID)
	}
	for _, m := range []*testenv.Master{a, b} {
		ws, err := m.Client.Workers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if !w.Connected || w.Master != aID {
				t.Errorf("%s sees worker %s connected=%v to %q, want connected to %s", m.URL(), w.Name, w.Connected, w.Master, aID)
			}
		}
	}

	// Queued on B, built by A (B has no worker).
	events := sse(t, b)
	r := b.Force(t, "slow", api.ForceRequest{})
	var buildID int64
	b.WaitFor(t, time.Minute, "the build to start", func() bool {
		rd, err := b.Client.Request(context.Background(), r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		buildID = rd.Builds[0].ID
		return true
	})
	d, err := b.Client.Build(context.Background(), buildID)
	if err != nil || d.Build.Master != aID {
		t.Fatalf("build %d driven by %q (%v), want master A %s", buildID, d.Build.Master, err, aID)
	}
	waitEvent(t, events, func(e map[string]any) bool {
		return e["type"] == "build.started" && e["build_id"] == float64(buildID) && e["origin"] == aID
	})

	// A browser on B follows the log A writes.
	if _, err := chromedp.Run(browser, chromedp.Navigate(fmt.Sprintf("%s/builds/%d", b.URL(), buildID))); err != nil {
		t.Fatal(err)
	}
	testenv.WaitJS(t, browser, "the log on B", `[...document.querySelectorAll("pre.logtext")].some(p => p.textContent.includes("line-2"))`, 30*time.Second)
	testenv.WaitJS(t, browser, "later output, live on B", `[...document.querySelectorAll("pre.logtext")].some(p => p.textContent.includes("line-8\n"))`, 30*time.Second)

	// A dies mid-step; B takes the build over.
	a.Kill()
	d = b.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success || d.Build.Master != bID {
		t.Fatalf("after A died: build %d %s (%s), master %q; want success on B %s", d.Build.ID, d.Build.Result, d.Build.Summary, d.Build.Master, bID)
	}
	rd, err := b.Client.Request(context.Background(), r.ID)
	if err != nil || len(rd.Builds) != 1 || rd.Request.Tries != 1 {
		t.Fatalf("request %d = %+v, %v; want the one build taken over", r.ID, rd, err)
	}
	checkLines(t, b.StepLog(t, d, 0), 80)
	if !strings.Contains(b.StepLog(t, d, 1), "next step ran") {
		t.Errorf("the next step did not run on B")
	}
	testenv.WaitJS(t, browser, "the final result on B's page", `document.querySelector("#build-result")?.textContent.includes("success")`, 30*time.Second)
	if !strings.Contains(b.Output(), "taking over a build") {
		t.Errorf("B's log does not tell of the take-over")
	}

	// A comes back; both masters serve the site again. The workers stay
	// on B; builds queued on A run there.
	a.Restart(t, false)
	qd := a.WaitBuild(t, a.Force(t, "quick", api.ForceRequest{}).ID, time.Minute)
	if qd.Build.Result != drover.Success || qd.Build.Master != bID {
		t.Errorf("quick build queued on A = %s on master %q, want success on B", qd.Build.Result, qd.Build.Master)
	}

	// A cancel asked of A reaches B, which drives the build.
	os.Remove(marker)
	r2 := a.Force(t, "slow", api.ForceRequest{})
	a.WaitFor(t, time.Minute, "the second build to start", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	rd2, err := a.Client.Request(context.Background(), r2.ID)
	if err != nil || len(rd2.Builds) == 0 {
		t.Fatalf("request %d: %+v %v", r2.ID, rd2, err)
	}
	if err := a.Client.CancelBuild(context.Background(), rd2.Builds[0].ID, "stop it"); err != nil {
		t.Fatalf("cancel on A: %v", err)
	}
	if d := a.WaitBuild(t, r2.ID, time.Minute); d.Build.Result != drover.Cancelled {
		t.Errorf("build cancelled through A: %s (%s)", d.Build.Result, d.Build.Summary)
	}

	// A reconfig on A reloads B too.
	cfg := siteConfig(dsn, shared, marker, `drover.builder(name = "added", steps = [drover.shell("true")])`)
	for _, m := range []*testenv.Master{a, b} {
		if err := os.WriteFile(filepath.Join(m.Dir, "master.star"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := testenv.Run(t, time.Minute, a.Env(), "reconfig"); code != 0 {
		t.Fatalf("reconfig on A: exit %d\n%s", code, out)
	}
	b.WaitFor(t, 30*time.Second, "B to load the new config", func() bool {
		_, err := b.Client.Builder(context.Background(), "added")
		return err == nil
	})
}

// masterID is a master's site ID, from its version endpoint.
func masterID(t *testing.T, m *testenv.Master) string {
	t.Helper()
	v, err := m.Client.Version(context.Background())
	if err != nil || v.Master == "" {
		t.Fatalf("master ID of %s: %+v %v", m.URL(), v, err)
	}
	return v.Master
}

// checkLines checks that log holds line-1 … line-n once each, in order.
func checkLines(t *testing.T, log string, n int) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "line-") {
			lines = append(lines, l)
		}
	}
	if len(lines) != n {
		t.Errorf("log holds %d output lines, want %d exactly once:\n%s", len(lines), n, log)
		return
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line-%d", i+1) {
			t.Errorf("line %d is %q: lost, doubled or out of order", i+1, l)
			return
		}
	}
}

// sse streams a master's events, decoded, until the test ends.
func sse(t *testing.T, m *testenv.Master) <-chan map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL()+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+m.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	c := make(chan map[string]any, 1024)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e map[string]any
			if json.Unmarshal([]byte(data), &e) == nil {
				select {
				case c <- e:
				default:
				}
			}
		}
	}()
	return c
}

// waitEvent waits for an event that matches.
func waitEvent(t *testing.T, c <-chan map[string]any, match func(map[string]any) bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case e := <-c:
			if match(e) {
				return
			}
		case <-deadline:
			t.Fatal("timed out waiting for an event from the other master")
		}
	}
}
