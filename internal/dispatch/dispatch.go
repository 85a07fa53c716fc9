// Package dispatch decides which pending build request runs on which
// worker. It is pure decisions: the master hands it a snapshot (the queue,
// the builders, the connected workers and what they run) and a clock, and
// gets back assignments. It does no I/O and keeps no state, so it is tested
// with plain values and the master stays the only place that acts.
//
// Rules, in order:
//
//  1. Requests are served by priority (high first), then age.
//  2. A request may only go to a worker eligible for its builder (facts
//     meet the builder's requirements; pinned names, if any, match), with
//     a free slot, whose availability is not draining or offline.
//  3. A builder's MaxBuilds caps its running builds across the fleet.
//  4. Among candidates: eager before reluctant; then a worker that already
//     holds a checkout for this builder (an incremental build is cheaper);
//     then the least loaded (fewest running builds per slot); then name, so
//     decisions are deterministic.
//
// A request that cannot be placed does not block requests behind it: a
// builder whose workers are all busy must not starve other builders.
package dispatch

import (
	"fmt"
	"sort"
	"time"

	"github.com/drover-ci/drover"
)

// Request is a pending build request as the dispatcher sees it.
type Request struct {
	ID        int64
	Builder   string
	Priority  int
	Submitted time.Time
}

// Worker is a connected worker as the dispatcher sees it.
type Worker struct {
	Name         string
	Facts        drover.Facts
	Availability drover.Availability
	Slots        int // builds it runs at once; at least 1
	Running      int // builds it runs now
	// Checkouts names builders whose directory the worker already holds.
	Checkouts map[string]bool
}

// Snapshot is everything a decision needs.
type Snapshot struct {
	Requests []Request
	Builders map[string]*drover.Builder
	Workers  []Worker
	// RunningByBuilder counts running builds per builder, fleet-wide.
	RunningByBuilder map[string]int
}

// Assignment says: run request Request on worker Worker, because Why.
type Assignment struct {
	Request int64
	Worker  string
	Why     string
}

// Decide returns the assignments to make now. It never assigns more
// builds to a worker than its free slots, nor more builds of a builder than
// its MaxBuilds.
func Decide(s Snapshot, now time.Time) []Assignment {
	reqs := append([]Request(nil), s.Requests...)
	sort.SliceStable(reqs, func(i, j int) bool {
		a, b := reqs[i], reqs[j]
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		if !a.Submitted.Equal(b.Submitted) {
			return a.Submitted.Before(b.Submitted)
		}
		return a.ID < b.ID
	})
	workers := make([]Worker, len(s.Workers))
	copy(workers, s.Workers)
	for i := range workers {
		if workers[i].Slots < 1 {
			workers[i].Slots = 1
		}
	}
	running := make(map[string]int, len(s.RunningByBuilder))
	for k, v := range s.RunningByBuilder {
		running[k] = v
	}
	// Eligibility depends only on (builder, worker): compute it once per pair.
	eligible := map[[2]string]bool{}
	isEligible := func(b *drover.Builder, w *Worker) bool {
		key := [2]string{b.Name, w.Name}
		ok, seen := eligible[key]
		if !seen {
			ok = drover.CheckEligibility(b, w.Name, w.Facts).Eligible
			eligible[key] = ok
		}
		return ok
	}

	var out []Assignment
	for _, r := range reqs {
		b, ok := s.Builders[r.Builder]
		if !ok {
			continue // the master cancels requests of removed builders
		}
		if b.MaxBuilds > 0 && running[b.Name] >= b.MaxBuilds {
			continue
		}
		best := -1
		for i := range workers {
			w := &workers[i]
			if !takesWork(w) || !isEligible(b, w) {
				continue
			}
			if best < 0 || better(w, &workers[best], b.Name) {
				best = i
			}
		}
		if best < 0 {
			continue
		}
		w := &workers[best]
		out = append(out, Assignment{Request: r.ID, Worker: w.Name, Why: why(w, b.Name)})
		w.Running++
		running[b.Name]++
	}
	return out
}

func takesWork(w *Worker) bool {
	if w.Running >= w.Slots {
		return false
	}
	switch w.Availability {
	case drover.Draining, drover.Offline:
		return false
	}
	return true
}

// better reports whether a is a better choice than b for builder.
func better(a, b *Worker, builder string) bool {
	if ra, rb := a.Availability == drover.Reluctant, b.Availability == drover.Reluctant; ra != rb {
		return rb
	}
	if ca, cb := a.Checkouts[builder], b.Checkouts[builder]; ca != cb {
		return ca
	}
	// Compare load as running/slots without division: a.R/a.S < b.R/b.S.
	if la, lb := a.Running*b.Slots, b.Running*a.Slots; la != lb {
		return la < lb
	}
	return a.Name < b.Name
}

func why(w *Worker, builder string) string {
	s := fmt.Sprintf("eligible and free (%d of %d slots busy)", w.Running, w.Slots)
	if w.Checkouts[builder] {
		s += "; holds a checkout of this builder"
	}
	if w.Availability == drover.Reluctant {
		s += "; reluctant, but no eager worker could take it"
	}
	return s
}
