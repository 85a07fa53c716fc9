package master

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// The janitor removes artifacts older than the artifact horizon, files and
// index alike, and keeps newer ones; OpenArtifact serves what is kept.
func TestJanitorExpiresOldArtifacts(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	m := newTestMaster(t, `
drover.master(artifact_horizon = "1d")
drover.builder(name = "b", steps = [drover.upload("out")])
`, func() time.Time { return now })
	ctx := context.Background()
	req := &drover.BuildRequest{Builder: "b", Reason: "test", Submitted: now}
	if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Builder: "b", Worker: "w", Started: now}
	if err := m.store.ClaimRequest(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}
	var arts []*drover.Artifact
	for _, a := range []struct {
		path    string
		created time.Time
	}{{"out/old/a.txt", now.Add(-48 * time.Hour)}, {"out/new.txt", now.Add(-time.Hour)}} {
		art := &drover.Artifact{BuildID: b.ID, Path: a.path, Size: 5, SHA256: "x", Created: a.created}
		p, err := workerhub.ArtifactFile(m.janitor.artifacts, art.BuildID, art.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.store.AddArtifact(ctx, art); err != nil {
			t.Fatal(err)
		}
		arts = append(arts, art)
	}
	partials := filepath.Join(m.janitor.artifacts, ".partial")
	if err := os.MkdirAll(partials, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mtime := range map[string]time.Time{"stale": now.Add(-25 * time.Hour), "fresh": now.Add(-time.Hour)} {
		p := filepath.Join(partials, name)
		if err := os.WriteFile(p, []byte("part"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	m.janitor.expireArtifacts(ctx)
	if _, err := os.Stat(filepath.Join(partials, "stale")); !os.IsNotExist(err) {
		t.Errorf("abandoned partial upload kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(partials, "fresh")); err != nil {
		t.Errorf("recent partial upload removed: %v", err)
	}
	if _, err := m.store.GetArtifact(ctx, arts[0].ID); drover.KindOf(err) != drover.NotFound {
		t.Errorf("old artifact index kept: %v", err)
	}
	if _, _, err := m.backend.OpenArtifact(ctx, arts[0].ID); drover.KindOf(err) != drover.NotFound {
		t.Errorf("old artifact still served: %v", err)
	}
	oldDir := filepath.Join(m.janitor.artifacts, strconv.FormatInt(b.ID, 10), "out", "old")
	if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
		t.Errorf("old artifact's empty directory kept: %v", err)
	}
	a, f, err := m.backend.OpenArtifact(ctx, arts[1].ID)
	if err != nil {
		t.Fatalf("recent artifact: %v", err)
	}
	f.Close()
	if a.Path != "out/new.txt" {
		t.Errorf("recent artifact = %+v", a)
	}
}

// Upload and download steps become transfer commands, their worker path
// under the step's workdir.
func TestTransferCommand(t *testing.T) {
	up := &drover.StepSpec{Kind: drover.StepUpload, Src: "out", Dest: "results/%(prop:buildnumber)s", MaxBytes: 99}
	b := &drover.Build{ID: 7, Builder: "b", Number: 3}
	run := commandFor("c", b, &drover.Builder{Name: "b"}, up, 2, drover.Properties{"buildnumber": "3"}, nil, 0)
	want := &pb.Transfer{Kind: pb.TransferKind_TRANSFER_KIND_UPLOAD, WorkerPath: "build/out", MasterPath: "results/3", MaxBytes: 99}
	if got := run.GetTransfer(); got.GetKind() != want.Kind || got.GetWorkerPath() != want.WorkerPath || got.GetMasterPath() != want.MasterPath || got.GetMaxBytes() != want.MaxBytes {
		t.Errorf("upload transfer = %v, want %v", got, want)
	}
	down := &drover.StepSpec{Kind: drover.StepDownload, Src: "artifact:results/3/x", Dest: "back/x", Workdir: "src"}
	run = commandFor("c", b, &drover.Builder{Name: "b"}, down, 3, nil, nil, 0)
	if got := run.GetTransfer(); got.GetKind() != pb.TransferKind_TRANSFER_KIND_DOWNLOAD || got.GetWorkerPath() != "src/back/x" || got.GetMasterPath() != "artifact:results/3/x" {
		t.Errorf("download transfer = %v", got)
	}
	if run.GetBuildId() != 7 || run.GetStep() != 3 {
		t.Errorf("command = %v", run)
	}
}
