package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// This file tests the methods that do in one transaction what would
// otherwise take several: ClaimRequests, StartBuild, StartStep and
// FinishStep.

func testClaimRequests(t *testing.T, s store.Store) {
	ctx := context.Background()
	src := drover.SourceStamp{Repository: "r", Branch: "main", Revision: "abc"}
	r1 := addRequest(t, s, "linux", func(r *drover.BuildRequest) { r.Source, r.Reason = src, "scheduler main" })
	r2 := addRequest(t, s, "mac", nil)
	r3 := addRequest(t, s, "linux", nil)
	gone := addRequest(t, s, "linux", nil)
	must(t, s.CancelRequest(ctx, gone.ID, "no"), "cancel")
	wrong := addRequest(t, s, "linux", nil)

	claims := []store.Claim{
		{Request: r1.ID, Build: &drover.Build{Builder: "linux", Worker: "w1", Started: t0}},
		{Request: gone.ID, Build: &drover.Build{Builder: "linux", Worker: "w2"}},
		{Request: r2.ID, Build: &drover.Build{Builder: "mac", Worker: "w3", Master: "m1"}},
		{Request: r3.ID, Build: &drover.Build{Worker: "w4"}},
		{Request: r3.ID + 1000, Build: &drover.Build{Builder: "linux", Worker: "w5"}},
		{Request: wrong.ID, Build: &drover.Build{Builder: "mac", Worker: "w6"}},
	}
	must(t, s.ClaimRequests(ctx, claims), "claim requests")
	const claimed = drover.Internal // in the table below: no error
	for i, want := range []drover.Kind{claimed, drover.Conflict, claimed, claimed, drover.NotFound, drover.Invalid} {
		c := claims[i]
		if want == claimed {
			must(t, c.Err, fmt.Sprintf("claim %d", i))
			continue
		}
		wantKind(t, c.Err, want, fmt.Sprintf("claim %d", i))
		if c.Build.ID != 0 || c.Build.State != "" {
			t.Fatalf("refused claim %d changed its build: %+v", i, c.Build)
		}
	}
	// Claims are made in order of the builder they name, so the one
	// naming none (r3, which takes its request's) comes first.
	want := drover.Build{ID: claims[0].Build.ID, Builder: "linux", Number: 2, RequestID: r1.ID, Worker: "w1", Source: src,
		Reason: "scheduler main", State: drover.BuildRunning, Started: t0.UTC()}
	wantEqual(t, *claims[0].Build, want, "claimed build")
	got, err := s.GetBuild(ctx, claims[0].Build.ID)
	must(t, err, "get build")
	wantEqual(t, *got, want, "stored build")
	if b := claims[2].Build; b.Number != 1 || b.Master != "m1" || b.RequestID != r2.ID {
		t.Fatalf("mac build: %+v", b)
	}
	if b := claims[3].Build; b.Builder != "linux" || b.Number != 1 {
		t.Fatalf("linux build with the builder of its request: %+v", b)
	}
	for _, r := range []*drover.BuildRequest{r1, r2, r3} {
		got, err := s.GetRequest(ctx, r.ID)
		must(t, err, "get request")
		if got.State != drover.RequestClaimed || got.Tries != 1 {
			t.Fatalf("claimed request: %+v", got)
		}
	}
	if got, err := s.GetRequest(ctx, wrong.ID); err != nil || got.State != drover.RequestPending {
		t.Fatalf("request refused for another builder: %+v, %v", got, err)
	}

	must(t, s.ClaimRequests(ctx, nil), "claim nothing")
	wantKind(t, s.ClaimRequests(ctx, []store.Claim{{Request: wrong.ID}}), drover.Invalid, "claim without a build")
}

// testConcurrentClaimRequests races batches over one queue: every request
// is claimed once, and each builder's numbers are 1…n.
func testConcurrentClaimRequests(t *testing.T, s store.Store) {
	ctx := context.Background()
	const (
		builders   = 3
		perBuilder = 10
		claimers   = 4
		batch      = 5
	)
	var reqs []*drover.BuildRequest
	for b := range builders {
		for range perBuilder {
			reqs = append(reqs, &drover.BuildRequest{Builder: fmt.Sprintf("b%d", b)})
		}
	}
	must(t, s.AddRequests(ctx, reqs), "add requests")
	var (
		mu      sync.Mutex
		claimed = map[int64][]*drover.Build{}
	)
	var wg sync.WaitGroup
	for c := range claimers {
		wg.Go(func() {
			order := rand.Perm(len(reqs))
			for len(order) > 0 {
				n := min(batch, len(order))
				var claims []store.Claim
				for _, i := range order[:n] {
					claims = append(claims, store.Claim{Request: reqs[i].ID, Build: &drover.Build{Builder: reqs[i].Builder, Worker: fmt.Sprintf("w%d", c)}})
				}
				order = order[n:]
				if err := s.ClaimRequests(ctx, claims); err != nil {
					t.Errorf("claim batch: %v", err)
					return
				}
				for _, cl := range claims {
					switch {
					case cl.Err == nil:
						mu.Lock()
						claimed[cl.Request] = append(claimed[cl.Request], cl.Build)
						mu.Unlock()
					case drover.KindOf(cl.Err) != drover.Conflict:
						t.Errorf("claim %d: %v", cl.Request, cl.Err)
					}
				}
			}
		})
	}
	wg.Wait()
	numbers := map[string][]int{}
	for _, r := range reqs {
		bs := claimed[r.ID]
		if len(bs) != 1 {
			t.Fatalf("request %d claimed %d times", r.ID, len(bs))
		}
		numbers[r.Builder] = append(numbers[r.Builder], bs[0].Number)
	}
	want := make([]int, perBuilder)
	for i := range want {
		want[i] = i + 1
	}
	for builder, ns := range numbers {
		slices.Sort(ns)
		wantEqual(t, ns, want, "build numbers of "+builder)
	}
}

func testStartBuild(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	props := drover.Properties{"buildnumber": "1", "x": "y"}
	steps := []drover.Step{
		{BuildID: b.ID, Index: 0, Name: "checkout", State: drover.StepRunning, Started: at(time.Second),
			URLs: map[string]string{"docs": "https://example.com/docs"}},
		{BuildID: b.ID, Index: 1, Name: "test", State: drover.StepPending},
	}
	first := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	must(t, s.Builds("").StartBuild(ctx, b.ID, props, steps, first), "start build")
	if first.ID == 0 {
		t.Fatal("StartBuild did not set the log's ID")
	}
	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	wantEqual(t, got.Properties, props, "properties")
	gotSteps, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, gotSteps, steps, "steps")
	logs, err := s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	wantEqual(t, logs, []drover.Log{*first}, "logs")

	// Without a first log: properties and steps only.
	b2 := startBuild(t, s, "linux", "w")
	must(t, s.Builds("").StartBuild(ctx, b2.ID, nil, []drover.Step{{BuildID: b2.ID, Index: 0, Name: "only"}}, nil), "start build without a log")
	logs, err = s.ListLogs(ctx, b2.ID)
	must(t, err, "list logs")
	if len(logs) != 0 {
		t.Fatalf("a start without a log stored %+v", logs)
	}

	// All or nothing: a step already stored fails the whole start.
	b3 := startBuild(t, s, "linux", "w")
	must(t, s.Builds("").AddSteps(ctx, []drover.Step{{BuildID: b3.ID, Index: 0, Name: "there"}}), "add step")
	l3 := &drover.Log{BuildID: b3.ID, Name: "stdio"}
	err = s.Builds("").StartBuild(ctx, b3.ID, drover.Properties{"a": "b"}, []drover.Step{{BuildID: b3.ID, Index: 0, Name: "again"}}, l3)
	wantKind(t, err, drover.Conflict, "start with a duplicate step")
	if l3.ID != 0 {
		t.Fatal("a failed start set the log's ID")
	}
	got, err = s.GetBuild(ctx, b3.ID)
	must(t, err, "get build")
	if got.Properties["a"] != "" {
		t.Fatalf("a failed start stored properties %v", got.Properties)
	}
	logs, err = s.ListLogs(ctx, b3.ID)
	must(t, err, "list logs")
	if len(logs) != 0 {
		t.Fatalf("a failed start stored logs %+v", logs)
	}

	must(t, s.Builds("").FinishBuild(ctx, b3.ID, drover.Success, "", at(time.Hour), false), "finish")
	wantKind(t, s.Builds("").StartBuild(ctx, b3.ID, nil, nil, nil), drover.Conflict, "start a finished build")
	wantKind(t, s.Builds("").StartBuild(ctx, b3.ID+100, nil, nil, nil), drover.NotFound, "start a missing build")
	wantKind(t, s.Builds("").StartBuild(ctx, b2.ID, nil, nil, &drover.Log{BuildID: b2.ID}), drover.Invalid, "start with a log without a name")
}

func testStartAndFinishStep(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	must(t, s.Builds("").AddSteps(ctx, []drover.Step{{BuildID: b.ID, Index: 0, Name: "a"}, {BuildID: b.ID, Index: 1, Name: "b"}}), "add steps")

	st := drover.Step{BuildID: b.ID, Index: 1, Name: "b", State: drover.StepRunning, Started: at(time.Second)}
	l := &drover.Log{BuildID: b.ID, StepIndex: 1, Name: "stdio"}
	must(t, s.Builds("").StartStep(ctx, &st, l), "start step")
	if l.ID == 0 {
		t.Fatal("StartStep did not set the log's ID")
	}
	steps, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, steps[1], st, "started step")
	logs, err := s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	wantEqual(t, logs, []drover.Log{*l}, "logs")

	code := 0
	st.State, st.Result, st.ExitCode, st.Finished = drover.StepFinished, drover.Success, &code, at(2*time.Second)
	l.Bytes, l.Dropped, l.Complete = 123, 4, true
	must(t, s.Builds("").FinishStep(ctx, &st, l), "finish step")
	steps, err = s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, steps[1], st, "finished step")
	got, err := s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	wantEqual(t, *got, *l, "finished log")

	// Either half alone.
	l.Bytes = 456
	must(t, s.Builds("").FinishStep(ctx, nil, l), "finish a log alone")
	got, err = s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	if got.Bytes != 456 {
		t.Fatalf("log alone: %+v", got)
	}
	st0 := drover.Step{BuildID: b.ID, Index: 0, Name: "a", State: drover.StepFinished, Result: drover.Skipped}
	must(t, s.Builds("").FinishStep(ctx, &st0, nil), "finish a step alone")
	must(t, s.Builds("").FinishStep(ctx, nil, nil), "finish nothing")

	// All or nothing.
	missing := drover.Step{BuildID: b.ID, Index: 7, Name: "x", State: drover.StepRunning}
	l2 := &drover.Log{BuildID: b.ID, StepIndex: 7, Name: "stdio"}
	wantKind(t, s.Builds("").StartStep(ctx, &missing, l2), drover.NotFound, "start a missing step")
	if l2.ID != 0 {
		t.Fatal("a failed StartStep set the log's ID")
	}
	logs, err = s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	if len(logs) != 1 {
		t.Fatalf("a failed StartStep stored a log: %+v", logs)
	}
	l.Bytes = 789
	wantKind(t, s.Builds("").FinishStep(ctx, &missing, l), drover.NotFound, "finish a missing step")
	got, err = s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	if got.Bytes != 456 {
		t.Fatalf("a failed FinishStep stored the log: %+v", got)
	}
	wantKind(t, s.Builds("").FinishStep(ctx, nil, &drover.Log{ID: l.ID + 100}), drover.NotFound, "finish a missing log")
	wantKind(t, s.Builds("").StartStep(ctx, &st, &drover.Log{BuildID: b.ID}), drover.Invalid, "start with a log without a name")
	wantKind(t, s.Builds("").StartStep(ctx, nil, l2), drover.Invalid, "start without a step")
}

// testClaimRequestsStart claims with Start: the build's properties, steps
// and first log are stored with the claim, or nothing when the start
// fails.
func testClaimRequestsStart(t *testing.T, s store.Store) {
	ctx := context.Background()
	r1 := addRequest(t, s, "linux", func(r *drover.BuildRequest) { r.Properties = drover.Properties{"x": "1"} })
	r2 := addRequest(t, s, "linux", nil)
	start := func(b *drover.Build) *store.BuildStart {
		props := b.Properties.Clone()
		if props == nil {
			props = drover.Properties{}
		}
		props["buildnumber"] = fmt.Sprint(b.Number)
		return &store.BuildStart{
			Properties: props,
			Steps: []drover.Step{{BuildID: b.ID, Index: 0, Name: "one", State: drover.StepRunning, Started: at(time.Second)},
				{BuildID: b.ID, Index: 1, Name: "two", State: drover.StepPending}},
			First: &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"},
		}
	}
	claims := []store.Claim{
		{Request: r1.ID, Build: &drover.Build{Builder: "linux", Worker: "w"}, Start: start},
		{Request: r2.ID, Build: &drover.Build{Builder: "linux", Worker: "w"}}, // no start
	}
	must(t, s.ClaimRequests(ctx, claims), "claim and start")
	must(t, claims[0].Err, "claim 0")
	st := claims[0].Started
	if st == nil || st.First == nil || st.First.ID == 0 {
		t.Fatalf("claim 0 started %+v", st)
	}
	if claims[1].Started != nil {
		t.Fatalf("claim without a start got %+v", claims[1].Started)
	}
	b := claims[0].Build
	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	wantEqual(t, got.Properties, drover.Properties{"x": "1", "buildnumber": "1"}, "properties stored with the claim")
	steps, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, steps, st.Steps, "steps stored with the claim")
	logs, err := s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	wantEqual(t, logs, []drover.Log{*st.First}, "log stored with the claim")
	steps, err = s.ListSteps(ctx, claims[1].Build.ID)
	must(t, err, "list steps")
	if len(steps) != 0 {
		t.Fatalf("a claim without a start stored steps %+v", steps)
	}

	// A start that fails fails the batch: nothing is claimed.
	r3 := addRequest(t, s, "linux", nil)
	r4 := addRequest(t, s, "mac", nil)
	bad := []store.Claim{
		{Request: r3.ID, Build: &drover.Build{Builder: "linux", Worker: "w"}},
		{Request: r4.ID, Build: &drover.Build{Builder: "mac", Worker: "w"}, Start: func(b *drover.Build) *store.BuildStart {
			return &store.BuildStart{Steps: []drover.Step{{BuildID: b.ID, Index: -1, Name: "bad"}}}
		}},
	}
	wantKind(t, s.ClaimRequests(ctx, bad), drover.Invalid, "claim with a failing start")
	for _, r := range []*drover.BuildRequest{r3, r4} {
		got, err := s.GetRequest(ctx, r.ID)
		must(t, err, "get request")
		if got.State != drover.RequestPending || got.Tries != 0 {
			t.Fatalf("request of a failed batch: %+v", got)
		}
	}
	if bad[0].Build.ID != 0 || bad[0].Started != nil {
		t.Fatalf("a failed batch changed a claim: %+v", bad[0])
	}
}
