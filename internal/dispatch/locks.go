package dispatch

import (
	"fmt"
	"sort"
	"strings"

	"github.com/drover-ci/drover"
)

// LockKey names one lock instance: a master-scoped lock has one, a
// worker-scoped lock one per worker.
type LockKey struct {
	Name   string
	Worker string // "" for a master-scoped lock
}

// LockTable is the accounting of every lock instance: who holds what. It
// is a plain value the master keeps under its own mutex and the dispatcher
// copies to plan with. A holder is identified by its LockHolder (a build,
// or one step of it).
type LockTable struct {
	Defs map[string]drover.LockDef
	Held map[LockKey][]drover.LockHolder
}

// NewLockTable makes a table for the declared locks.
func NewLockTable(defs []drover.LockDef) *LockTable {
	t := &LockTable{Held: map[LockKey][]drover.LockHolder{}}
	t.SetDefs(defs)
	return t
}

// SetDefs replaces the declarations (a reload): holders keep what they
// hold; a changed max applies to new acquisitions.
func (t *LockTable) SetDefs(defs []drover.LockDef) {
	t.Defs = make(map[string]drover.LockDef, len(defs))
	for _, d := range defs {
		t.Defs[d.Name] = d
	}
}

// Clone returns a copy that can be changed without touching t.
func (t *LockTable) Clone() *LockTable {
	c := &LockTable{Defs: t.Defs, Held: make(map[LockKey][]drover.LockHolder, len(t.Held))}
	for k, v := range t.Held {
		c.Held[k] = append([]drover.LockHolder(nil), v...)
	}
	return c
}

// Key returns the instance of lock name that a build on worker uses.
func (t *LockTable) Key(name, worker string) LockKey {
	if d, ok := t.Defs[name]; ok && d.Scope == drover.LockWorker {
		return LockKey{Name: name, Worker: worker}
	}
	return LockKey{Name: name}
}

// Keys returns the instances that uses need on worker.
func (t *LockTable) Keys(uses []drover.LockUse, worker string) []LockKey {
	keys := make([]LockKey, len(uses))
	for i, u := range uses {
		keys[i] = t.Key(u.Lock, worker)
	}
	return keys
}

// free reports whether one more use of key in the given mode fits.
func (t *LockTable) free(key LockKey, exclusive bool) bool {
	def, ok := t.Defs[key.Name]
	if !ok {
		return false // a lock no longer declared: nobody new may take it
	}
	held := t.Held[key]
	if exclusive {
		return len(held) == 0
	}
	for _, h := range held {
		if h.Exclusive {
			return false
		}
	}
	return len(held) < def.Max
}

// Blocker says why uses cannot all be taken on worker, or "" if they can.
func (t *LockTable) Blocker(uses []drover.LockUse, worker string) string {
	for _, u := range uses {
		key := t.Key(u.Lock, worker)
		if _, ok := t.Defs[u.Lock]; !ok {
			return fmt.Sprintf("lock %s is not declared", u.Lock)
		}
		if !t.free(key, u.Exclusive) {
			return fmt.Sprintf("lock %s %s", describeKey(key), holders(t.Held[key], t.Defs[u.Lock].Max))
		}
	}
	return ""
}

func describeKey(k LockKey) string {
	if k.Worker != "" {
		return k.Name + " on " + k.Worker
	}
	return k.Name
}

func holders(hs []drover.LockHolder, max int) string {
	if len(hs) == 0 {
		return "is free"
	}
	seen := map[int64]bool{}
	var names []string
	for _, h := range hs {
		if seen[h.BuildID] {
			continue
		}
		seen[h.BuildID] = true
		s := fmt.Sprintf("build %d", h.BuildID)
		if h.Exclusive {
			s += " (exclusive)"
		}
		names = append(names, s)
	}
	sort.Strings(names)
	return fmt.Sprintf("held %d/%d by %s", len(hs), max, strings.Join(names, ", "))
}

// Take records holder as holding uses on worker, all of them, if they all
// fit; otherwise it takes nothing and returns false.
func (t *LockTable) Take(uses []drover.LockUse, worker string, holder drover.LockHolder) bool {
	if t.Blocker(uses, worker) != "" {
		return false
	}
	for _, u := range uses {
		key := t.Key(u.Lock, worker)
		h := holder
		h.Exclusive = u.Exclusive
		t.Held[key] = append(t.Held[key], h)
	}
	return true
}

// Release drops every lock held by build buildID at step (-1: the
// build-level locks; AllSteps: everything the build holds).
func (t *LockTable) Release(buildID int64, step int) {
	for k, hs := range t.Held {
		kept := hs[:0]
		for _, h := range hs {
			if h.BuildID == buildID && (step == AllSteps || h.Step == step) {
				continue
			}
			kept = append(kept, h)
		}
		if len(kept) == 0 {
			delete(t.Held, k)
		} else {
			t.Held[k] = kept
		}
	}
}

// AllSteps releases every lock of a build.
const AllSteps = -2

// Bind gives the holdings taken for request requestID (before its build
// existed) the build's ID and number.
func (t *LockTable) Bind(requestID, buildID int64, number int) {
	for _, hs := range t.Held {
		for i := range hs {
			if hs[i].RequestID == requestID && hs[i].BuildID == 0 {
				hs[i].BuildID, hs[i].Number = buildID, number
			}
		}
	}
}

// ReleaseRequest drops holdings taken for a request whose claim failed.
func (t *LockTable) ReleaseRequest(requestID int64) {
	for k, hs := range t.Held {
		kept := hs[:0]
		for _, h := range hs {
			if h.RequestID == requestID && h.BuildID == 0 {
				continue
			}
			kept = append(kept, h)
		}
		if len(kept) == 0 {
			delete(t.Held, k)
		} else {
			t.Held[k] = kept
		}
	}
}
