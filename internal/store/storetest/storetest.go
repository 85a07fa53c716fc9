// Package storetest is the conformance suite of store.Store. Every engine
// runs the same tests, so that SQLite and PostgreSQL mean the same thing by
// each method: its results, its orderings and its error kinds.
//
// An engine's test calls RunSuite with a function that opens a new, empty
// store and arranges (with t.Cleanup) for it to be closed.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// RunSuite runs every conformance test, each on a fresh store from open.
// The tests run in parallel, so open must be safe to call concurrently.
func RunSuite(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Changes", testChanges},
		{"ChangesDefaultLimit", testChangesDefaultLimit},
		{"AddRequests", testAddRequests},
		{"AddRequestsAtomic", testAddRequestsAtomic},
		{"ListRequestsOrderAndFilter", testListRequests},
		{"ClaimRequest", testClaimRequest},
		{"ClaimRequestErrors", testClaimRequestErrors},
		{"ClaimRequests", testClaimRequests},
		{"ConcurrentClaimRequests", testConcurrentClaimRequests},
		{"ClaimRequestsStart", testClaimRequestsStart},
		{"StartBuild", testStartBuild},
		{"StartAndFinishStep", testStartAndFinishStep},
		{"CancelRequest", testCancelRequest},
		{"GetBuilds", testGetBuilds},
		{"ListBuilds", testListBuilds},
		{"ListBuildsDefaultLimit", testListBuildsDefaultLimit},
		{"SetBuildProperties", testSetBuildProperties},
		{"FinishBuild", testFinishBuild},
		{"FinishBuildRequeue", testFinishBuildRequeue},
		{"FinishBuildErrors", testFinishBuildErrors},
		{"Steps", testSteps},
		{"StepsErrors", testStepsErrors},
		{"StepURLs", testStepURLs},
		{"BuildMaster", testBuildMaster},
		{"Masters", testMasters},
		{"AdoptBuild", testAdoptBuild},
		{"ConcurrentAdoptBuild", testConcurrentAdoptBuild},
		{"Fencing", testFencing},
		{"AbandonBuild", testAbandonBuild},
		{"MarkDisconnected", testMarkDisconnected},
		{"NotifyPayload", testNotifyPayload},
		{"ListenStops", testListenStops},
		{"Logs", testLogs},
		{"LogProgress", testLogProgress},
		{"ExpiredAndDeleteLogs", testExpiredAndDeleteLogs},
		{"Artifacts", testArtifacts},
		{"Workers", testWorkers},
		{"AvailabilityOverride", testAvailabilityOverride},
		{"Approval", testApproval},
		{"EnrollPending", testEnrollPending},
		{"Tokens", testTokens},
		{"UseToken", testUseToken},
		{"Enroll", testEnroll},
		{"EnrollRefused", testEnrollRefused},
		{"ConcurrentClaims", testConcurrentClaims},
		{"ConcurrentEnroll", testConcurrentEnroll},
		{"ConcurrentUseToken", testConcurrentUseToken},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// t0 is a time with a zone and nanoseconds, to show that the store keeps
// both the instant and its precision (it returns UTC).
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))

func at(d time.Duration) time.Time { return t0.Add(d).UTC() }

// wantKind fails t unless err is an error of kind k.
func wantKind(t *testing.T, err error, k drover.Kind, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %s", what, k)
	}
	if got := drover.KindOf(err); got != k {
		t.Fatalf("%s: got %v (kind %s), want kind %s", what, err, got, k)
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantEqual[T any](t *testing.T, got, want T, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// addRequest queues one request for builder and returns it.
func addRequest(t *testing.T, s store.Store, builder string, mod func(*drover.BuildRequest)) *drover.BuildRequest {
	t.Helper()
	r := &drover.BuildRequest{Builder: builder, Reason: "test", Submitted: at(0)}
	if mod != nil {
		mod(r)
	}
	must(t, s.AddRequests(context.Background(), []*drover.BuildRequest{r}), "add request")
	return r
}

// startBuild queues and claims a request for builder on worker.
func startBuild(t *testing.T, s store.Store, builder, worker string) *drover.Build {
	t.Helper()
	r := addRequest(t, s, builder, nil)
	b := &drover.Build{Worker: worker, Started: at(time.Minute)}
	must(t, s.ClaimRequest(context.Background(), r.ID, b), "claim")
	return b
}

func testChanges(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := &drover.Change{
		Repository: "https://example.org/proj.git", Branch: "main", Revision: "abc123",
		Author: "Ada <ada@example.org>", Comments: "fix the frobnicator\n\nlonger text",
		Files: []string{"a.c", "dir/b.h"}, Category: "push",
		Properties: drover.Properties{"event": "push"}, When: t0,
	}
	must(t, s.AddChange(ctx, c), "add change")
	if c.ID == 0 {
		t.Fatal("AddChange did not set ID")
	}
	got, err := s.GetChange(ctx, c.ID)
	must(t, err, "get change")
	want := *c
	want.When = t0.UTC()
	wantEqual(t, *got, want, "change round trip")

	bare := &drover.Change{Repository: "r", Revision: "def"}
	before := time.Now()
	must(t, s.AddChange(ctx, bare), "add bare change")
	got, err = s.GetChange(ctx, bare.ID)
	must(t, err, "get bare change")
	if got.When.Before(before.Add(-time.Second)) || got.Files != nil || got.Properties != nil {
		t.Fatalf("bare change: got %+v, want When≈now and no files or properties", got)
	}

	third := &drover.Change{Repository: "r", Revision: "ghi", When: t0}
	must(t, s.AddChange(ctx, third), "add third change")
	list, err := s.ListChanges(ctx, drover.ChangeFilter{})
	must(t, err, "list changes")
	wantEqual(t, changeIDs(list), []int64{third.ID, bare.ID, c.ID}, "changes newest first")
	list, err = s.ListChanges(ctx, drover.ChangeFilter{Limit: 2})
	must(t, err, "list changes limit 2")
	wantEqual(t, changeIDs(list), []int64{third.ID, bare.ID}, "limited changes")

	_, err = s.GetChange(ctx, third.ID+100)
	wantKind(t, err, drover.NotFound, "get missing change")
}

func changeIDs(cs []drover.Change) []int64 {
	var ids []int64
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

func testChangesDefaultLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := range 105 {
		must(t, s.AddChange(ctx, &drover.Change{Revision: fmt.Sprint(i), When: at(time.Duration(i))}), "add change")
	}
	list, err := s.ListChanges(ctx, drover.ChangeFilter{})
	must(t, err, "list changes")
	if len(list) != 100 || list[0].Revision != "104" {
		t.Fatalf("got %d changes starting at %q, want the 100 newest starting at 104", len(list), list[0].Revision)
	}
}

func testAddRequests(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.AddRequests(ctx, nil), "add no requests")

	full := &drover.BuildRequest{
		Builder:    "linux",
		Source:     drover.SourceStamp{Repository: "https://example.org/p.git", Branch: "main", Revision: "abc"},
		Properties: drover.Properties{"owner": "ada", "flag": ""},
		Priority:   5, Reason: "forced by ada", ChangeIDs: []int64{3, 1, 2},
		Submitted: t0,
		// The store decides these; what the caller passes is ignored.
		State: drover.RequestFinished, Result: drover.Failure, Tries: 7,
	}
	bare := &drover.BuildRequest{Builder: "mac"}
	before := time.Now()
	must(t, s.AddRequests(ctx, []*drover.BuildRequest{full, bare}), "add requests")
	if full.ID == 0 || bare.ID == 0 || full.ID == bare.ID {
		t.Fatalf("IDs not set: %d, %d", full.ID, bare.ID)
	}
	if full.State != drover.RequestPending || full.Result != drover.ResultNone || full.Tries != 0 {
		t.Fatalf("request not reset to pending: %+v", full)
	}
	if !full.Submitted.Equal(t0) {
		t.Fatalf("Submitted changed to %v", full.Submitted)
	}
	if bare.Submitted.Before(before.Add(-time.Second)) || bare.State != drover.RequestPending {
		t.Fatalf("bare request: %+v, want pending and submitted now", bare)
	}

	got, err := s.GetRequest(ctx, full.ID)
	must(t, err, "get request")
	want := *full
	want.Submitted = t0.UTC()
	wantEqual(t, *got, want, "request round trip")

	got, err = s.GetRequest(ctx, bare.ID)
	must(t, err, "get bare request")
	if got.Properties != nil || got.ChangeIDs != nil || !got.Submitted.Equal(bare.Submitted) {
		t.Fatalf("bare request round trip: %+v", got)
	}

	_, err = s.GetRequest(ctx, bare.ID+100)
	wantKind(t, err, drover.NotFound, "get missing request")
}

func testAddRequestsAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	good := &drover.BuildRequest{Builder: "linux"}
	err := s.AddRequests(ctx, []*drover.BuildRequest{good, {Builder: ""}})
	wantKind(t, err, drover.Invalid, "request without builder")
	if good.ID != 0 {
		t.Fatalf("a failed AddRequests set ID %d", good.ID)
	}
	list, err := s.ListRequests(ctx, drover.RequestFilter{})
	must(t, err, "list requests")
	if len(list) != 0 {
		t.Fatalf("a failed AddRequests stored %d requests", len(list))
	}
}

func testListRequests(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Added out of queue order on purpose.
	reqs := []*drover.BuildRequest{
		{Builder: "a", Priority: 0, Submitted: at(2 * time.Second)},  // 0
		{Builder: "b", Priority: 10, Submitted: at(5 * time.Second)}, // 1
		{Builder: "a", Priority: 0, Submitted: at(1 * time.Second)},  // 2
		{Builder: "b", Priority: 0, Submitted: at(1 * time.Second)},  // 3: ties with 2, later ID
		{Builder: "a", Priority: -1, Submitted: at(0)},               // 4
		{Builder: "a", Priority: 10, Submitted: at(9 * time.Second)}, // 5
	}
	must(t, s.AddRequests(ctx, reqs), "add requests")
	ids := func(list []drover.BuildRequest) []int64 {
		var out []int64
		for _, r := range list {
			out = append(out, r.ID)
		}
		return out
	}
	id := func(is ...int) []int64 {
		var out []int64
		for _, i := range is {
			out = append(out, reqs[i].ID)
		}
		return out
	}
	must(t, s.CancelRequest(ctx, reqs[0].ID, "not needed"), "cancel")

	tests := []struct {
		name string
		f    drover.RequestFilter
		want []int64
	}{
		{"all", drover.RequestFilter{}, id(1, 5, 2, 3, 0, 4)},
		{"pending", drover.RequestFilter{State: drover.RequestPending}, id(1, 5, 2, 3, 4)},
		{"cancelled", drover.RequestFilter{State: drover.RequestCancelled}, id(0)},
		{"builder", drover.RequestFilter{Builder: "a"}, id(5, 2, 0, 4)},
		{"builder and state", drover.RequestFilter{Builder: "a", State: drover.RequestPending}, id(5, 2, 4)},
		{"limit", drover.RequestFilter{State: drover.RequestPending, Limit: 2}, id(1, 5)},
		{"none", drover.RequestFilter{Builder: "nobody"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := s.ListRequests(ctx, tc.f)
			must(t, err, "list requests")
			wantEqual(t, ids(list), tc.want, "request IDs in queue order")
		})
	}
}

func testClaimRequest(t *testing.T, s store.Store) {
	ctx := context.Background()
	src := drover.SourceStamp{Repository: "r", Branch: "main", Revision: "abc"}
	r1 := addRequest(t, s, "linux", func(r *drover.BuildRequest) {
		r.Source, r.Properties, r.Reason = src, drover.Properties{"x": "1"}, "scheduler main"
	})
	b1 := &drover.Build{Worker: "w1", WhyWorker: "eager, least loaded", Started: t0}
	must(t, s.ClaimRequest(ctx, r1.ID, b1), "claim")
	want := drover.Build{
		ID: b1.ID, Builder: "linux", Number: 1, RequestID: r1.ID, Worker: "w1", Source: src,
		Properties: drover.Properties{"x": "1"}, Reason: "scheduler main",
		WhyWorker: "eager, least loaded", State: drover.BuildRunning, Started: t0.UTC(),
	}
	if b1.ID == 0 {
		t.Fatal("ClaimRequest did not set the build's ID")
	}
	wantEqual(t, *b1, want, "claimed build")
	got, err := s.GetBuild(ctx, b1.ID)
	must(t, err, "get build")
	wantEqual(t, *got, want, "stored build")

	req, err := s.GetRequest(ctx, r1.ID)
	must(t, err, "get request")
	if req.State != drover.RequestClaimed || req.Tries != 1 || req.Result != drover.ResultNone {
		t.Fatalf("claimed request: %+v", req)
	}

	// A build that brings its own source and properties keeps them.
	r2 := addRequest(t, s, "linux", func(r *drover.BuildRequest) {
		r.Source, r.Properties = src, drover.Properties{"x": "1"}
	})
	own := drover.SourceStamp{Revision: "def"}
	b2 := &drover.Build{Builder: "linux", Worker: "w2", Source: own, Properties: drover.Properties{"y": "2"}, Reason: "mine"}
	must(t, s.ClaimRequest(ctx, r2.ID, b2), "claim with own source")
	if b2.Number != 2 || b2.Source != own || !reflect.DeepEqual(b2.Properties, drover.Properties{"y": "2"}) || b2.Reason != "mine" {
		t.Fatalf("second build: %+v", b2)
	}
	if b2.Started.IsZero() {
		t.Fatal("a zero Started was not filled in")
	}

	// Numbers count per builder.
	b3 := startBuild(t, s, "mac", "w3")
	if b3.Number != 1 {
		t.Fatalf("first mac build has number %d, want 1", b3.Number)
	}
	b4 := startBuild(t, s, "linux", "w1")
	if b4.Number != 3 {
		t.Fatalf("third linux build has number %d, want 3", b4.Number)
	}
}

func testClaimRequestErrors(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := addRequest(t, s, "linux", nil)

	b := &drover.Build{Builder: "mac", Worker: "w"}
	wantKind(t, s.ClaimRequest(ctx, r.ID, b), drover.Invalid, "claim for another builder")
	if b.ID != 0 || b.Number != 0 {
		t.Fatalf("a failed claim changed the build: %+v", b)
	}
	wantKind(t, s.ClaimRequest(ctx, r.ID, nil), drover.Invalid, "claim with no build")
	wantKind(t, s.ClaimRequest(ctx, r.ID+100, &drover.Build{Worker: "w"}), drover.NotFound, "claim missing request")

	req, err := s.GetRequest(ctx, r.ID)
	must(t, err, "get request")
	if req.State != drover.RequestPending || req.Tries != 0 {
		t.Fatalf("failed claims changed the request: %+v", req)
	}

	must(t, s.ClaimRequest(ctx, r.ID, &drover.Build{Worker: "w"}), "claim")
	wantKind(t, s.ClaimRequest(ctx, r.ID, &drover.Build{Worker: "w"}), drover.Conflict, "claim twice")

	cancelled := addRequest(t, s, "linux", nil)
	must(t, s.CancelRequest(ctx, cancelled.ID, "no"), "cancel")
	wantKind(t, s.ClaimRequest(ctx, cancelled.ID, &drover.Build{Worker: "w"}), drover.Conflict, "claim cancelled")

	builds, err := s.ListBuilds(ctx, drover.BuildFilter{})
	must(t, err, "list builds")
	if len(builds) != 1 {
		t.Fatalf("got %d builds, want only the one successful claim's", len(builds))
	}
}

func testCancelRequest(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := addRequest(t, s, "linux", nil)
	must(t, s.CancelRequest(ctx, r.ID, "superseded"), "cancel")
	got, err := s.GetRequest(ctx, r.ID)
	must(t, err, "get request")
	if got.State != drover.RequestCancelled || got.Result != drover.Cancelled {
		t.Fatalf("cancelled request: %+v", got)
	}
	wantKind(t, s.CancelRequest(ctx, r.ID, "again"), drover.Conflict, "cancel twice")
	wantKind(t, s.CancelRequest(ctx, r.ID+100, "x"), drover.NotFound, "cancel missing")

	claimed := addRequest(t, s, "linux", nil)
	must(t, s.ClaimRequest(ctx, claimed.ID, &drover.Build{Worker: "w"}), "claim")
	wantKind(t, s.CancelRequest(ctx, claimed.ID, "x"), drover.Conflict, "cancel claimed")
	got, err = s.GetRequest(ctx, claimed.ID)
	must(t, err, "get claimed")
	if got.State != drover.RequestClaimed {
		t.Fatalf("a refused cancel changed the request: %+v", got)
	}
}

func testGetBuilds(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w1")
	got, err := s.GetBuildByNumber(ctx, "linux", b.Number)
	must(t, err, "get by number")
	wantEqual(t, *got, *b, "build by number")

	_, err = s.GetBuildByNumber(ctx, "linux", b.Number+1)
	wantKind(t, err, drover.NotFound, "missing number")
	_, err = s.GetBuildByNumber(ctx, "mac", b.Number)
	wantKind(t, err, drover.NotFound, "missing builder")
	_, err = s.GetBuild(ctx, b.ID+100)
	wantKind(t, err, drover.NotFound, "missing build")
}

func testListBuilds(t *testing.T, s store.Store) {
	ctx := context.Background()
	var bs []*drover.Build
	for _, spec := range []struct{ builder, worker string }{
		{"linux", "w1"}, {"mac", "w2"}, {"linux", "w2"}, {"linux", "w1"}, {"mac", "w1"},
	} {
		bs = append(bs, startBuild(t, s, spec.builder, spec.worker))
	}
	must(t, s.Builds("").FinishBuild(ctx, bs[0].ID, drover.Success, "", at(time.Hour), false), "finish")
	ids := func(is ...int) []int64 {
		var out []int64
		for _, i := range is {
			out = append(out, bs[i].ID)
		}
		return out
	}
	tests := []struct {
		name string
		f    drover.BuildFilter
		want []int64
	}{
		{"all newest first", drover.BuildFilter{}, ids(4, 3, 2, 1, 0)},
		{"builder", drover.BuildFilter{Builder: "linux"}, ids(3, 2, 0)},
		{"worker", drover.BuildFilter{Worker: "w1"}, ids(4, 3, 0)},
		{"builder and worker", drover.BuildFilter{Builder: "linux", Worker: "w2"}, ids(2)},
		{"running", drover.BuildFilter{State: drover.BuildRunning}, ids(4, 3, 2, 1)},
		{"finished", drover.BuildFilter{State: drover.BuildFinished}, ids(0)},
		{"request", drover.BuildFilter{RequestID: bs[1].RequestID}, ids(1)},
		{"page", drover.BuildFilter{BeforeID: bs[3].ID, Limit: 2}, ids(2, 1)},
		{"limit", drover.BuildFilter{Limit: 1}, ids(4)},
		{"none", drover.BuildFilter{Worker: "nobody"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := s.ListBuilds(ctx, tc.f)
			must(t, err, "list builds")
			var got []int64
			for _, b := range list {
				got = append(got, b.ID)
			}
			wantEqual(t, got, tc.want, "build IDs")
		})
	}
}

func testListBuildsDefaultLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	reqs := make([]*drover.BuildRequest, 101)
	for i := range reqs {
		reqs[i] = &drover.BuildRequest{Builder: "linux"}
	}
	must(t, s.AddRequests(ctx, reqs), "add requests")
	for _, r := range reqs {
		must(t, s.ClaimRequest(ctx, r.ID, &drover.Build{Worker: "w"}), "claim")
	}
	list, err := s.ListBuilds(ctx, drover.BuildFilter{})
	must(t, err, "list builds")
	if len(list) != 100 || list[0].Number != 101 || list[99].Number != 2 {
		t.Fatalf("got %d builds (#%d…#%d), want the 100 newest, #101…#2", len(list), list[0].Number, list[len(list)-1].Number)
	}
}

func testSetBuildProperties(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	props := drover.Properties{"got_revision": "abc", "buildnumber": "1"}
	must(t, s.Builds("").SetBuildProperties(ctx, b.ID, props), "set properties")
	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	wantEqual(t, got.Properties, props, "properties")

	must(t, s.Builds("").SetBuildProperties(ctx, b.ID, drover.Properties{"only": "this"}), "replace properties")
	got, err = s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	wantEqual(t, got.Properties, drover.Properties{"only": "this"}, "replaced properties")

	wantKind(t, s.Builds("").SetBuildProperties(ctx, b.ID+100, props), drover.NotFound, "missing build")
	must(t, s.Builds("").FinishBuild(ctx, b.ID, drover.Success, "", at(time.Hour), false), "finish")
	wantKind(t, s.Builds("").SetBuildProperties(ctx, b.ID, props), drover.Conflict, "finished build")
}

func testFinishBuild(t *testing.T, s store.Store) {
	ctx := context.Background()
	tests := []struct {
		result    drover.Result
		wantState drover.RequestState
	}{
		{drover.Success, drover.RequestFinished},
		{drover.Warnings, drover.RequestFinished},
		{drover.Failure, drover.RequestFinished},
		{drover.Exception, drover.RequestFinished},
		{drover.Cancelled, drover.RequestCancelled},
	}
	for _, tc := range tests {
		t.Run(string(tc.result), func(t *testing.T) {
			b := startBuild(t, s, "linux", "w")
			end := at(time.Hour)
			must(t, s.Builds("").FinishBuild(ctx, b.ID, tc.result, "step test failed", end, false), "finish")
			got, err := s.GetBuild(ctx, b.ID)
			must(t, err, "get build")
			if got.State != drover.BuildFinished || got.Result != tc.result || got.Summary != "step test failed" || !got.Finished.Equal(end) {
				t.Fatalf("finished build: %+v", got)
			}
			req, err := s.GetRequest(ctx, b.RequestID)
			must(t, err, "get request")
			if req.State != tc.wantState || req.Result != tc.result || req.Tries != 1 {
				t.Fatalf("request of finished build: %+v, want state %s result %s", req, tc.wantState, tc.result)
			}
		})
	}

	t.Run("zero time is now", func(t *testing.T) {
		b := startBuild(t, s, "mac", "w")
		before := time.Now()
		must(t, s.Builds("").FinishBuild(ctx, b.ID, drover.Success, "", time.Time{}, false), "finish")
		got, err := s.GetBuild(ctx, b.ID)
		must(t, err, "get build")
		if got.Finished.Before(before.Add(-time.Second)) {
			t.Fatalf("Finished = %v, want about now", got.Finished)
		}
	})
}

func testFinishBuildRequeue(t *testing.T, s store.Store) {
	ctx := context.Background()
	b1 := startBuild(t, s, "linux", "w1")
	must(t, s.Builds("").FinishBuild(ctx, b1.ID, drover.Retry, "worker w1 lost", at(time.Hour), true), "finish with requeue")

	got, err := s.GetBuild(ctx, b1.ID)
	must(t, err, "get build")
	if got.State != drover.BuildFinished || got.Result != drover.Retry {
		t.Fatalf("requeued build: %+v", got)
	}
	req, err := s.GetRequest(ctx, b1.RequestID)
	must(t, err, "get request")
	if req.State != drover.RequestPending || req.Result != drover.ResultNone || req.Tries != 1 {
		t.Fatalf("requeued request: %+v", req)
	}

	b2 := &drover.Build{Worker: "w2"}
	must(t, s.ClaimRequest(ctx, req.ID, b2), "claim again")
	if b2.Number != b1.Number+1 || b2.ID == b1.ID || b2.RequestID != req.ID {
		t.Fatalf("second build: %+v, want number %d for request %d", b2, b1.Number+1, req.ID)
	}
	req, err = s.GetRequest(ctx, req.ID)
	must(t, err, "get request")
	if req.State != drover.RequestClaimed || req.Tries != 2 {
		t.Fatalf("request claimed again: %+v, want claimed with 2 tries", req)
	}
	builds, err := s.ListBuilds(ctx, drover.BuildFilter{RequestID: req.ID})
	must(t, err, "list builds of request")
	if len(builds) != 2 {
		t.Fatalf("request has %d builds, want 2", len(builds))
	}
}

func testFinishBuildErrors(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	wantKind(t, s.Builds("").FinishBuild(ctx, b.ID, drover.ResultNone, "", t0, false), drover.Invalid, "no result")
	wantKind(t, s.Builds("").FinishBuild(ctx, b.ID, "splendid", "", t0, false), drover.Invalid, "unknown result")
	wantKind(t, s.Builds("").FinishBuild(ctx, b.ID+100, drover.Success, "", t0, false), drover.NotFound, "missing build")

	must(t, s.Builds("").FinishBuild(ctx, b.ID, drover.Failure, "compile", at(time.Hour), false), "finish")
	wantKind(t, s.Builds("").FinishBuild(ctx, b.ID, drover.Success, "", at(2*time.Hour), false), drover.Conflict, "finish twice")
	wantKind(t, s.Builds("").FinishBuild(ctx, b.ID, drover.Retry, "", at(2*time.Hour), true), drover.Conflict, "requeue finished")

	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	if got.Result != drover.Failure || got.Summary != "compile" || !got.Finished.Equal(at(time.Hour)) {
		t.Fatalf("a refused finish changed the build: %+v", got)
	}
	req, err := s.GetRequest(ctx, b.RequestID)
	must(t, err, "get request")
	if req.State != drover.RequestFinished || req.Result != drover.Failure {
		t.Fatalf("a refused finish changed the request: %+v", req)
	}
}

func testSteps(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	other := startBuild(t, s, "linux", "w")
	zero := 0
	steps := []drover.Step{
		{BuildID: b.ID, Index: 2, Name: "test", State: drover.StepPending},
		{BuildID: b.ID, Index: 0, Name: "checkout", State: drover.StepFinished, Result: drover.Success,
			ExitCode: &zero, Started: at(time.Second), Finished: at(2 * time.Second)},
		{BuildID: b.ID, Index: 1, Name: "compile"},
		{BuildID: other.ID, Index: 0, Name: "checkout"},
	}
	must(t, s.Builds("").AddSteps(ctx, steps), "add steps")
	must(t, s.Builds("").AddSteps(ctx, nil), "add no steps")

	got, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	want := []drover.Step{steps[1], steps[2], steps[0]}
	want[1].State = drover.StepPending // an empty state is stored as pending
	wantEqual(t, got, want, "steps in index order")

	code := 2
	up := drover.Step{BuildID: b.ID, Index: 1, Name: "compile", State: drover.StepFinished, Result: drover.Failure,
		Summary: "2 errors", ExitCode: &code, Started: at(3 * time.Second), Finished: at(4 * time.Second)}
	must(t, s.Builds("").UpdateStep(ctx, &up), "update step")
	got, err = s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, got[1], up, "updated step")
	wantEqual(t, got[0], steps[1], "untouched step")

	// Clearing an exit code and times is stored too.
	up.ExitCode, up.Finished = nil, time.Time{}
	must(t, s.Builds("").UpdateStep(ctx, &up), "update step again")
	got, err = s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	wantEqual(t, got[1], up, "step with cleared fields")

	got, err = s.ListSteps(ctx, other.ID)
	must(t, err, "list other steps")
	if len(got) != 1 {
		t.Fatalf("other build has %d steps, want 1", len(got))
	}
	got, err = s.ListSteps(ctx, b.ID+100)
	must(t, err, "list steps of missing build")
	if len(got) != 0 {
		t.Fatalf("missing build has %d steps", len(got))
	}
}

func testStepsErrors(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	must(t, s.Builds("").AddSteps(ctx, []drover.Step{{BuildID: b.ID, Index: 0, Name: "checkout"}}), "add step")

	err := s.Builds("").AddSteps(ctx, []drover.Step{
		{BuildID: b.ID, Index: 1, Name: "compile"},
		{BuildID: b.ID, Index: 0, Name: "again"},
	})
	wantKind(t, err, drover.Conflict, "duplicate step")
	got, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	if len(got) != 1 || got[0].Name != "checkout" {
		t.Fatalf("a failed AddSteps left %+v", got)
	}

	wantKind(t, s.Builds("").AddSteps(ctx, []drover.Step{{BuildID: b.ID + 100, Index: 0}}), drover.NotFound, "steps of missing build")
	wantKind(t, s.Builds("").AddSteps(ctx, []drover.Step{{BuildID: b.ID, Index: -1}}), drover.Invalid, "negative index")
	wantKind(t, s.Builds("").UpdateStep(ctx, &drover.Step{BuildID: b.ID, Index: 5}), drover.NotFound, "update missing step")
	wantKind(t, s.Builds("").UpdateStep(ctx, &drover.Step{BuildID: b.ID + 100, Index: 0}), drover.NotFound, "update step of missing build")
}

func testLogs(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	other := startBuild(t, s, "linux", "w")
	logs := []*drover.Log{
		{BuildID: b.ID, StepIndex: 1, Name: "stdio"},
		{BuildID: b.ID, StepIndex: 0, Name: "stdio"},
		{BuildID: b.ID, StepIndex: 1, Name: "config.log", Bytes: 10},
		{BuildID: other.ID, StepIndex: 0, Name: "stdio"},
	}
	for _, l := range logs {
		must(t, s.Builds("").AddLog(ctx, l), "add log")
		if l.ID == 0 {
			t.Fatal("AddLog did not set ID")
		}
	}
	got, err := s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	wantEqual(t, got, []drover.Log{*logs[1], *logs[0], *logs[2]}, "logs by step then ID")

	l := *logs[0]
	l.Bytes, l.Dropped, l.Complete = 1<<40, 12345, true
	l.Name, l.StepIndex = "ignored", 9 // UpdateLog stores only Bytes, Dropped and Complete
	must(t, s.Builds("").UpdateLog(ctx, &l), "update log")
	one, err := s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	want := *logs[0]
	want.Bytes, want.Dropped, want.Complete = 1<<40, 12345, true
	wantEqual(t, *one, want, "updated log")

	_, err = s.GetLog(ctx, logs[3].ID+100)
	wantKind(t, err, drover.NotFound, "get missing log")
	wantKind(t, s.Builds("").UpdateLog(ctx, &drover.Log{ID: logs[3].ID + 100}), drover.NotFound, "update missing log")
	wantKind(t, s.Builds("").AddLog(ctx, &drover.Log{BuildID: other.ID + 100, Name: "stdio"}), drover.NotFound, "log of missing build")
	wantKind(t, s.Builds("").AddLog(ctx, &drover.Log{BuildID: b.ID}), drover.Invalid, "log without a name")
}

func testExpiredAndDeleteLogs(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := startBuild(t, s, "linux", "w")
	recent := startBuild(t, s, "linux", "w")
	running := startBuild(t, s, "linux", "w")
	must(t, s.Builds("").FinishBuild(ctx, old.ID, drover.Success, "", at(time.Hour), false), "finish old")
	must(t, s.Builds("").FinishBuild(ctx, recent.ID, drover.Success, "", at(3*time.Hour), false), "finish recent")

	var oldLogs []int64
	for _, b := range []*drover.Build{old, recent, running} {
		for step := range 3 {
			l := &drover.Log{BuildID: b.ID, StepIndex: step, Name: "stdio"}
			must(t, s.Builds("").AddLog(ctx, l), "add log")
			if b == old {
				oldLogs = append(oldLogs, l.ID)
			}
		}
	}
	logIDs := func(ls []drover.Log) []int64 {
		var out []int64
		for _, l := range ls {
			out = append(out, l.ID)
		}
		return out
	}

	exp, err := s.ExpiredLogs(ctx, at(2*time.Hour), 0)
	must(t, err, "expired logs")
	wantEqual(t, logIDs(exp), oldLogs, "logs of builds finished before the horizon")
	exp, err = s.ExpiredLogs(ctx, at(2*time.Hour), 2)
	must(t, err, "expired logs limit 2")
	wantEqual(t, logIDs(exp), oldLogs[:2], "limited expired logs")
	exp, err = s.ExpiredLogs(ctx, at(time.Hour), 10)
	must(t, err, "expired logs at the finish time")
	if len(exp) != 0 {
		t.Fatalf("logs of a build finished exactly at the horizon are expired: %v", logIDs(exp))
	}

	// Unknown IDs are ignored, and a long list is fine.
	ids := append(slices.Clone(oldLogs[:2]), 1e9)
	for i := range 1200 {
		ids = append(ids, int64(2e9+i))
	}
	must(t, s.DeleteLogs(ctx, ids), "delete logs")
	must(t, s.DeleteLogs(ctx, nil), "delete no logs")
	exp, err = s.ExpiredLogs(ctx, at(2*time.Hour), 0)
	must(t, err, "expired logs after delete")
	wantEqual(t, logIDs(exp), oldLogs[2:], "logs left")
	_, err = s.GetLog(ctx, oldLogs[0])
	wantKind(t, err, drover.NotFound, "deleted log")
	left, err := s.ListLogs(ctx, running.ID)
	must(t, err, "list logs of running build")
	if len(left) != 3 {
		t.Fatalf("running build has %d logs, want 3", len(left))
	}
}

func testWorkers(t *testing.T, s store.Store) {
	ctx := context.Background()
	w := &drover.Worker{
		Name:   "fbsd-1",
		Facts:  drover.Facts{"os": {"freebsd", "freebsd-14"}, "cpus": {"8"}},
		Labels: drover.Properties{"owner": "ada"}, Version: "1.2.3", OS: "freebsd", Arch: "amd64",
		Availability: drover.Reluctant, Connected: true,
		FirstSeen: t0, LastSeen: at(time.Minute), ConnectedAt: at(time.Minute), Address: "192.0.2.7:51234",
		Master: "m1",
	}
	must(t, s.UpsertWorker(ctx, w), "insert worker")
	got, err := s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	want := *w
	want.FirstSeen = t0.UTC()
	wantEqual(t, *got, want, "worker round trip")

	// An update keeps the first FirstSeen, whatever the caller says.
	up := &drover.Worker{Name: "fbsd-1", Version: "1.3.0", FirstSeen: at(time.Hour), LastSeen: at(time.Hour)}
	must(t, s.UpsertWorker(ctx, up), "update worker")
	if !up.FirstSeen.Equal(t0) || up.Availability != drover.Eager {
		t.Fatalf("upsert did not report the kept FirstSeen and default availability: %+v", up)
	}
	got, err = s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get updated worker")
	want = drover.Worker{Name: "fbsd-1", Version: "1.3.0", Availability: drover.Eager,
		FirstSeen: t0.UTC(), LastSeen: at(time.Hour), Approval: drover.ApprovalApproved}
	wantEqual(t, *got, want, "updated worker")

	before := time.Now()
	fresh := &drover.Worker{Name: "arm-1", Connected: true, ConnectedAt: t0}
	must(t, s.UpsertWorker(ctx, fresh), "insert fresh worker")
	if fresh.FirstSeen.Before(before.Add(-time.Second)) {
		t.Fatalf("a new worker's zero FirstSeen became %v, want now", fresh.FirstSeen)
	}
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "mac-1", Connected: true, ConnectedAt: t0, FirstSeen: t0}), "insert mac")

	list, err := s.ListWorkers(ctx)
	must(t, err, "list workers")
	var names []string
	for _, w := range list {
		names = append(names, w.Name)
	}
	wantEqual(t, names, []string{"arm-1", "fbsd-1", "mac-1"}, "workers by name")

	must(t, s.MarkDisconnected(ctx, ""), "mark disconnected")
	list, err = s.ListWorkers(ctx)
	must(t, err, "list workers")
	for _, w := range list {
		if w.Connected || !w.ConnectedAt.IsZero() {
			t.Fatalf("worker %s still connected: %+v", w.Name, w)
		}
	}
	if !list[2].LastSeen.IsZero() || !list[2].FirstSeen.Equal(t0) {
		t.Fatalf("MarkDisconnected changed more than the connection: %+v", list[2])
	}

	_, err = s.GetWorker(ctx, "nobody")
	wantKind(t, err, drover.NotFound, "missing worker")
	wantKind(t, s.UpsertWorker(ctx, &drover.Worker{}), drover.Invalid, "worker without a name")
}

// testAvailabilityOverride shows that an operator's override is stored
// beside the worker's own availability, survives the worker's upserts
// (reconnections), and is cleared only by SetAvailabilityOverride.
func testAvailabilityOverride(t *testing.T, s store.Store) {
	ctx := context.Background()
	w := &drover.Worker{Name: "fbsd-1", Availability: drover.Eager, AvailabilityReason: "worker says so",
		Connected: true, FirstSeen: t0}
	must(t, s.UpsertWorker(ctx, w), "insert worker")
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "mac-1", FirstSeen: t0}), "insert other worker")
	got, err := s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if got.Override != nil || got.AvailabilityReason != "worker says so" {
		t.Fatalf("new worker: %+v, want its own reason and no override", got)
	}

	over := drover.AvailabilityOverride{Availability: drover.Draining, Reason: "disk replacement",
		By: "operator api1", At: t0}
	must(t, s.SetAvailabilityOverride(ctx, "fbsd-1", &over), "set override")
	wantOver := over
	wantOver.At = t0.UTC()
	got, err = s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if got.Override == nil {
		t.Fatalf("worker after override: %+v, want an override", got)
	}
	wantEqual(t, *got.Override, wantOver, "override read back")
	if a, why, by := got.Effective(); a != drover.Draining || why != "disk replacement" || by != "operator api1" {
		t.Fatalf("effective availability %s (%q by %q), want the override", a, why, by)
	}
	list, err := s.ListWorkers(ctx)
	must(t, err, "list workers")
	if len(list) != 2 || list[0].Override == nil || list[1].Override != nil {
		t.Fatalf("listed workers: %+v, want only fbsd-1 overridden", list)
	}
	wantEqual(t, *list[0].Override, wantOver, "listed override")

	// The worker reconnects and reports its own availability: the
	// operator's word stands, and the worker's is stored beside it.
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "fbsd-1", Availability: drover.Reluctant,
		AvailabilityReason: "load 7.2", Connected: true}), "upsert overridden worker")
	got, err = s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if got.Override == nil || got.Availability != drover.Reluctant || got.AvailabilityReason != "load 7.2" {
		t.Fatalf("worker after its upsert: %+v, want its own availability updated and the override kept", got)
	}
	wantEqual(t, *got.Override, wantOver, "override after upsert")

	// A second override replaces the first; a zero At becomes now.
	before := time.Now()
	must(t, s.SetAvailabilityOverride(ctx, "fbsd-1", &drover.AvailabilityOverride{
		Availability: drover.Offline, By: "quarantine"}), "replace override")
	got, err = s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if o := got.Override; o == nil || o.Availability != drover.Offline || o.Reason != "" || o.By != "quarantine" ||
		o.At.Before(before.Add(-time.Second)) {
		t.Fatalf("replaced override: %+v, want offline by quarantine at about now", got.Override)
	}

	must(t, s.SetAvailabilityOverride(ctx, "fbsd-1", nil), "clear override")
	got, err = s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if got.Override != nil {
		t.Fatalf("cleared override reads back as %+v", got.Override)
	}
	if a, _, by := got.Effective(); a != drover.Reluctant || by != "worker" {
		t.Fatalf("effective availability after clearing: %s by %q, want the worker's reluctant", a, by)
	}
	must(t, s.SetAvailabilityOverride(ctx, "fbsd-1", nil), "clear again")

	wantKind(t, s.SetAvailabilityOverride(ctx, "nobody", &over), drover.NotFound, "override of unknown worker")
	wantKind(t, s.SetAvailabilityOverride(ctx, "nobody", nil), drover.NotFound, "clear unknown worker")
	wantKind(t, s.SetAvailabilityOverride(ctx, "mac-1", &drover.AvailabilityOverride{Availability: "sometimes"}),
		drover.Invalid, "unknown availability")
	got, err = s.GetWorker(ctx, "mac-1")
	must(t, err, "get other worker")
	if got.Override != nil {
		t.Fatalf("a refused override was stored: %+v", got.Override)
	}
}

// testApproval shows that a worker's approval defaults to approved, is
// changed only by SetApproval (never by the worker's own upserts, which
// every reconnection makes), and that SetApproval checks its input.
func testApproval(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "old-1", FirstSeen: t0}), "insert worker")
	held := &drover.Worker{Name: "new-1", FirstSeen: t0, Approval: drover.ApprovalPending}
	must(t, s.UpsertWorker(ctx, held), "insert pending worker")
	if held.Approval != drover.ApprovalPending {
		t.Fatalf("upsert reported approval %q, want pending", held.Approval)
	}
	approval := func(name string) string {
		t.Helper()
		w, err := s.GetWorker(ctx, name)
		must(t, err, "get worker "+name)
		return w.Approval
	}
	if got := approval("old-1"); got != drover.ApprovalApproved {
		t.Fatalf("a worker stored without approval reads back %q, want approved", got)
	}
	if got := approval("new-1"); got != drover.ApprovalPending {
		t.Fatalf("pending worker reads back %q", got)
	}

	tests := []struct {
		name, approval string
		want           string
		kind           drover.Kind // of the error; 0 (Internal) with want set means success
	}{
		{"approve", drover.ApprovalApproved, drover.ApprovalApproved, 0},
		{"approve again", drover.ApprovalApproved, drover.ApprovalApproved, 0},
		{"reject", drover.ApprovalRejected, drover.ApprovalRejected, 0},
		{"back to pending", drover.ApprovalPending, drover.ApprovalPending, 0},
		{"unknown word", "maybe", drover.ApprovalPending, drover.Invalid},
		{"empty", "", drover.ApprovalPending, drover.Invalid},
	}
	for _, tc := range tests {
		err := s.SetApproval(ctx, "new-1", tc.approval, "admin api1", at(time.Hour))
		if tc.kind != 0 {
			wantKind(t, err, tc.kind, tc.name)
		} else {
			must(t, err, tc.name)
		}
		if got := approval("new-1"); got != tc.want {
			t.Fatalf("%s: approval is %q, want %q", tc.name, got, tc.want)
		}
	}

	// Reconnections upsert the worker without an approval: they keep the
	// admin's verdict, whatever the caller's struct says.
	must(t, s.SetApproval(ctx, "new-1", drover.ApprovalRejected, "admin api1", time.Time{}), "reject")
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "new-1", Connected: true}), "upsert without approval")
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "new-1", Approval: drover.ApprovalApproved}), "upsert claiming approval")
	if got := approval("new-1"); got != drover.ApprovalRejected {
		t.Fatalf("upserts changed the approval to %q, want rejected", got)
	}
	list, err := s.ListWorkers(ctx)
	must(t, err, "list workers")
	got := map[string]string{}
	for _, w := range list {
		got[w.Name] = w.Approval
	}
	wantEqual(t, got, map[string]string{"old-1": drover.ApprovalApproved, "new-1": drover.ApprovalRejected}, "listed approvals")

	wantKind(t, s.SetApproval(ctx, "nobody", drover.ApprovalApproved, "admin", t0), drover.NotFound, "approve unknown worker")
	wantKind(t, s.UpsertWorker(ctx, &drover.Worker{Name: "odd", Approval: "sometimes"}), drover.Invalid, "upsert unknown approval")
}

// testEnrollPending shows that Enroll stores the enrolling worker's
// approval, even over an existing row: a machine enrolling under a name
// whose tokens were revoked is a new machine and waits afresh.
func testEnrollPending(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.AddToken(ctx, &drover.Token{ID: "enr", Kind: drover.TokenEnroll, Hash: "h", UsesLeft: -1}), "add enrollment token")
	must(t, s.UpsertWorker(ctx, &drover.Worker{Name: "reused", FirstSeen: t0}), "insert approved worker")
	for i, name := range []string{"fresh", "reused"} {
		w := &drover.Worker{Name: name, Approval: drover.ApprovalPending}
		wt := &drover.Token{ID: fmt.Sprintf("wt%d", i), Hash: "h", UsesLeft: -1}
		must(t, s.Enroll(ctx, "enr", at(time.Minute), wt, w), "enroll "+name)
		if w.Approval != drover.ApprovalPending {
			t.Fatalf("enroll %s reported approval %q, want pending", name, w.Approval)
		}
		got, err := s.GetWorker(ctx, name)
		must(t, err, "get "+name)
		if got.Approval != drover.ApprovalPending {
			t.Fatalf("enrolled %s reads back approval %q, want pending", name, got.Approval)
		}
	}
	w := &drover.Worker{Name: "open"}
	must(t, s.Enroll(ctx, "enr", at(time.Minute), &drover.Token{ID: "wt9", Hash: "h", UsesLeft: -1}, w), "enroll without approval")
	if w.Approval != drover.ApprovalApproved {
		t.Fatalf("worker enrolled without approval: %q, want approved", w.Approval)
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	api := &drover.Token{ID: "api1", Kind: drover.TokenAPI, Hash: "$2a$10$hash", Role: drover.RoleOperator,
		Comment: "ci bot", Created: t0, Expires: at(24 * time.Hour), UsesLeft: -1}
	enroll := &drover.Token{ID: "enr1", Kind: drover.TokenEnroll, Hash: "h", UsesLeft: 3, Created: at(time.Second)}
	worker := &drover.Token{ID: "wrk1", Kind: drover.TokenWorker, Hash: "h", Worker: "fbsd-1", UsesLeft: -1,
		Created: at(2 * time.Second), LastUsed: at(time.Hour), Revoked: true}
	for _, tok := range []*drover.Token{api, enroll, worker} {
		must(t, s.AddToken(ctx, tok), "add token "+tok.ID)
	}
	got, err := s.GetToken(ctx, "api1")
	must(t, err, "get token")
	want := *api
	want.Created = t0.UTC()
	wantEqual(t, *got, want, "token round trip")
	got, err = s.GetToken(ctx, "wrk1")
	must(t, err, "get worker token")
	wantEqual(t, *got, *worker, "worker token round trip")

	wantKind(t, s.AddToken(ctx, &drover.Token{ID: "api1", Kind: drover.TokenAPI, Hash: "other"}), drover.Conflict, "duplicate token")
	wantKind(t, s.AddToken(ctx, &drover.Token{ID: "x", Kind: "magic", Hash: "h"}), drover.Invalid, "unknown kind")
	wantKind(t, s.AddToken(ctx, &drover.Token{ID: "", Kind: drover.TokenAPI, Hash: "h"}), drover.Invalid, "no ID")
	wantKind(t, s.AddToken(ctx, &drover.Token{ID: "y", Kind: drover.TokenAPI}), drover.Invalid, "no hash")
	_, err = s.GetToken(ctx, "nope")
	wantKind(t, err, drover.NotFound, "missing token")

	tests := []struct {
		kind drover.TokenKind
		want []string
	}{
		{"", []string{"api1", "enr1", "wrk1"}},
		{drover.TokenAPI, []string{"api1"}},
		{drover.TokenEnroll, []string{"enr1"}},
		{drover.TokenWorker, []string{"wrk1"}},
	}
	for _, tc := range tests {
		list, err := s.ListTokens(ctx, tc.kind)
		must(t, err, "list tokens")
		var ids []string
		for _, tok := range list {
			ids = append(ids, tok.ID)
		}
		wantEqual(t, ids, tc.want, fmt.Sprintf("tokens of kind %q", tc.kind))
	}

	must(t, s.RevokeToken(ctx, "api1"), "revoke")
	must(t, s.RevokeToken(ctx, "api1"), "revoke again")
	got, err = s.GetToken(ctx, "api1")
	must(t, err, "get revoked")
	if !got.Revoked {
		t.Fatal("revoked token is not revoked")
	}
	wantKind(t, s.RevokeToken(ctx, "nope"), drover.NotFound, "revoke missing")
}

func testUseToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	add := func(tok drover.Token) {
		t.Helper()
		tok.Hash, tok.Kind = "h", drover.TokenAPI
		must(t, s.AddToken(ctx, &tok), "add token "+tok.ID)
	}
	add(drover.Token{ID: "twice", UsesLeft: 2})
	add(drover.Token{ID: "unlimited", UsesLeft: -1})
	add(drover.Token{ID: "spent", UsesLeft: 0})
	add(drover.Token{ID: "expiring", UsesLeft: -1, Expires: at(time.Hour)})
	add(drover.Token{ID: "revoked", UsesLeft: -1, Revoked: true})

	must(t, s.UseToken(ctx, "twice", at(time.Minute)), "first use")
	got, err := s.GetToken(ctx, "twice")
	must(t, err, "get token")
	if got.UsesLeft != 1 || !got.LastUsed.Equal(at(time.Minute)) {
		t.Fatalf("after one use: %+v", got)
	}
	must(t, s.UseToken(ctx, "twice", at(2*time.Minute)), "second use")
	wantKind(t, s.UseToken(ctx, "twice", at(3*time.Minute)), drover.Unauthorized, "third use")
	got, err = s.GetToken(ctx, "twice")
	must(t, err, "get token")
	if got.UsesLeft != 0 || !got.LastUsed.Equal(at(2*time.Minute)) {
		t.Fatalf("a refused use changed the token: %+v", got)
	}

	for i := range 3 {
		must(t, s.UseToken(ctx, "unlimited", at(time.Duration(i)*time.Minute)), "unlimited use")
	}
	got, err = s.GetToken(ctx, "unlimited")
	must(t, err, "get unlimited")
	if got.UsesLeft != -1 || !got.LastUsed.Equal(at(2*time.Minute)) {
		t.Fatalf("unlimited token after uses: %+v", got)
	}

	must(t, s.UseToken(ctx, "expiring", at(time.Hour-time.Nanosecond)), "use before expiry")
	refused := []struct {
		id, why string
		at      time.Time
	}{
		{"spent", "no uses left", t0},
		{"expiring", "expired exactly now", at(time.Hour)},
		{"expiring", "expired", at(2 * time.Hour)},
		{"revoked", "revoked", t0},
		{"unknown", "unknown", t0},
	}
	for _, tc := range refused {
		wantKind(t, s.UseToken(ctx, tc.id, tc.at), drover.Unauthorized, tc.why)
	}
}

func testEnroll(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.AddToken(ctx, &drover.Token{ID: "enr", Kind: drover.TokenEnroll, Hash: "h", UsesLeft: 2}), "add enroll token")

	wt := &drover.Token{ID: "w-fbsd", Hash: "wh", UsesLeft: -1}
	w := &drover.Worker{Name: "fbsd-1", OS: "freebsd", Availability: drover.Eager}
	must(t, s.Enroll(ctx, "enr", at(time.Minute), wt, w), "enroll")
	if wt.Kind != drover.TokenWorker || wt.Worker != "fbsd-1" || !wt.Created.Equal(at(time.Minute)) {
		t.Fatalf("enrolled token: %+v", wt)
	}

	enr, err := s.GetToken(ctx, "enr")
	must(t, err, "get enroll token")
	if enr.UsesLeft != 1 || !enr.LastUsed.Equal(at(time.Minute)) {
		t.Fatalf("enroll token after use: %+v", enr)
	}
	got, err := s.GetToken(ctx, "w-fbsd")
	must(t, err, "get worker token")
	wantEqual(t, *got, *wt, "stored worker token")
	gw, err := s.GetWorker(ctx, "fbsd-1")
	must(t, err, "get worker")
	if gw.OS != "freebsd" || gw.FirstSeen.IsZero() {
		t.Fatalf("enrolled worker: %+v", gw)
	}

	// A token for another worker, or of another kind, is the caller's bug.
	wantKind(t, s.Enroll(ctx, "enr", t0, &drover.Token{ID: "x", Hash: "h", Worker: "other"}, &drover.Worker{Name: "mac-1"}),
		drover.Invalid, "token for another worker")
	wantKind(t, s.Enroll(ctx, "enr", t0, &drover.Token{ID: "x", Hash: "h", Kind: drover.TokenAPI}, &drover.Worker{Name: "mac-1"}),
		drover.Invalid, "api token")
	wantKind(t, s.Enroll(ctx, "enr", t0, nil, &drover.Worker{Name: "mac-1"}), drover.Invalid, "no token")

	// A clash on the new token's ID undoes the whole enrollment,
	// including the use of the enrollment token.
	err = s.Enroll(ctx, "enr", at(time.Hour), &drover.Token{ID: "w-fbsd", Hash: "h"}, &drover.Worker{Name: "mac-1"})
	wantKind(t, err, drover.Conflict, "duplicate worker token")
	enr, err = s.GetToken(ctx, "enr")
	must(t, err, "get enroll token")
	if enr.UsesLeft != 1 || !enr.LastUsed.Equal(at(time.Minute)) {
		t.Fatalf("a failed enrollment spent the enroll token: %+v", enr)
	}
	_, err = s.GetWorker(ctx, "mac-1")
	wantKind(t, err, drover.NotFound, "worker of a failed enrollment")
}

func testEnrollRefused(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, tok := range []drover.Token{
		{ID: "spent", Kind: drover.TokenEnroll, UsesLeft: 0},
		{ID: "expired", Kind: drover.TokenEnroll, UsesLeft: -1, Expires: t0},
		{ID: "revoked", Kind: drover.TokenEnroll, UsesLeft: 5, Revoked: true},
		{ID: "api", Kind: drover.TokenAPI, UsesLeft: -1, Role: drover.RoleAdmin},
		{ID: "worker", Kind: drover.TokenWorker, UsesLeft: -1, Worker: "x"},
	} {
		tok.Hash = "h"
		must(t, s.AddToken(ctx, &tok), "add token "+tok.ID)
	}
	for _, id := range []string{"spent", "expired", "revoked", "api", "worker", "unknown"} {
		t.Run(id, func(t *testing.T) {
			wt := &drover.Token{ID: "new-" + id, Hash: "h"}
			w := &drover.Worker{Name: "w-" + id}
			wantKind(t, s.Enroll(ctx, id, at(time.Hour), wt, w), drover.Unauthorized, "enroll with "+id)
			if wt.Kind != "" || wt.Worker != "" {
				t.Fatalf("a refused enrollment changed the token: %+v", wt)
			}
			_, err := s.GetToken(ctx, wt.ID)
			wantKind(t, err, drover.NotFound, "token of refused enrollment")
			_, err = s.GetWorker(ctx, w.Name)
			wantKind(t, err, drover.NotFound, "worker of refused enrollment")
		})
	}
}

// testConcurrentClaims races many dispatchers over the same queue: every
// request must be claimed exactly once and build numbers must count 1…n
// per builder with no gap or repeat.
func testConcurrentClaims(t *testing.T, s store.Store) {
	ctx := context.Background()
	const (
		builders   = 3
		perBuilder = 10
		claimers   = 6
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
			for _, i := range order {
				b := &drover.Build{Worker: fmt.Sprintf("w%d", c)}
				err := s.ClaimRequest(ctx, reqs[i].ID, b)
				switch {
				case err == nil:
					mu.Lock()
					claimed[reqs[i].ID] = append(claimed[reqs[i].ID], b)
					mu.Unlock()
				case drover.KindOf(err) != drover.Conflict:
					t.Errorf("claim %d: %v", reqs[i].ID, err)
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
		if bs[0].Builder != r.Builder {
			t.Fatalf("request %d for %s made a build of %s", r.ID, r.Builder, bs[0].Builder)
		}
		numbers[r.Builder] = append(numbers[r.Builder], bs[0].Number)
		got, err := s.GetRequest(ctx, r.ID)
		must(t, err, "get request")
		if got.State != drover.RequestClaimed || got.Tries != 1 {
			t.Fatalf("request after the race: %+v", got)
		}
	}
	want := make([]int, perBuilder)
	for i := range want {
		want[i] = i + 1
	}
	for builder, ns := range numbers {
		slices.Sort(ns)
		wantEqual(t, ns, want, "build numbers of "+builder)
	}
	all, err := s.ListBuilds(ctx, drover.BuildFilter{Limit: 1000})
	must(t, err, "list builds")
	if len(all) != len(reqs) {
		t.Fatalf("%d builds stored for %d requests", len(all), len(reqs))
	}
}

func testConcurrentEnroll(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.AddToken(ctx, &drover.Token{ID: "once", Kind: drover.TokenEnroll, Hash: "h", UsesLeft: 1}), "add token")
	const n = 12
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Enroll(ctx, "once", t0,
				&drover.Token{ID: fmt.Sprintf("wt%d", i), Hash: "h"}, &drover.Worker{Name: fmt.Sprintf("w%d", i)})
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case drover.KindOf(err) != drover.Unauthorized:
			t.Errorf("enroll %d: %v, want success or unauthorized", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d enrollments succeeded with a one-use token, want 1", wins)
	}
	ws, err := s.ListWorkers(ctx)
	must(t, err, "list workers")
	wts, err := s.ListTokens(ctx, drover.TokenWorker)
	must(t, err, "list worker tokens")
	if len(ws) != 1 || len(wts) != 1 || wts[0].Worker != ws[0].Name {
		t.Fatalf("stored %d workers and %d worker tokens, want one of each, matching", len(ws), len(wts))
	}
}

func testConcurrentUseToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	const uses, tries = 5, 20
	must(t, s.AddToken(ctx, &drover.Token{ID: "few", Kind: drover.TokenAPI, Hash: "h", UsesLeft: uses}), "add token")
	var wins sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range tries {
		wins.Go(func() {
			err := s.UseToken(ctx, "few", t0)
			if err != nil && drover.KindOf(err) != drover.Unauthorized {
				t.Errorf("use: %v", err)
			}
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wins.Wait()
	if won != uses {
		t.Fatalf("%d uses succeeded, want %d", won, uses)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	r := addRequest(t, s, "linux", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.ClaimRequest(ctx, r.ID, &drover.Build{Worker: "w"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("claim with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.GetRequest(ctx, r.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("get with a cancelled context: %v, want context.Canceled", err)
	}
	got, err := s.GetRequest(context.Background(), r.ID)
	must(t, err, "get request")
	if got.State != drover.RequestPending {
		t.Fatalf("a cancelled claim changed the request: %+v", got)
	}
}

func testClose(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.Close(), "close")
	must(t, s.Close(), "close again")
	_, err := s.GetBuild(ctx, 1)
	wantKind(t, err, drover.Unavailable, "get after close")
	wantKind(t, s.AddRequests(ctx, []*drover.BuildRequest{{Builder: "x"}}), drover.Unavailable, "write after close")
	wantKind(t, s.UpsertWorker(ctx, &drover.Worker{Name: "x"}), drover.Unavailable, "upsert after close")
}

// The progress of a log's command output is stored for many logs in one
// call, read back by GetLog and ListLogs, and left alone by UpdateLog.
func testLogProgress(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	a := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	c := &drover.Log{BuildID: b.ID, StepIndex: 1, Name: "stdio"}
	must(t, s.Builds("").AddLog(ctx, a), "add log")
	must(t, s.Builds("").AddLog(ctx, c), "add log")
	must(t, s.Builds("").SetLogProgress(ctx, []drover.Log{{ID: a.ID, Seq: 1 << 40, SeqBytes: 7}, {ID: c.ID, Seq: 3, SeqBytes: 99}, {ID: c.ID + 1000, Seq: 1}}), "set progress")
	got, err := s.GetLog(ctx, a.ID)
	must(t, err, "get log")
	if got.Seq != 1<<40 || got.SeqBytes != 7 {
		t.Errorf("progress of log a = %d/%d", got.Seq, got.SeqBytes)
	}
	upd := *got
	upd.Bytes, upd.Complete = 50, true
	must(t, s.Builds("").UpdateLog(ctx, &upd), "update log")
	logs, err := s.ListLogs(ctx, b.ID)
	must(t, err, "list logs")
	if len(logs) != 2 || logs[0].Seq != 1<<40 || logs[1].Seq != 3 || logs[1].SeqBytes != 99 || !logs[0].Complete {
		t.Errorf("logs = %+v", logs)
	}
	must(t, s.Builds("").SetLogProgress(ctx, nil), "empty progress")
}
