package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

func testArtifacts(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	other := startBuild(t, s, "linux", "w")

	a1 := &drover.Artifact{BuildID: b.ID, StepIndex: 2, Path: "results/sub/data.bin", Size: 3 << 20, SHA256: "aa", Created: at(time.Hour)}
	a2 := &drover.Artifact{BuildID: b.ID, StepIndex: 2, Path: "results/report.txt", Size: 12, SHA256: "bb", Created: at(2 * time.Hour)}
	a3 := &drover.Artifact{BuildID: other.ID, StepIndex: 1, Path: "x", Size: 1, SHA256: "cc", Created: at(3 * time.Hour)}
	for _, a := range []*drover.Artifact{a1, a2, a3} {
		must(t, s.AddArtifact(ctx, a), "add artifact "+a.Path)
		if a.ID == 0 {
			t.Fatalf("AddArtifact set no ID")
		}
	}
	wantKind(t, s.AddArtifact(ctx, &drover.Artifact{BuildID: 1e9, Path: "x", Created: at(0)}), drover.NotFound, "artifact of an unknown build")
	wantKind(t, s.AddArtifact(ctx, &drover.Artifact{BuildID: b.ID, Created: at(0)}), drover.Invalid, "artifact without a path")

	list, err := s.ListArtifacts(ctx, b.ID)
	must(t, err, "list artifacts")
	wantEqual(t, list, []drover.Artifact{*a2, *a1}, "artifacts of the build, by path")

	// Storing the same path again replaces the entry.
	again := &drover.Artifact{BuildID: b.ID, StepIndex: 4, Path: "results/report.txt", Size: 13, SHA256: "dd", Created: at(2 * time.Hour)}
	must(t, s.AddArtifact(ctx, again), "add artifact again")
	wantEqual(t, again.ID, a2.ID, "ID of a replaced artifact")
	got, err := s.GetArtifact(ctx, a2.ID)
	must(t, err, "get artifact")
	wantEqual(t, *got, *again, "replaced artifact")
	_, err = s.GetArtifact(ctx, 1e9)
	wantKind(t, err, drover.NotFound, "unknown artifact")

	exp, err := s.ExpiredArtifacts(ctx, at(2*time.Hour+time.Minute), 0)
	must(t, err, "expired artifacts")
	wantEqual(t, artifactIDs(exp), []int64{a1.ID, a2.ID}, "artifacts created before the horizon, oldest first")
	exp, err = s.ExpiredArtifacts(ctx, at(2*time.Hour+time.Minute), 1)
	must(t, err, "expired artifacts limit 1")
	wantEqual(t, artifactIDs(exp), []int64{a1.ID}, "limited expired artifacts")

	must(t, s.DeleteArtifacts(ctx, []int64{a1.ID, 1e9}), "delete artifacts")
	list, err = s.ListArtifacts(ctx, b.ID)
	must(t, err, "list after delete")
	wantEqual(t, artifactIDs(list), []int64{a2.ID}, "artifacts left")
	list, err = s.ListArtifacts(ctx, other.ID)
	must(t, err, "list other build")
	wantEqual(t, artifactIDs(list), []int64{a3.ID}, "other build's artifacts untouched")
	must(t, s.DeleteArtifacts(ctx, nil), "delete nothing")
}

func artifactIDs(as []drover.Artifact) []int64 {
	var out []int64
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}
