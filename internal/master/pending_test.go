package master

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// TestPendingQueue shows the dispatcher's copy of the queue following the
// master's own writes, in queue order, and reading the store again after
// a retry puts a request back.
func TestPendingQueue(t *testing.T) {
	ctx := context.Background()
	raw, err := store.Open(ctx, ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var q pendingQueue
	st := queueStore{Store: raw, q: &q}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := func() []int64 {
		t.Helper()
		reqs, err := q.list(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, r := range reqs {
			out = append(out, r.ID)
		}
		want, err := raw.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
		if err != nil {
			t.Fatal(err)
		}
		var wantIDs []int64
		for _, r := range want {
			wantIDs = append(wantIDs, r.ID)
		}
		if !slices.Equal(out, wantIDs) {
			t.Fatalf("copy of the queue %v, store %v", out, wantIDs)
		}
		return out
	}
	add := func(prio int, at time.Duration) *drover.BuildRequest {
		t.Helper()
		r := &drover.BuildRequest{Builder: "b", Priority: prio, Submitted: t0.Add(at)}
		if err := st.AddRequests(ctx, []*drover.BuildRequest{r}); err != nil {
			t.Fatal(err)
		}
		return r
	}

	if got := ids(); len(got) != 0 {
		t.Fatalf("empty queue: %v", got)
	}
	r1 := add(0, time.Second)
	r2 := add(0, 0)             // older: ahead of r1
	r3 := add(5, 3*time.Second) // higher priority: first
	r4 := add(0, 2*time.Second) // in order: appended
	if got, want := ids(), []int64{r3.ID, r2.ID, r1.ID, r4.ID}; !slices.Equal(got, want) {
		t.Fatalf("queue order %v, want %v", got, want)
	}

	claims := []store.Claim{{Request: r3.ID, Build: &drover.Build{Worker: "w"}}, {Request: r2.ID, Build: &drover.Build{Worker: "w"}}}
	if err := st.ClaimRequests(ctx, claims); err != nil {
		t.Fatal(err)
	}
	if err := st.CancelRequest(ctx, r1.ID, "no"); err != nil {
		t.Fatal(err)
	}
	ids()

	// A retry puts r3 back: the copy is read again.
	if err := st.Builds("").FinishBuild(ctx, claims[0].Build.ID, drover.Retry, "lost", t0, true); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(), []int64{r3.ID, r4.ID}; !slices.Equal(got, want) {
		t.Fatalf("after a retry %v, want %v", got, want)
	}

	// A refused claim (cancelled behind the copy's back) drops it.
	if err := raw.CancelRequest(ctx, r4.ID, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	stale := []store.Claim{{Request: r4.ID, Build: &drover.Build{Worker: "w"}}}
	if err := st.ClaimRequests(ctx, stale); err != nil || drover.KindOf(stale[0].Err) != drover.Conflict {
		t.Fatalf("claim of a cancelled request: %v, %v", err, stale[0].Err)
	}
	ids()
}
