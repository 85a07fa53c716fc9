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

// day is a weekday's short name, as windows write it.
func day(t time.Time, offset int) string { return t.AddDate(0, 0, offset).Weekday().String()[:3] }

// A real worker whose own weekly window excludes now, and a downtime the
// master's config sets for it: the master shows the worker's own reason
// and the downtime that wins over it (API, `drover workers`, the fleet
// page); the owner making the worker eager by hand does not lift the
// downtime; reloading the config without it lets the build run. The days
// are chosen around today (UTC) so that no midnight falls inside the test.
func TestDowntimeBeatsWorkerWindow(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	own := day(now, 2) + " 00:00-24:00"                                 // the day after tomorrow: excludes now
	down := fmt.Sprintf("%s-%s 00:00-24:00", day(now, -1), day(now, 1)) // yesterday to tomorrow: holds now
	downText := fmt.Sprintf("%s-%s 00:00-24:00 UTC until %s 00:00", day(now, -1), day(now, 1), day(now, 2))
	base := `drover.builder(name = "quick", steps = [drover.shell("echo quick")])
`
	m := testenv.StartMaster(t, base+fmt.Sprintf("drover.worker(%q, downtime = [%q])\n", "w1", down))
	w := m.StartWorker(t, "w1", "--available", own, "--tz", "UTC")
	ctx := context.Background()

	var wk drover.Worker
	m.WaitFor(t, 30*time.Second, "the worker's own window and the downtime on the master", func() bool {
		d, err := m.Client.Worker(ctx, "w1")
		if err != nil {
			return false
		}
		wk = d.Worker
		return wk.Availability == drover.Offline && wk.Downtime != nil
	})
	if want := "outside " + own + " until " + day(now, 2) + " 00:00"; wk.AvailabilityReason != want {
		t.Errorf("the worker's own reason = %q, want %q", wk.AvailabilityReason, want)
	}
	if a, reason, by := wk.Effective(); a != drover.Offline || by != "downtime (config)" || reason != downText || wk.Downtime.Source != "config" {
		t.Errorf("effective availability = %s, %q by %q; downtime %+v", a, reason, by, wk.Downtime)
	}
	out, code := testenv.Run(t, time.Minute, m.Env(), "workers")
	if code != 0 || !strings.Contains(out, "downtime (config): "+downText+" (worker's own: offline)") {
		t.Errorf("drover workers: exit %d\n%s", code, out)
	}

	req := m.Force(t, "quick", api.ForceRequest{})
	waitDowntime := func(what string) {
		m.WaitFor(t, 30*time.Second, what, func() bool {
			q, err := m.Client.Queue(ctx)
			return err == nil && len(q) == 1 && q[0].Waiting == "every eligible worker is unavailable: w1 is in downtime (config): "+downText
		})
	}
	waitDowntime("quick to wait for the downtime")

	// The owner says eager by hand: the worker's own availability changes,
	// the downtime still wins.
	if out, code := testenv.Run(t, time.Minute, nil, "worker", "availability", "eager", "--dir", w.Dir); code != 0 {
		t.Fatalf("worker availability eager: exit %d\n%s", code, out)
	}
	m.WaitFor(t, 30*time.Second, "the owner's eager on the master", func() bool {
		wk, err := m.Client.Worker(ctx, "w1")
		return err == nil && wk.Availability == drover.Eager && wk.Downtime != nil
	})
	waitDowntime("quick to keep waiting for the downtime")
	if rd, err := m.Client.Request(ctx, req.ID); err != nil || rd.Request.State != drover.RequestPending {
		t.Fatalf("quick ran in a downtime: %+v, %v", rd, err)
	}

	// Without the downtime, the eager worker builds.
	if err := os.WriteFile(filepath.Join(m.Dir, "master.star"), []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := testenv.Run(t, time.Minute, m.Env(), "reconfig"); code != 0 {
		t.Fatalf("drover reconfig: exit %d\n%s", code, out)
	}
	if d := m.WaitBuild(t, req.ID, time.Minute); d.Build.Result != drover.Success || d.Build.Worker != "w1" {
		t.Fatalf("quick after the downtime: %s on %s", d.Build.Result, d.Build.Worker)
	}
}

// A bad downtime window is refused by checkconfig with file:line, saying
// which window is wrong and where in it.
func TestDowntimeBadWindow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := "drover.builder(name = \"quick\", steps = [drover.shell(\"echo quick\")])\n" +
		"drover.worker(\"w1\", downtime = [\"Mon-Fri 09:00-17:00\", \"Wed 8:00-10:0\"])\n"
	if err := os.WriteFile(filepath.Join(dir, "master.star"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := testenv.Run(t, time.Minute, nil, "checkconfig", dir)
	want := `master.star:2:14: drover.worker "w1": downtime[1]: time window "Wed 8:00-10:0": at column 10: "10:0" is not a time of day HH:MM (the window's end)`
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("checkconfig: exit %d, want 1 with %q\n%s", code, want, out)
	}
}
