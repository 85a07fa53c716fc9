package master_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/mastertest"
)

// testClock is a clock the test moves by hand; it stands still otherwise.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// nextWednesday is the first Wednesday after from, at hh:mm:ss in loc.
func nextWednesday(from time.Time, loc *time.Location, hh, mm, ss int) time.Time {
	d := from.In(loc).AddDate(0, 0, 1)
	for d.Weekday() != time.Wednesday {
		d = d.AddDate(0, 0, 1)
	}
	return time.Date(d.Year(), d.Month(), d.Day(), hh, mm, ss, 0, loc)
}

// A downtime the config sets for a worker keeps it from new builds while
// the window lasts, whatever the worker itself says: the build it runs
// finishes, the request that waits says why (in the queue, the worker's
// record and the fleet page), and at the window's end the master wakes by
// itself, with nothing else happening, and the worker builds again. The
// clock stands still between the test's moves, so the only wake-up at the
// end is the dispatcher's timer for the decision's next edge.
func TestConfigDowntime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// Tokens are made on the real clock: start the test clock after it.
	wed := func(hh, mm, ss int) time.Time { return nextWednesday(time.Now(), berlin, hh, mm, ss) }
	clock := &testClock{t: wed(7, 59, 59)}
	m := mastertest.NewWith(t, mastertest.Options{Now: clock.Now, Config: coreConfig(2, `, timezone = "Europe/Berlin"`) + `
drover.worker("dt-00000", downtime = ["Wed 08:00-10:00"])
`})
	ctx := context.Background()
	f := fleetFor(t, m, "dt", 1, mastertest.Behavior{Hold: true})

	// Before the window: the worker builds.
	force(t, m, "b0")
	waitFor(t, "b0 running", func() (bool, error) {
		return len(builds(t, m, drover.BuildFilter{State: drover.BuildRunning})) == 1, nil
	})

	// In the window: a new request waits, and says why; b0 runs on.
	clock.Set(wed(8, 0, 0))
	force(t, m, "b1")
	const down = "dt-00000 is in downtime (config): Wed 08:00-10:00 Europe/Berlin until 10:00"
	waiting := func(want string) func() (bool, error) {
		return func() (bool, error) {
			q, err := m.API().Queue(ctx)
			if err != nil {
				return false, err
			}
			return len(q) == 1 && q[0].Request.Builder == "b1" && q[0].WaitCode == drover.WaitUnavailable &&
				q[0].Waiting == "every eligible worker is unavailable: "+want, nil
		}
	}
	waitFor(t, "b1 waiting for the downtime", waiting(down+" (1 build running)"))
	w, err := m.API().Reader().GetWorker(ctx, "dt-00000")
	if err != nil {
		t.Fatal(err)
	}
	if a, reason, by := w.Effective(); a != drover.Offline || by != "downtime (config)" || reason != "Wed 08:00-10:00 Europe/Berlin until 10:00" ||
		w.Availability != drover.Eager || w.Downtime == nil || !w.Downtime.Until.Equal(wed(10, 0, 0)) {
		t.Errorf("worker in downtime: %s, %q by %q; own %s; downtime %+v", a, reason, by, w.Availability, w.Downtime)
	}
	if page := get(t, m.URL+"/workers"); !strings.Contains(page, "set by downtime (config): Wed 08:00-10:00 Europe/Berlin until 10:00 · worker's own: eager") {
		t.Errorf("the fleet page does not show the downtime:\n%s", page)
	}
	if el, err := m.API().Eligibility(ctx, "b1"); err != nil || len(el) != 1 || !el[0].Eligible ||
		!slices.Contains(el[0].Reasons, "in downtime (config): Wed 08:00-10:00 Europe/Berlin until 10:00") {
		t.Errorf("eligibility in downtime: %+v, %v", el, err)
	}
	if body := get(t, m.URL+"/api/v1/workers"); !strings.Contains(body, `"downtime":{"source":"config","window":"Wed 08:00-10:00 Europe/Berlin","until":"`) {
		t.Errorf("GET /api/v1/workers does not show the downtime:\n%s", body)
	}
	if page := get(t, m.URL+"/workers/dt-00000"); !strings.Contains(page, "No new build starts here until the downtime ends") {
		t.Errorf("the worker's page does not show the downtime:\n%s", page)
	}

	// b0 finishes in the downtime; the freed worker's round still keeps b1
	// waiting. The clock is a second before the window's end.
	clock.Set(wed(9, 59, 59))
	f.ReleaseHeld()
	waitFor(t, "b0 finished and b1 still waiting", func() (bool, error) {
		ok, err := waiting(down)()
		return ok && len(builds(t, m, drover.BuildFilter{State: drover.BuildFinished})) == 1, err
	})
	if b := builds(t, m, drover.BuildFilter{Builder: "b0"}); len(b) != 1 || b[0].Result != drover.Success {
		t.Fatalf("b0 in the downtime: %+v", b)
	}

	// The window ends: nothing kicks the master, yet b1 runs.
	clock.Set(wed(10, 0, 0))
	waitFor(t, "b1 finished after the downtime", finished(t, m, 2))
	if w, err := m.API().Reader().GetWorker(ctx, "dt-00000"); err != nil || w.Downtime != nil {
		t.Errorf("after the downtime: %+v, %v", w, err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}
