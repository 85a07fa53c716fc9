//go:build unix

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// fakeLoad is a load average tests set by hand.
type fakeLoad struct {
	mu   sync.Mutex
	load float64
	err  error
}

func (l *fakeLoad) Load() (float64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.load, l.err
}

func (l *fakeLoad) Set(v float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.load = v
}

// nextAvailability reads the worker's messages until a FactsUpdate and
// returns it.
func nextAvailability(t *testing.T, s *fakeSession) *workerproto.FactsUpdate {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := s.Next(t, time.Until(deadline))
		if f := m.GetFacts(); f != nil {
			if len(f.GetFacts()) != 0 {
				t.Errorf("availability update carries facts %v; an empty map means unchanged", f.GetFacts())
			}
			return f
		}
	}
}

// waitSocket waits until the agent in dir answers on its control socket.
func waitSocket(t *testing.T, dir string) AvailabilityStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, running, err := QueryAvailability(context.Background(), dir)
		if err == nil && running {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("control socket in %s does not answer: %v", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestControlSocketRoundTrip(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	clock := &fakeClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	a := newTestAgent(t, m, dir, func(c *Config) { c.Now = clock.Now })
	cancel, done := runAgent(t, a)
	s := m.Session(t)
	if s.hello.GetAvailability() != "eager" || s.hello.GetAvailabilityReason() != "" {
		t.Errorf("hello availability = %q (%q), want eager", s.hello.GetAvailability(), s.hello.GetAvailabilityReason())
	}

	st := waitSocket(t, dir)
	if st.Availability != drover.Eager || st.Source != SourceDefault || st.Manual != nil {
		t.Errorf("status = %+v, want eager by default", st)
	}
	fi, err := os.Stat(filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&fs.ModeSocket == 0 {
		t.Errorf("control.sock mode = %v, want a socket with 0600", fi.Mode())
	}

	ctx := context.Background()
	st, running, err := SetAvailability(ctx, dir, "offline", "office hours")
	if err != nil || !running {
		t.Fatalf("SetAvailability = %v, running %v", err, running)
	}
	if st.Availability != drover.Offline || st.Reason != "office hours" || st.Source != SourceManual {
		t.Errorf("status after set = %+v", st)
	}
	if st.Manual == nil || st.Manual.Availability != drover.Offline || !st.Manual.SetAt.Equal(clock.Now()) {
		t.Errorf("manual = %+v", st.Manual)
	}
	if f := nextAvailability(t, s); f.GetAvailability() != "offline" || f.GetAvailabilityReason() != "office hours" {
		t.Errorf("FactsUpdate = %v, want offline: office hours", f)
	}
	st, running, err = QueryAvailability(ctx, dir)
	if err != nil || !running || st.Availability != drover.Offline || st.Reason != "office hours" {
		t.Errorf("QueryAvailability = %+v, %v, %v", st, running, err)
	}

	// The setting is written, privately, to survive a restart.
	fi, err = os.Stat(filepath.Join(dir, "availability.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("availability.json mode = %v, want 0600", fi.Mode().Perm())
	}

	// A bad request is refused with an invalid error, and changes nothing.
	_, err = controlDo(ctx, dir, "POST", availabilityRequest{Availability: "sleepy"})
	if drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), "sleepy") {
		t.Errorf("POST sleepy = %v, want an invalid error", err)
	}
	if _, _, err := SetAvailability(ctx, dir, "sleepy", ""); drover.KindOf(err) != drover.Invalid {
		t.Errorf("SetAvailability(sleepy) = %v, want invalid", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "control.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control.sock left behind after Run: %v", err)
	}

	// A new Agent on the same directory starts offline, and says so in
	// its hello.
	a2 := newTestAgent(t, m, dir, func(c *Config) { c.Now = clock.Now })
	runAgent(t, a2)
	s2 := m.Session(t)
	if s2.hello.GetAvailability() != "offline" || s2.hello.GetAvailabilityReason() != "office hours" {
		t.Errorf("hello after restart = %q (%q), want offline (office hours)", s2.hello.GetAvailability(), s2.hello.GetAvailabilityReason())
	}

	// auto clears the setting, on the stream and on disk.
	st, running, err = SetAvailability(ctx, dir, "auto", "")
	if err != nil || !running || st.Availability != drover.Eager || st.Manual != nil || st.Source != SourceDefault {
		t.Fatalf("SetAvailability(auto) = %+v, %v, %v", st, running, err)
	}
	if f := nextAvailability(t, s2); f.GetAvailability() != "eager" || f.GetAvailabilityReason() != "" {
		t.Errorf("FactsUpdate = %v, want eager", f)
	}
	if _, err := os.Stat(filepath.Join(dir, "availability.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("availability.json after auto: %v, want it gone", err)
	}
}

func TestControlWithoutWorker(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	ctx := context.Background()

	if _, _, err := SetAvailability(ctx, dir, "offline", ""); drover.KindOf(err) != drover.NotFound {
		t.Errorf("SetAvailability in an empty directory = %v, want not found", err)
	}
	if _, _, err := QueryAvailability(ctx, dir); drover.KindOf(err) != drover.NotFound {
		t.Errorf("QueryAvailability in an empty directory = %v, want not found", err)
	}

	// A worker that ran once (New writes worker.json), with a schedule.
	newTestAgent(t, m, dir, func(c *Config) {
		c.Schedule = &Schedule{Windows: mustWindows(t, "22:00-07:00"), Timezone: "UTC"}
	})
	st, running, err := SetAvailability(ctx, dir, "draining", "upgrading the OS")
	if err != nil || running {
		t.Fatalf("SetAvailability = %v, running %v; want it stored for later", err, running)
	}
	if st.Availability != drover.Draining || st.Reason != "upgrading the OS" || st.Source != SourceManual {
		t.Errorf("status = %+v", st)
	}
	st, running, err = QueryAvailability(ctx, dir)
	if err != nil || running || st.Availability != drover.Draining || len(st.Windows) != 1 || st.Timezone != "UTC" {
		t.Errorf("QueryAvailability = %+v, %v, %v", st, running, err)
	}

	// A stale socket from a crashed worker is not a running worker.
	stale := filepath.Join(dir, "control.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, running, err := QueryAvailability(ctx, dir); err != nil || running {
		t.Errorf("QueryAvailability with a stale socket = %v, running %v", err, running)
	}

	// The worker starts with it, replacing the stale socket.
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	if s.hello.GetAvailability() != "draining" || s.hello.GetAvailabilityReason() != "upgrading the OS" {
		t.Errorf("hello = %q (%q), want draining (upgrading the OS)", s.hello.GetAvailability(), s.hello.GetAvailabilityReason())
	}
	if st := waitSocket(t, dir); st.Availability != drover.Draining {
		t.Errorf("status = %+v", st)
	}
}

func TestSecondWorkerInSameDirectory(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	runAgent(t, newTestAgent(t, m, dir, nil))
	m.Session(t)
	waitSocket(t, dir)
	before, err := os.ReadFile(filepath.Join(dir, "worker.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Dir: dir, Schedule: &Schedule{MaxLoad: 3}})
	if drover.KindOf(err) != drover.Conflict || !strings.Contains(err.Error(), "another worker is running") {
		t.Fatalf("second New = %v, want a conflict", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "worker.json")); string(after) != string(before) {
		t.Errorf("second New rewrote worker.json:\n%s\nwas:\n%s", after, before)
	}
	// Run checks again: a worker may have started since New.
	a2 := newTestAgent(t, m, t.TempDir(), nil)
	a2.dir = dir
	err = a2.Run(context.Background())
	if drover.KindOf(err) != drover.Conflict || !strings.Contains(err.Error(), "another worker is running") {
		t.Fatalf("second Run = %v, want a conflict", err)
	}
	// The first worker's socket is untouched.
	waitSocket(t, dir)
}

func TestAvailabilityFollowsClockAndLoad(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2026, 6, 1, 23, 0, 0, 0, paris)}
	load := &fakeLoad{load: 1}
	a := newTestAgent(t, m, dir, func(c *Config) {
		c.Now = clock.Now
		c.LoadAverage = load.Load
		c.Schedule = &Schedule{Windows: mustWindows(t, "22:00-07:00"), Timezone: "Europe/Paris", MaxLoad: 6}
	})
	a.availEvery = 10 * time.Millisecond
	runAgent(t, a)
	s := m.Session(t)
	if s.hello.GetAvailability() != "eager" {
		t.Errorf("hello availability = %q, want eager inside the window", s.hello.GetAvailability())
	}

	load.Set(7.1)
	if f := nextAvailability(t, s); f.GetAvailability() != "reluctant" || f.GetAvailabilityReason() != "load 7.10 above 6" {
		t.Errorf("FactsUpdate = %v, want reluctant: load 7.10 above 6", f)
	}
	load.Set(0.5)
	if f := nextAvailability(t, s); f.GetAvailability() != "eager" {
		t.Errorf("FactsUpdate = %v, want eager", f)
	}
	clock.Set(time.Date(2026, 6, 2, 7, 0, 0, 0, paris))
	if f := nextAvailability(t, s); f.GetAvailability() != "offline" || f.GetAvailabilityReason() != "outside 22:00-07:00 until 22:00" {
		t.Errorf("FactsUpdate = %v, want offline: outside 22:00-07:00 until 22:00", f)
	}

	// While disconnected the state moves on; the next hello carries it.
	s.Drop()
	clock.Set(time.Date(2026, 6, 2, 22, 30, 0, 0, paris))
	load.Set(9)
	s2 := m.Session(t)
	deadline := time.Now().Add(5 * time.Second)
	got, reason := s2.hello.GetAvailability(), s2.hello.GetAvailabilityReason()
	for got != "reluctant" && time.Now().Before(deadline) {
		// The hello may have raced the change; the update follows it.
		f := nextAvailability(t, s2)
		got, reason = f.GetAvailability(), f.GetAvailabilityReason()
	}
	if got != "reluctant" || reason != "load 9.00 above 6" {
		t.Errorf("after reconnect: %q (%q), want reluctant (load 9.00 above 6)", got, reason)
	}
}

func TestAvailabilityChangeKeepsCommandsRunning(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(shell("c1", `sleep 0.3; echo done`))
	if _, _, err := SetAvailability(context.Background(), waitDir(t, dir), "offline", "lunch"); err != nil {
		t.Fatal(err)
	}
	out, fin := s.Collect(t, "c1", 10*time.Second)
	if fin.GetReason() != workerproto.FinishReason_FINISH_REASON_EXITED || fin.GetExitCode() != 0 {
		t.Errorf("command finished %v, want a normal exit", fin)
	}
	var text strings.Builder
	for _, o := range out {
		text.Write(o.GetData())
	}
	if !strings.Contains(text.String(), "done") {
		t.Errorf("output = %q", text.String())
	}
}

// waitDir returns dir once its worker answers on the control socket.
func waitDir(t *testing.T, dir string) string {
	t.Helper()
	waitSocket(t, dir)
	return dir
}

func TestSchedulePersists(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	sched := Schedule{Windows: mustWindows(t, "22:00-07:00", "12:00-13:30"), Timezone: "Europe/Paris", MaxLoad: 6, OverLoad: drover.Offline}
	newTestAgent(t, m, dir, func(c *Config) { c.Schedule = &sched })

	got, err := LoadSchedule(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b1, b2 := mustJSON(t, got), mustJSON(t, sched); b1 != b2 {
		t.Errorf("stored schedule = %s, want %s", b1, b2)
	}
	// A run without a schedule keeps it.
	a := newTestAgent(t, m, dir, nil)
	if b1, b2 := mustJSON(t, a.settings.sched), mustJSON(t, sched); b1 != b2 {
		t.Errorf("schedule in use = %s, want %s", b1, b2)
	}
	// A zero schedule clears it.
	newTestAgent(t, m, dir, func(c *Config) { c.Schedule = &Schedule{} })
	if got, err := LoadSchedule(dir); err != nil || !got.IsZero() {
		t.Errorf("schedule after clearing = %+v, %v", got, err)
	}
	// A bad one is refused.
	_, err = New(Config{Dir: dir, Schedule: &Schedule{Timezone: "Nowhere/Special"}})
	if drover.KindOf(err) != drover.Invalid {
		t.Errorf("New with a bad time zone = %v, want invalid", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestControlSocketPathTooLong(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	a := newTestAgent(t, m, dir, nil)
	err := a.Run(context.Background())
	if drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), "shorter worker directory") {
		t.Fatalf("Run = %v, want an invalid error about the path", err)
	}
}
