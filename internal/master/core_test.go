package master_test

// The master's core, driven as a user's fleet drives it: a real master in
// this process (mastertest) and simulated workers speaking the real
// protocol. Each test names what it checks of dispatch, the runner, the
// grace of a lost worker and the recovery of builds left running.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/mastertest"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// coreTimeout bounds each wait of these tests: generous, since a wait
// ends as soon as what it waits for happens.
const coreTimeout = 60 * time.Second

func coreConfig(builders int, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "drover.master(title = \"core\", worker_grace = \"2s\"%s)\n", extra)
	for i := range builders {
		fmt.Fprintf(&b, "drover.builder(name = \"b%d\", steps = [drover.shell(\"make\")])\n", i)
	}
	return b.String()
}

// fleetFor enrolls n simulated workers with m and connects them.
func fleetFor(t *testing.T, m *mastertest.Master, prefix string, n int, beh mastertest.Behavior) *mastertest.Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), coreTimeout)
	defer cancel()
	creds, err := mastertest.EnrollCreds(ctx, m.Store, prefix, n)
	if err != nil {
		t.Fatal(err)
	}
	f := mastertest.StartFleet(context.Background(), m.WorkersAddr, creds, beh, slog.New(slog.DiscardHandler))
	t.Cleanup(f.Close)
	if err := f.WaitConnected(ctx, n); err != nil {
		t.Fatal(err)
	}
	return f
}

func force(t *testing.T, m *mastertest.Master, builder string) {
	t.Helper()
	if err := m.API().Force(context.Background(), &drover.BuildRequest{Builder: builder, Reason: "test"}); err != nil {
		t.Fatalf("force %s: %v", builder, err)
	}
}

// waitFor polls cond until it holds; the master's state changes from its
// own goroutines, and these tests read it as a user would, through the API.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(coreTimeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func builds(t *testing.T, m *mastertest.Master, f drover.BuildFilter) []drover.Build {
	t.Helper()
	bs, err := m.API().Reader().ListBuilds(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func finished(t *testing.T, m *mastertest.Master, n int) func() (bool, error) {
	return func() (bool, error) {
		done := 0
		for _, b := range builds(t, m, drover.BuildFilter{Limit: 1000}) {
			if b.State == drover.BuildFinished {
				done++
			}
		}
		return done >= n, nil
	}
}

// slots tracks the commands each worker runs at once.
type slots struct {
	mu      sync.Mutex
	running map[string]int
	most    map[string]int
	started int
}

func newSlots() *slots { return &slots{running: map[string]int{}, most: map[string]int{}} }

func (s *slots) run(w string, _ *pb.RunCommand, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running[w]++
	s.started++
	s.most[w] = max(s.most[w], s.running[w])
}

func (s *slots) done(w, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running[w]--
}

func (s *slots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// A dispatch round gives each free worker one request and no more than its
// slots; the others wait, each with a reason in code and words; when the
// workers free up, every request runs, and no worker ever ran two at once.
func TestDispatchRounds(t *testing.T) {
	m := mastertest.New(t, coreConfig(3, ""))
	s := newSlots()
	f := fleetFor(t, m, "w", 2, mastertest.Behavior{Hold: true, OnRun: s.run, OnDone: s.done})
	for i := range 6 {
		force(t, m, fmt.Sprintf("b%d", i%3))
	}
	waitFor(t, "two builds running", func() (bool, error) { return s.count() == 2, nil })
	waitFor(t, "four requests waiting as busy", func() (bool, error) {
		q, err := m.API().Queue(context.Background())
		if err != nil {
			return false, err
		}
		busy := 0
		for _, e := range q {
			if e.WaitCode == drover.WaitBusy && e.Waiting != "" {
				busy++
			}
		}
		return busy == 4, nil
	})
	if got := len(builds(t, m, drover.BuildFilter{State: drover.BuildRunning})); got != 2 {
		t.Fatalf("%d builds running, want 2 (one per worker slot)", got)
	}
	f.ReleaseHeld()
	waitFor(t, "six builds finished", finished(t, m, 6))
	for _, b := range builds(t, m, drover.BuildFilter{Limit: 100}) {
		if b.Result != drover.Success {
			t.Errorf("build %d of %s: %s (%s), want success", b.ID, b.Builder, b.Result, b.Summary)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for w, n := range s.most {
		if n > 1 {
			t.Errorf("worker %s ran %d commands at once with one slot", w, n)
		}
	}
}

// A worker that comes back after the grace without its command (here: it
// lost it) leaves the build to end as retry, an infra result, with its
// request queued again and built anew.
func TestLostCommandRetried(t *testing.T) {
	m := mastertest.New(t, coreConfig(1, ""))
	s := newSlots()
	ctx, cancel := context.WithTimeout(context.Background(), coreTimeout)
	defer cancel()
	creds, err := mastertest.EnrollCreds(ctx, m.Store, "w", 1)
	if err != nil {
		t.Fatal(err)
	}
	first := mastertest.StartFleet(context.Background(), m.WorkersAddr, creds, mastertest.Behavior{Hold: true, OnRun: s.run}, slog.New(slog.DiscardHandler))
	if err := first.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	force(t, m, "b0")
	waitFor(t, "the build's command sent", func() (bool, error) { return s.count() == 1, nil })
	creds = first.Creds() // with the token enrolling gave
	first.Close()         // the worker vanishes, its command with it

	again := mastertest.StartFleet(context.Background(), m.WorkersAddr, creds, mastertest.Behavior{}, slog.New(slog.DiscardHandler))
	defer again.Close()
	waitFor(t, "two builds finished", finished(t, m, 2))
	bs := builds(t, m, drover.BuildFilter{Limit: 10})
	byResult := map[drover.Result]drover.Build{}
	for _, b := range bs {
		byResult[b.Result] = b
	}
	if len(bs) != 2 || byResult[drover.Retry].ID == 0 || byResult[drover.Success].ID == 0 {
		t.Fatalf("builds %+v, want one retry then one success", bs)
	}
	if byResult[drover.Retry].RequestID != byResult[drover.Success].RequestID {
		t.Errorf("the retry's request %d was not the one built again (%d)", byResult[drover.Retry].RequestID, byResult[drover.Success].RequestID)
	}
}

// Cancelling a running build stops its command on the worker and ends the
// build cancelled; its request does not run again.
func TestCancelRunningBuild(t *testing.T) {
	m := mastertest.New(t, coreConfig(1, ""))
	s := newSlots()
	fleetFor(t, m, "w", 1, mastertest.Behavior{Hold: true, OnRun: s.run, OnDone: s.done})
	force(t, m, "b0")
	waitFor(t, "the command running", func() (bool, error) { return s.count() == 1, nil })
	b := builds(t, m, drover.BuildFilter{State: drover.BuildRunning})[0]
	if err := m.API().CancelBuild(context.Background(), b.ID, "not wanted"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the build finished", finished(t, m, 1))
	got, err := m.API().Reader().GetBuild(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result != drover.Cancelled {
		t.Errorf("build result %s (%s), want cancelled", got.Result, got.Summary)
	}
	waitFor(t, "the worker's command ended", func() (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, n := range s.running {
			if n != 0 {
				return false, nil
			}
		}
		return len(s.running) == 1, nil
	})
	req, err := m.API().Reader().GetRequest(context.Background(), b.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	if req.State == drover.RequestPending {
		t.Errorf("request %d pending again after its build was cancelled", req.ID)
	}
}

// A master restarted while a build runs takes it over: it recovers the
// running step's log (so the hub can append to it) and tracks the
// command; the worker returns without it, so the build ends as retry with
// its log kept and finished, and the request is built again.
func TestRestartTakesOverRunningBuild(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m1, err := mastertest.Start(context.Background(), mastertest.Options{Dir: dir, Config: coreConfig(1, ", stop_grace = \"0s\""), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	s := newSlots()
	ctx, cancel := context.WithTimeout(context.Background(), coreTimeout)
	defer cancel()
	creds, err := mastertest.EnrollCreds(ctx, m1.Store, "w", 1)
	if err != nil {
		t.Fatal(err)
	}
	fl := mastertest.StartFleet(context.Background(), m1.WorkersAddr, creds, mastertest.Behavior{Hold: true, OnRun: s.run}, logger)
	if err := fl.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	force(t, m1, "b0")
	waitFor(t, "the command running", func() (bool, error) { return s.count() == 1, nil })
	creds = fl.Creds()
	addr := m1.WorkersAddr
	fl.Close()
	if err := m1.Stop(); err != nil {
		t.Fatal(err)
	}

	m2 := mastertest.NewWith(t, mastertest.Options{Dir: dir, Config: coreConfig(1, ", stop_grace = \"0s\""), WorkersAddr: addr, Logger: logger})
	fl2 := mastertest.StartFleet(context.Background(), m2.WorkersAddr, creds, mastertest.Behavior{}, logger)
	defer fl2.Close()
	waitFor(t, "two builds finished", finished(t, m2, 2))
	bs := builds(t, m2, drover.BuildFilter{Limit: 10})
	var retried *drover.Build
	for i := range bs {
		if bs[i].Result == drover.Retry {
			retried = &bs[i]
		}
	}
	if retried == nil {
		t.Fatalf("builds %+v, want the first ended as retry", bs)
	}
	logs, err := m2.API().Reader().ListLogs(context.Background(), retried.ID)
	if err != nil || len(logs) == 0 {
		t.Fatalf("logs of build %d: %v %v", retried.ID, logs, err)
	}
	for _, l := range logs {
		if !l.Complete {
			t.Errorf("log %d of the retried build left unfinished", l.ID)
		}
		var b strings.Builder
		if err := m2.API().ReadLog(context.Background(), l.ID, 0, &b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "make") || int64(b.Len()) != l.Bytes {
			t.Errorf("log %d: %d bytes (index says %d), %q; want the step's header kept", l.ID, b.Len(), l.Bytes, b.String())
		}
	}
}
