package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// testStepURLs shows that a step's links are stored by AddSteps and
// UpdateStep, that SetStepURL adds one link without losing the others
// (even when several are added at once), and that it refuses bad links
// and unknown steps.
func testStepURLs(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	steps := []drover.Step{
		{BuildID: b.ID, Index: 0, Name: "checkout", URLs: map[string]string{"source": "https://example.org/c/1"}},
		{BuildID: b.ID, Index: 1, Name: "test"},
	}
	must(t, s.Builds("").AddSteps(ctx, steps), "add steps")
	got, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, got[0].URLs, steps[0].URLs, "links stored by AddSteps")
	if got[1].URLs != nil {
		t.Errorf("step without links reads back %v, want nil", got[1].URLs)
	}

	up := got[1]
	up.State = drover.StepRunning
	up.URLs = map[string]string{"coverage": "https://cov.example.org/1/"}
	must(t, s.Builds("").UpdateStep(ctx, &up), "update step")
	must(t, s.Builds("").SetStepURL(ctx, b.ID, 1, "report", "https://example.org/r/1"), "set url")
	must(t, s.Builds("").SetStepURL(ctx, b.ID, 1, "report", "https://example.org/r/2"), "replace url")
	got, err = s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, got[1].URLs, map[string]string{
		"coverage": "https://cov.example.org/1/",
		"report":   "https://example.org/r/2",
	}, "links after SetStepURL")
	wantEqual(t, got[1].State, drover.StepRunning, "state kept by SetStepURL")
	wantEqual(t, got[0].URLs, steps[0].URLs, "other step's links untouched")

	// Links added at once all survive.
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			errs <- s.Builds("").SetStepURL(ctx, b.ID, 0, fmt.Sprintf("l%d", i), fmt.Sprintf("https://example.org/%d", i))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err, "concurrent set url")
	}
	got, err = s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	if len(got[0].URLs) != 11 {
		t.Errorf("after 10 concurrent links the step has %d, want 11: %v", len(got[0].URLs), got[0].URLs)
	}

	if err := s.Builds("").SetStepURL(ctx, b.ID, 7, "x", "https://example.org/"); drover.KindOf(err) != drover.NotFound {
		t.Errorf("link of an unknown step: %v, want NotFound", err)
	}
	if err := s.Builds("").SetStepURL(ctx, b.ID, 1, "", "https://example.org/"); drover.KindOf(err) != drover.Invalid {
		t.Errorf("link without a name: %v, want Invalid", err)
	}
	if err := s.Builds("").SetStepURL(ctx, b.ID, 1, "bad", "https://example.org/a b"); drover.KindOf(err) != drover.Invalid {
		t.Errorf("link with a space: %v, want Invalid", err)
	}
	for i := len(got[0].URLs); i < drover.MaxStepURLs; i++ {
		must(t, s.Builds("").SetStepURL(ctx, b.ID, 0, fmt.Sprintf("m%d", i), "https://example.org/m"), "fill links")
	}
	if err := s.Builds("").SetStepURL(ctx, b.ID, 0, "one-too-many", "https://example.org/"); drover.KindOf(err) != drover.Invalid {
		t.Errorf("link past the limit: %v, want Invalid", err)
	}
	must(t, s.Builds("").SetStepURL(ctx, b.ID, 0, "m20", "https://example.org/replaced"), "replace a link at the limit")
}
