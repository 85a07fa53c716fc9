package master

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/dispatch"
)

// Many steps competing for a counting lock never exceed its max, and each
// gets it eventually.
func TestLockManagerCounting(t *testing.T) {
	lm := newLockManager([]drover.LockDef{{Name: "vm", Max: 3, Scope: drover.LockMaster}})
	var inside, peak atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := drover.LockHolder{BuildID: int64(i + 1), Step: 0}
			if err := lm.acquire(context.Background(), []drover.LockUse{{Lock: "vm"}}, "w", h); err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			lm.release(h.BuildID, 0)
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak holders = %d, want at most 3 (and some overlap)", p)
	}
	if st := lm.states(); len(st) != 1 || len(st[0].Holders) != 0 || len(st[0].Waiters) != 0 {
		t.Errorf("after all released: %+v", st)
	}
}

// An exclusive waiter is served before counting waiters that came after
// it, and nobody holds the lock alongside it.
func TestLockManagerExclusiveNotStarved(t *testing.T) {
	lm := newLockManager([]drover.LockDef{{Name: "vm", Max: 2, Scope: drover.LockMaster}})
	ctx := context.Background()
	if err := lm.acquire(ctx, []drover.LockUse{{Lock: "vm"}}, "w", drover.LockHolder{BuildID: 1, Step: 0}); err != nil {
		t.Fatal(err)
	}
	order := make(chan int64, 3)
	var wg sync.WaitGroup
	start := func(id int64, exclusive bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := drover.LockHolder{BuildID: id, Step: 0}
			if err := lm.acquire(ctx, []drover.LockUse{{Lock: "vm", Exclusive: exclusive}}, "w", h); err != nil {
				t.Error(err)
				return
			}
			order <- id
			time.Sleep(5 * time.Millisecond)
			lm.release(id, 0)
		}()
	}
	start(2, true)
	waitFor(t, func() bool { return len(lm.states()[0].Waiters) == 1 })
	start(3, false) // would fit beside build 1, but must not overtake the exclusive waiter
	waitFor(t, func() bool { return len(lm.states()[0].Waiters) == 2 })
	if st := lm.states()[0]; len(st.Holders) != 1 {
		t.Fatalf("a counting waiter overtook the exclusive one: %+v", st)
	}
	lm.release(1, 0)
	wg.Wait()
	close(order)
	var got []int64
	for id := range order {
		got = append(got, id)
	}
	if len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("served in order %v, want [2 3]", got)
	}
}

// A step stopped while it waits holds nothing afterwards; a request's
// provisional hold is released when its claim fails.
func TestLockManagerCancelAndRequests(t *testing.T) {
	lm := newLockManager([]drover.LockDef{{Name: "gpu", Max: 1, Scope: drover.LockWorker}})
	if !lm.takeForRequest([]drover.LockUse{{Lock: "gpu"}}, "w1", drover.LockHolder{RequestID: 7, Step: -1}) {
		t.Fatal("take for request refused")
	}
	if lm.takeForRequest([]drover.LockUse{{Lock: "gpu"}}, "w1", drover.LockHolder{RequestID: 8, Step: -1}) {
		t.Fatal("second take of a max-1 lock on the same worker succeeded")
	}
	if !lm.takeForRequest([]drover.LockUse{{Lock: "gpu"}}, "w2", drover.LockHolder{RequestID: 8, Step: -1}) {
		t.Fatal("worker-scoped lock on another worker refused")
	}
	lm.bind(7, 70, 1)
	lm.releaseRequest(8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- lm.acquire(ctx, []drover.LockUse{{Lock: "gpu"}}, "w1", drover.LockHolder{BuildID: 71, Step: 2})
	}()
	waitFor(t, func() bool {
		for _, st := range lm.states() {
			if st.Worker == "w1" && len(st.Waiters) == 1 {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-done; err == nil {
		t.Fatal("acquire after cancel succeeded")
	}
	lm.release(70, dispatch.AllSteps)
	for _, st := range lm.states() {
		if len(st.Holders)+len(st.Waiters) != 0 {
			t.Errorf("left over: %+v", st)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}
