package master

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// pendingQueue is the dispatcher's copy of the pending requests, so that a
// dispatch round need not read the whole queue from the store. The
// master's own writes keep it current (queueStore updates it after each
// commit): a request added is added, one claimed or cancelled is removed,
// and a build put back in the queue (a retry) makes the copy stale, to be
// read whole again. A request the copy holds that is no longer pending in
// the store costs one refused claim, which removes it; a pending request
// the copy lacks would wait unseen, so every path that makes a request
// pending goes through queueStore. With a shared store (a site of several
// masters on PostgreSQL) the other masters change the queue too, and the
// dispatcher reads the store every round instead (see pendingRequests).
type pendingQueue struct {
	mu    sync.Mutex
	valid bool
	reqs  map[int64]drover.BuildRequest
	// order is reqs' IDs in queue order once sorted is set; it may hold
	// IDs since removed, which list skips and drops.
	order  []int64
	sorted bool
}

// list returns the pending requests in queue order (see
// store.Store.ListRequests), reading them from st when the copy is stale.
// It holds q.mu while it reads, so that no write recorded meanwhile is
// lost: such a write committed before or after the read, and is recorded
// only once the read is done.
func (q *pendingQueue) list(ctx context.Context, st interface {
	ListRequests(ctx context.Context, f drover.RequestFilter) ([]drover.BuildRequest, error)
}) ([]drover.BuildRequest, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.valid {
		all, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
		if err != nil {
			return nil, err
		}
		q.reqs = make(map[int64]drover.BuildRequest, len(all))
		q.order = q.order[:0]
		for _, r := range all {
			q.reqs[r.ID] = r
			q.order = append(q.order, r.ID)
		}
		q.valid, q.sorted = true, true
		return all, nil
	}
	if !q.sorted {
		q.order = q.order[:0]
		for id := range q.reqs {
			q.order = append(q.order, id)
		}
		slices.SortFunc(q.order, func(a, b int64) int { return queueOrder(q.reqs[a], q.reqs[b]) })
		q.sorted = true
	}
	out := make([]drover.BuildRequest, 0, len(q.reqs))
	kept := q.order[:0]
	for _, id := range q.order {
		if r, ok := q.reqs[id]; ok {
			out = append(out, r)
			kept = append(kept, id)
		}
	}
	q.order = kept
	return out, nil
}

// queueOrder is the store's queue order: priority (high first), then
// submission time, then ID.
func queueOrder(a, b drover.BuildRequest) int {
	if a.Priority != b.Priority {
		return cmp.Compare(b.Priority, a.Priority)
	}
	if c := a.Submitted.Compare(b.Submitted); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// added records requests stored as pending.
func (q *pendingQueue) added(reqs []*drover.BuildRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.valid {
		return
	}
	for _, r := range reqs {
		if r.State != drover.RequestPending {
			continue
		}
		// Mostly in queue order already: appended, order stays sorted.
		if n := len(q.order); q.sorted && n > 0 {
			if last, ok := q.reqs[q.order[n-1]]; ok && queueOrder(last, *r) > 0 {
				q.sorted = false
			}
		}
		q.reqs[r.ID] = *r
		q.order = append(q.order, r.ID)
	}
}

// removed records requests that are no longer pending.
func (q *pendingQueue) removed(ids ...int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		delete(q.reqs, id)
	}
}

// stale makes the next list read the store.
func (q *pendingQueue) stale() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.valid = false
}

// queueStore is the master's store: the store itself, with every write
// that changes which requests are pending recorded in the dispatcher's
// copy of the queue once it has committed.
type queueStore struct {
	store.Store
	q *pendingQueue
}

func (s queueStore) AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error {
	if err := s.Store.AddRequests(ctx, reqs); err != nil {
		s.q.stale() // the error may hide a commit
		return err
	}
	s.q.added(reqs)
	return nil
}

func (s queueStore) ClaimRequest(ctx context.Context, id int64, b *drover.Build) error {
	err := s.Store.ClaimRequest(ctx, id, b)
	if err == nil || drover.KindOf(err) == drover.Conflict || drover.KindOf(err) == drover.NotFound {
		s.q.removed(id) // claimed, or not pending anyway
	}
	return err
}

func (s queueStore) ClaimRequests(ctx context.Context, claims []store.Claim) error {
	if err := s.Store.ClaimRequests(ctx, claims); err != nil {
		return err
	}
	ids := make([]int64, 0, len(claims))
	for _, c := range claims {
		if k := drover.KindOf(c.Err); c.Err == nil || k == drover.Conflict || k == drover.NotFound {
			ids = append(ids, c.Request)
		}
	}
	s.q.removed(ids...)
	return nil
}

func (s queueStore) CancelRequest(ctx context.Context, id int64, reason string) error {
	err := s.Store.CancelRequest(ctx, id, reason)
	if err == nil || drover.KindOf(err) == drover.Conflict || drover.KindOf(err) == drover.NotFound {
		s.q.removed(id)
	}
	return err
}

// Builds returns the store's build writes, with a build put back in the
// queue (a retry) recorded in the copy.
func (s queueStore) Builds(master string) store.BuildWriter {
	return queueWriter{BuildWriter: s.Store.Builds(master), q: s.q}
}

// queueWriter is the build writes of a queueStore.
type queueWriter struct {
	store.BuildWriter
	q *pendingQueue
}

func (w queueWriter) FinishBuild(ctx context.Context, id int64, result drover.Result, summary string, finished time.Time, requeue bool) error {
	err := w.BuildWriter.FinishBuild(ctx, id, result, summary, finished, requeue)
	if requeue {
		// Its request is pending again; which one is in the store. An
		// error may hide a commit (the connection broke after it), so
		// the copy goes stale either way.
		w.q.stale()
	}
	return err
}

func (w queueWriter) AbandonBuild(ctx context.Context, id int64, a store.Abandon) error {
	err := w.BuildWriter.AbandonBuild(ctx, id, a)
	if a.Requeue {
		w.q.stale()
	}
	return err
}
