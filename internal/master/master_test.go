package master

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
)

// newTestMaster wires a master over a real SQLite store and log store in
// a temporary directory, without running it: tests drive its parts.
func newTestMaster(t *testing.T, src string, now func() time.Time) *Master {
	t.Helper()
	return newTestMasterOn(t, t.TempDir(), src, "", now)
}

// newTestMasterOn is newTestMaster in dir, with the config loaded from
// path when it is set, else from src.
func newTestMasterOn(t *testing.T, dir, src, path string, now func() time.Time) *Master {
	t.Helper()
	var cfg *config.Config
	var err error
	if path != "" {
		cfg, err = config.Load(path)
	} else {
		cfg, err = config.LoadSource("master.star", []byte(src))
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "state.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	logs, err := logstore.Open(filepath.Join(dir, "logs"), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logs.Close()
		st.Close()
	})
	m, err := New(Options{Dir: dir, Config: cfg, ConfigPath: path, Store: st, Logs: logs, HTTPURL: "http://127.0.0.1:1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now, Tokens: tokens.Hasher{Cost: tokens.FastCost}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The janitor removes the logs of builds older than the horizon, files and
// index alike, and keeps newer ones.
func TestJanitorExpiresOldLogs(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	m := newTestMaster(t, `
drover.master(log_horizon = "1d")
drover.builder(name = "b", steps = [drover.shell("true")])
`, func() time.Time { return now })
	ctx := context.Background()
	var logIDs []int64
	for i, finished := range []time.Time{now.Add(-48 * time.Hour), now.Add(-time.Hour)} {
		req := &drover.BuildRequest{Builder: "b", Reason: "test", Submitted: finished}
		if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
			t.Fatal(err)
		}
		b := &drover.Build{Builder: "b", Worker: "w", Started: finished.Add(-time.Minute)}
		if err := m.store.ClaimRequest(ctx, req.ID, b); err != nil {
			t.Fatal(err)
		}
		l := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
		if err := m.store.Builds("").AddLog(ctx, l); err != nil {
			t.Fatal(err)
		}
		if err := m.logs.Append(l.ID, []byte("output of build "+string(rune('A'+i)))); err != nil {
			t.Fatal(err)
		}
		if err := m.runner.finishLogFile(l); err != nil {
			t.Fatal(err)
		}
		if err := m.store.Builds("").UpdateLog(ctx, l); err != nil {
			t.Fatal(err)
		}
		if err := m.store.Builds("").FinishBuild(ctx, b.ID, drover.Success, "", finished, false); err != nil {
			t.Fatal(err)
		}
		logIDs = append(logIDs, l.ID)
	}
	m.janitor.expireLogs(ctx)
	if _, err := m.store.GetLog(ctx, logIDs[0]); drover.KindOf(err) != drover.NotFound {
		t.Errorf("old log index kept: %v", err)
	}
	if _, err := m.logs.Stat(logIDs[0]); drover.KindOf(err) != drover.NotFound {
		t.Errorf("old log file kept: %v", err)
	}
	if l, err := m.store.GetLog(ctx, logIDs[1]); err != nil || l.Bytes == 0 || !l.Complete {
		t.Errorf("recent log = %+v, %v", l, err)
	}
	if info, err := m.logs.Stat(logIDs[1]); err != nil || info.Bytes == 0 {
		t.Errorf("recent log file = %+v, %v", info, err)
	}
}

// Requests of builders the config no longer has are cancelled with a
// reason at start, not left waiting forever.
func TestOrphanRequestsCancelled(t *testing.T) {
	m := newTestMaster(t, `drover.builder(name = "kept", steps = [drover.shell("true")])`, time.Now)
	ctx := context.Background()
	gone := &drover.BuildRequest{Builder: "gone", Reason: "test"}
	kept := &drover.BuildRequest{Builder: "kept", Reason: "test"}
	if err := m.store.AddRequests(ctx, []*drover.BuildRequest{gone, kept}); err != nil {
		t.Fatal(err)
	}
	if err := m.recover(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ := m.store.GetRequest(ctx, gone.ID)
	if r.State != drover.RequestCancelled || r.CancelReason == "" {
		t.Errorf("request of a removed builder = %s %q", r.State, r.CancelReason)
	}
	if r, _ := m.store.GetRequest(ctx, kept.ID); r.State != drover.RequestPending {
		t.Errorf("request of a kept builder = %s", r.State)
	}
}
