package master

import (
	"context"
	"sort"
	"sync"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/dispatch"
)

// lockManager is the master's record of who holds which lock. Build-level
// locks are taken by the dispatcher as it starts a build; step-level locks
// by the build runner as a step starts, waiting in a first-come queue. The
// accounting itself (capacity, all-or-none) is dispatch.LockTable's.
type lockManager struct {
	mu      sync.Mutex
	table   *dispatch.LockTable
	waiters []*lockWaiter // steps waiting, oldest first
}

type lockWaiter struct {
	uses   []drover.LockUse
	worker string
	holder drover.LockHolder
	ready  chan struct{} // closed when the locks are taken for it
}

func newLockManager(defs []drover.LockDef) *lockManager {
	return &lockManager{table: dispatch.NewLockTable(defs)}
}

// setDefs applies a reloaded config's locks: holders keep what they hold;
// a changed max applies to new acquisitions.
func (lm *lockManager) setDefs(defs []drover.LockDef) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.table.SetDefs(defs)
	lm.grantLocked()
}

// snapshot returns a copy of the table for the dispatcher, and the locks
// steps are queued for, which dispatch reserves: a new build may not jump
// ahead of a running build's step.
func (lm *lockManager) snapshot() (*dispatch.LockTable, []dispatch.LockWait) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	queued := make([]dispatch.LockWait, len(lm.waiters))
	for i, w := range lm.waiters {
		queued[i] = dispatch.LockWait{Uses: w.uses, Worker: w.worker}
	}
	return lm.table.Clone(), queued
}

// takeForRequest takes a build's locks for a request about to be claimed.
func (lm *lockManager) takeForRequest(uses []drover.LockUse, worker string, holder drover.LockHolder) bool {
	if len(uses) == 0 {
		return true
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()
	for _, w := range lm.waiters {
		for _, k := range lm.table.Keys(w.uses, w.worker) {
			for _, mine := range lm.table.Keys(uses, worker) {
				if k == mine {
					return false
				}
			}
		}
	}
	return lm.table.Take(uses, worker, holder)
}

func (lm *lockManager) bind(requestID, buildID int64, number int) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.table.Bind(requestID, buildID, number)
}

func (lm *lockManager) releaseRequest(requestID int64) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.table.ReleaseRequest(requestID)
	lm.grantLocked()
}

// acquire takes a step's locks, all or none, waiting its turn. It returns
// ctx's error if the build is stopped first, holding nothing.
func (lm *lockManager) acquire(ctx context.Context, uses []drover.LockUse, worker string, holder drover.LockHolder) error {
	if len(uses) == 0 {
		return nil
	}
	w := &lockWaiter{uses: uses, worker: worker, holder: holder, ready: make(chan struct{})}
	lm.mu.Lock()
	lm.waiters = append(lm.waiters, w)
	lm.grantLocked()
	lm.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		lm.mu.Lock()
		defer lm.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			lm.table.Release(holder.BuildID, holder.Step)
			lm.grantLocked()
		default:
			lm.removeLocked(w)
		}
		return context.Cause(ctx)
	}
}

// release drops what build buildID holds at step (dispatch.AllSteps for
// everything) and serves waiters.
func (lm *lockManager) release(buildID int64, step int) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.table.Release(buildID, step)
	lm.grantLocked()
}

// grantLocked serves waiting steps in order. A waiter that cannot be
// served blocks later waiters that want any of the same lock instances, so
// an exclusive waiter is not starved by counting ones behind it.
func (lm *lockManager) grantLocked() {
	blocked := map[dispatch.LockKey]bool{}
	kept := lm.waiters[:0]
	for _, w := range lm.waiters {
		keys := lm.table.Keys(w.uses, w.worker)
		free := true
		for _, k := range keys {
			if blocked[k] {
				free = false
			}
		}
		if free && lm.table.Take(w.uses, w.worker, w.holder) {
			close(w.ready)
			continue
		}
		for _, k := range keys {
			blocked[k] = true
		}
		kept = append(kept, w)
	}
	lm.waiters = kept
}

func (lm *lockManager) removeLocked(w *lockWaiter) {
	for i, x := range lm.waiters {
		if x == w {
			lm.waiters = append(lm.waiters[:i], lm.waiters[i+1:]...)
			break
		}
	}
	lm.grantLocked()
}

// states describes every lock instance: declared locks (master-scoped ones
// even when unused) with holders and waiters.
func (lm *lockManager) states() []drover.LockState {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	byKey := map[dispatch.LockKey]*drover.LockState{}
	get := func(k dispatch.LockKey) *drover.LockState {
		st := byKey[k]
		if st == nil {
			def := lm.table.Defs[k.Name]
			st = &drover.LockState{Name: k.Name, Scope: def.Scope, Worker: k.Worker, Max: def.Max,
				Holders: []drover.LockHolder{}, Waiters: []drover.LockHolder{}}
			if st.Scope == "" {
				st.Scope = drover.LockMaster
			}
			byKey[k] = st
		}
		return st
	}
	for _, d := range lm.table.Defs {
		if d.Scope != drover.LockWorker {
			get(dispatch.LockKey{Name: d.Name})
		}
	}
	for k, hs := range lm.table.Held {
		st := get(k)
		st.Holders = append(st.Holders, hs...)
	}
	for _, w := range lm.waiters {
		for i, k := range lm.table.Keys(w.uses, w.worker) {
			h := w.holder
			h.Exclusive = w.uses[i].Exclusive
			st := get(k)
			st.Waiters = append(st.Waiters, h)
		}
	}
	out := make([]drover.LockState, 0, len(byKey))
	for _, st := range byKey {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Worker < out[j].Worker
	})
	return out
}

// restore records holdings a re-attached build had before a restart,
// without checking capacity: they were granted then.
func (lm *lockManager) restore(uses []drover.LockUse, worker string, holder drover.LockHolder) {
	if len(uses) == 0 {
		return
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()
	for _, u := range uses {
		h := holder
		h.Exclusive = u.Exclusive
		k := lm.table.Key(u.Lock, worker)
		lm.table.Held[k] = append(lm.table.Held[k], h)
	}
}
