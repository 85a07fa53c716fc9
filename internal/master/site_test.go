package master

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// A master takes over the running builds of masters whose heartbeat is
// older than the site timeout, by the database's clock — and only those:
// a live master's builds and its workers are left alone. A build it
// cannot follow ends as retry, its request queued again, and the dead
// master's workers are marked disconnected.
func TestAdoptOrphans(t *testing.T) {
	m := newTestMaster(t, `
drover.master(site_timeout = "10s")
drover.builder(name = "b", steps = [drover.shell("true")])
`, time.Now)
	ctx := context.Background()
	now := time.Now()
	for id, beat := range map[string]time.Time{"live": now.Add(-5 * time.Second), "dead": now.Add(-11 * time.Second)} {
		if err := m.store.Heartbeat(ctx, &drover.Master{ID: id, Started: now.Add(-time.Hour), Heartbeat: beat}); err != nil {
			t.Fatal(err)
		}
		w := &drover.Worker{Name: "w-" + id, Connected: true, ConnectedAt: now, LastSeen: now, Master: id}
		if err := m.store.UpsertWorker(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	builds := map[string]*drover.Build{}
	for _, owner := range []string{"live", "dead"} {
		builds[owner] = claimed(t, m, owner)
	}
	if err := m.site.adoptOrphans(ctx); err != nil {
		t.Fatal(err)
	}

	live, _ := m.store.GetBuild(ctx, builds["live"].ID)
	if live.State != drover.BuildRunning || live.Master != "live" {
		t.Errorf("a live master's build = %s on %q, want running on live", live.State, live.Master)
	}
	dead, _ := m.store.GetBuild(ctx, builds["dead"].ID)
	// It has no steps stored, so it cannot be followed: it ends as retry.
	if dead.State != drover.BuildFinished || dead.Result != drover.Retry || dead.Master != m.id {
		t.Errorf("a dead master's build = %s %s on %q, want finished retry on %s", dead.State, dead.Result, dead.Master, m.id)
	}
	if r, _ := m.store.GetRequest(ctx, dead.RequestID); r.State != drover.RequestPending {
		t.Errorf("its request = %s, want pending again", r.State)
	}
	for name, want := range map[string]bool{"w-live": true, "w-dead": false} {
		if w, _ := m.store.GetWorker(ctx, name); w.Connected != want {
			t.Errorf("worker %s connected = %v, want %v", name, w.Connected, want)
		}
	}
	if !m.site.othersAlive() {
		t.Error("othersAlive is false with a live master in the site")
	}
	st, err := m.site.status(ctx)
	if err != nil || st.This != m.id || len(st.Masters) != 2 {
		t.Fatalf("Site = %+v, %v", st, err)
	}
	for _, x := range st.Masters {
		if x.Alive != (x.ID == "live") {
			t.Errorf("master %s alive = %v", x.ID, x.Alive)
		}
	}
}

// claimed queues and claims a request of builder b for master owner.
func claimed(t *testing.T, m *Master, owner string) *drover.Build {
	t.Helper()
	ctx := context.Background()
	req := &drover.BuildRequest{Builder: "b", Reason: "test"}
	if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Builder: "b", Worker: "w-" + owner, Started: time.Now(), Master: owner}
	if err := m.store.ClaimRequest(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A restarted master keeps its ID (DIR/master-id), so it takes its own
// builds back at once.
func TestMasterIDKept(t *testing.T) {
	dir := t.TempDir()
	a, err := loadMasterID(dir)
	if err != nil || a == "" {
		t.Fatalf("first ID %q, %v", a, err)
	}
	b, err := loadMasterID(dir)
	if err != nil || b != a {
		t.Fatalf("second ID %q, %v; want %q", b, err, a)
	}
	if c, _ := loadMasterID(t.TempDir()); c == a {
		t.Errorf("two directories share the ID %q", a)
	}
}

// failingBeats is the master's store with heartbeats that fail while
// down is set: a master cut off from its database.
type failingBeats struct {
	store.Store
	down atomic.Bool
}

func (f *failingBeats) Heartbeat(ctx context.Context, m *drover.Master) error {
	if f.down.Load() {
		return errors.New("connection refused")
	}
	return f.Store.Heartbeat(ctx, m)
}

// A master that cannot beat fences itself on its own clock, without
// waiting for a heartbeat to succeed: once half the site timeout has passed
// since its last beat, it holds dispatch, refuses workers and lets go of
// its builds. When it beats again it takes back what is still its own.
func TestFailingHeartbeatFences(t *testing.T) {
	m := newTestMaster(t, `
drover.master(site_timeout = "1s")
drover.builder(name = "b", steps = [drover.shell("true")])
`, time.Now)
	ctx := context.Background()
	fb := &failingBeats{Store: m.store}
	m.site.store, m.site.shared = fb, true
	if err := m.site.join(ctx); err != nil {
		t.Fatal(err)
	}
	b := claimed(t, m, m.id)

	fb.down.Store(true)
	m.site.tick(ctx) // fails, but within half the timeout: nothing yet
	if m.site.refusing() != nil || m.disp.isHeld() {
		t.Fatal("fenced at the first failed beat")
	}
	time.Sleep(m.site.timeout()/2 + 10*time.Millisecond) // the fence runs on the real clock
	m.site.tick(ctx)
	if err := m.site.refusing(); drover.KindOf(err) != drover.Unavailable {
		t.Fatalf("a master that cannot beat takes workers: %v", err)
	}
	if !m.disp.isHeld() {
		t.Fatal("a master that cannot beat dispatches")
	}
	if got, _ := m.store.GetBuild(ctx, b.ID); got.State != drover.BuildRunning {
		t.Fatalf("fencing wrote to the build: %s", got.State)
	}

	fb.down.Store(false)
	m.site.tick(ctx)
	if m.site.refusing() != nil || m.disp.isHeld() {
		t.Fatal("still fenced after a good beat")
	}
	// The build, not in hand, was taken back (and, with no steps stored,
	// given up as retry).
	if got, _ := m.store.GetBuild(ctx, b.ID); got.State != drover.BuildFinished || got.Result != drover.Retry {
		t.Errorf("after the fence the build = %s %s, want taken back (and given up)", got.State, got.Result)
	}
}

// A reload another master asks for reloads this master's own file, and a
// file that differs from the asking master's (by hash) shows in the
// config status until this master's config matches again.
func TestReloadNoticeComparesConfigs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.star")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`drover.builder(name = "a", steps = [drover.shell("true")])`)
	m := newTestMasterOn(t, dir, "", path, time.Now)
	ctx := context.Background()

	write(`drover.builder(name = "b", steps = [drover.shell("true")])`)
	m.site.handle(ctx, notice{Origin: "other", Kind: noticeReload, Hash: "0123abcd"})
	if _, ok := m.backend.Builder("b"); !ok {
		t.Fatal("the notice did not reload this master's file")
	}
	if st := m.configs.state(); st.Differs != "other" || st.DiffersHash != "0123abcd" {
		t.Fatalf("status after a reload to another config = %+v, want it to name the other master", st)
	}
	m.site.handle(ctx, notice{Origin: "other", Kind: noticeReload, Hash: m.configs.get().Hash})
	if st := m.configs.state(); st.Differs != "" {
		t.Fatalf("status with matching configs = %+v", st)
	}
}
