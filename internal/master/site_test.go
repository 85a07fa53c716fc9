package master

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
)

// A master takes over the running builds of masters whose heartbeat is
// older than the site timeout — and only those: a live master's builds
// and its workers are left alone. A build it cannot follow ends as retry,
// its request queued again, and the dead master's workers are marked
// disconnected.
func TestAdoptOrphans(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m := newTestMaster(t, `
drover.master(site_timeout = "10s")
drover.builder(name = "b", steps = [drover.shell("true")])
`, func() time.Time { return now })
	ctx := context.Background()
	m.ctx = ctx
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
		req := &drover.BuildRequest{Builder: "b", Reason: "test", Submitted: now}
		if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
			t.Fatal(err)
		}
		b := &drover.Build{Builder: "b", Worker: "w-" + owner, Started: now, Master: owner}
		if err := m.store.ClaimRequest(ctx, req.ID, b); err != nil {
			t.Fatal(err)
		}
		builds[owner] = b
	}

	if err := m.adoptOrphans(ctx); err != nil {
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
	if !m.othersAlive() {
		t.Error("othersAlive is false with a live master in the site")
	}
	st, err := m.Site(ctx)
	if err != nil || st.This != m.id || len(st.Masters) != 2 {
		t.Fatalf("Site = %+v, %v", st, err)
	}
	for _, x := range st.Masters {
		if x.Alive != (x.ID == "live") {
			t.Errorf("master %s alive = %v", x.ID, x.Alive)
		}
	}
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

// A master whose own heartbeat lapsed beyond the site timeout lets go of
// its builds (they may have been adopted) before taking back what is still
// its own; a timely heartbeat does nothing of the sort.
func TestLapsedHeartbeatFences(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m := newTestMaster(t, `
drover.master(site_timeout = "10s")
drover.builder(name = "b", steps = [drover.shell("true")])
`, func() time.Time { return now })
	ctx := context.Background()
	m.ctx = ctx
	req := &drover.BuildRequest{Builder: "b", Reason: "test", Submitted: now}
	if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Builder: "b", Worker: "w", Started: now, Master: m.id}
	if err := m.store.ClaimRequest(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}

	m.site.lastBeat = now.Add(-5 * time.Second)
	m.beat(ctx)
	if got, _ := m.store.GetBuild(ctx, b.ID); got.State != drover.BuildRunning {
		t.Fatalf("a timely heartbeat touched the build: %s", got.State)
	}
	masters, _ := m.store.ListMasters(ctx)
	if len(masters) != 1 || masters[0].ID != m.id || !masters[0].Heartbeat.Equal(now) {
		t.Fatalf("masters after a heartbeat = %+v", masters)
	}

	// Lapsed: the build, not in hand, is taken back (and, with no steps
	// stored, given up as retry); dispatch resumes afterwards.
	m.site.lastBeat = now.Add(-11 * time.Second)
	m.beat(ctx)
	if got, _ := m.store.GetBuild(ctx, b.ID); got.State != drover.BuildFinished || got.Result != drover.Retry {
		t.Errorf("after a lapsed heartbeat the build = %s %s, want taken back (and given up)", got.State, got.Result)
	}
	if m.fencing {
		t.Error("dispatch still held after fencing")
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
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), Options{
		Dir: dir, Config: cfg, ConfigPath: path, HTTPAddr: "127.0.0.1:0", WorkersAddr: "127.0.0.1:0", Plaintext: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.closeResources)
	ctx := context.Background()
	m.ctx = ctx

	write(`drover.builder(name = "b", steps = [drover.shell("true")])`)
	m.handleNotice(ctx, notice{Origin: "other", Kind: noticeReload, Hash: "0123abcd"})
	if _, ok := m.Builder("b"); !ok {
		t.Fatal("the notice did not reload this master's file")
	}
	if st := m.ConfigStatus(); st.Differs != "other" || st.DiffersHash != "0123abcd" {
		t.Fatalf("status after a reload to another config = %+v, want it to name the other master", st)
	}
	m.handleNotice(ctx, notice{Origin: "other", Kind: noticeReload, Hash: m.config().Hash})
	if st := m.ConfigStatus(); st.Differs != "" {
		t.Fatalf("status with matching configs = %+v", st)
	}
}
