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
//  4. A reluctant worker is used only when no eager worker online is
//     eligible for the builder, or once the request has waited longer
//     than ReluctantAfter (when set).
//  5. The builder's locks must all be free on the chosen worker (all or
//     none). A request that waits for a lock reserves it: requests behind
//     it in the queue may not take that lock instance, so an exclusive
//     waiter is not starved by a stream of counting ones.
//  6. Among candidates: a worker that already holds a checkout for this
//     builder (an incremental build is cheaper); then the least loaded
//     (fewest running builds per slot); then name, so decisions are
//     deterministic.
//
// A request that cannot be placed does not block requests behind it (except
// on a lock it waits for): a builder whose workers are all busy must not
// starve other builders. Every request left waiting gets a reason in words.
package dispatch

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// Request is a pending build request as the dispatcher sees it.
type Request struct {
	ID        int64
	Builder   string
	Priority  int
	Submitted time.Time
	// Group, when set, names the sharded step this request is a part of:
	// a worker runs at most one part of a group at a time, so parts spread
	// over workers (and wait, when there are fewer workers than parts).
	Group string
}

// Worker is a connected worker as the dispatcher sees it.
type Worker struct {
	Name         string
	Facts        drover.Facts
	Availability drover.Availability // effective: the operator's override, else the worker's own
	Slots        int                 // builds it runs at once; at least 1
	Running      int                 // builds it runs now
	// Checkouts names builders whose directory the worker already holds.
	Checkouts map[string]bool
	// Groups names the sharded steps the worker runs a part of now.
	Groups map[string]bool
}

// Snapshot is everything a decision needs.
type Snapshot struct {
	Requests []Request
	Builders map[string]*drover.Builder
	Workers  []Worker
	// RunningByBuilder counts running builds per builder, fleet-wide.
	RunningByBuilder map[string]int
	// Locks is the lock accounting now; Decide works on a copy.
	Locks *LockTable
	// ReluctantAfter lets reluctant workers take requests that waited this
	// long; zero: only when no eager worker online is eligible.
	ReluctantAfter time.Duration
}

// Assignment says: run request Request on worker Worker, because Why.
type Assignment struct {
	Request int64
	Worker  string
	Why     string
}

// Decision is what Decide returns: the assignments to make now, and for
// every other request, why it waits. NoEligible lists the requests with no
// eligible worker online at all (they may expire).
type Decision struct {
	Assignments []Assignment
	Waiting     map[int64]string
	NoEligible  map[int64]bool
}

// Decide plans assignments for the snapshot at time now. It never assigns
// more builds to a worker than its free slots, more builds of a builder than
// its MaxBuilds, or a lock beyond its capacity.
func Decide(s Snapshot, now time.Time) Decision {
	reqs := s.Requests
	if !slices.IsSortedFunc(reqs, queueOrder) { // the master's queue comes sorted
		reqs = slices.Clone(reqs)
		slices.SortStableFunc(reqs, queueOrder)
	}
	workers := make([]Worker, len(s.Workers))
	copy(workers, s.Workers)
	for i := range workers {
		if workers[i].Slots < 1 {
			workers[i].Slots = 1
		}
		if workers[i].Availability == "" {
			workers[i].Availability = drover.Eager
		}
	}
	running := make(map[string]int, len(s.RunningByBuilder))
	for k, v := range s.RunningByBuilder {
		running[k] = v
	}
	locks := s.Locks
	if locks == nil {
		locks = NewLockTable(nil)
	}
	locks = locks.Clone()
	reserved := map[LockKey]int64{} // lock instance → the request waiting for it first

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

	// A builder none of whose eligible workers can take a build now stays
	// so for the rest of the round (assignments only fill workers): its
	// later requests outside a group get the same verdict without another
	// pass over the workers, so a long queue costs a lookup per request.
	type verdict struct {
		why        string
		noEligible bool
	}
	full := map[string]verdict{}

	d := Decision{Waiting: make(map[int64]string, len(reqs)), NoEligible: map[int64]bool{}}
	for _, r := range reqs {
		b, ok := s.Builders[r.Builder]
		if !ok {
			d.Waiting[r.ID] = fmt.Sprintf("builder %s is not in the config", r.Builder)
			continue
		}
		if b.MaxBuilds > 0 && running[b.Name] >= b.MaxBuilds {
			d.Waiting[r.ID] = fmt.Sprintf("builder at its max_builds (%d running)", running[b.Name])
			continue
		}
		if v, ok := full[b.Name]; ok && r.Group == "" {
			d.Waiting[r.ID] = v.why
			if v.noEligible {
				d.NoEligible[r.ID] = true
			}
			continue
		}
		var online, eager, free, freeEager []*Worker
		var unavailable []string
		partOfGroup := 0
		for i := range workers {
			w := &workers[i]
			if !isEligible(b, w) {
				continue
			}
			online = append(online, w)
			if !w.Availability.TakesWork() {
				unavailable = append(unavailable, unavailableWhy(w))
				continue
			}
			if w.Availability == drover.Eager {
				eager = append(eager, w)
			}
			if r.Group != "" && w.Groups[r.Group] {
				partOfGroup++
				continue
			}
			if w.Running < w.Slots {
				free = append(free, w)
				if w.Availability == drover.Eager {
					freeEager = append(freeEager, w)
				}
			}
		}
		var v verdict
		switch {
		case len(online) == 0:
			v = verdict{"no eligible worker online", true}
		case len(free) == 0 && len(unavailable) == len(online):
			v.why = "every eligible worker is unavailable: " + strings.Join(unavailable, ", ")
		case len(free) == 0 && partOfGroup > 0:
			v.why = fmt.Sprintf("the %d eligible workers not already running a part of this step are busy", len(online)-len(unavailable)-partOfGroup)
		case len(free) == 0:
			v.why = fmt.Sprintf("all %d eligible workers busy", len(online)-len(unavailable))
		}
		if v.why != "" {
			d.Waiting[r.ID] = v.why
			if v.noEligible {
				d.NoEligible[r.ID] = true
			}
			if r.Group == "" {
				full[b.Name] = v
			}
			continue
		}
		candidates := freeEager
		if len(candidates) == 0 {
			waited := now.Sub(r.Submitted)
			switch {
			case len(eager) == 0:
				candidates = free // only reluctant workers are eligible: use them
			case s.ReluctantAfter > 0 && waited >= s.ReluctantAfter:
				candidates = free
			default:
				msg := "only reluctant workers free; waiting for an eager one"
				if s.ReluctantAfter > 0 {
					msg += fmt.Sprintf(" (or %s more)", (s.ReluctantAfter - waited).Round(time.Second))
				}
				d.Waiting[r.ID] = msg
				continue
			}
		}
		sort.SliceStable(candidates, func(i, j int) bool { return better(candidates[i], candidates[j], b.Name) })
		var chosen *Worker
		var blocker string
		for _, w := range candidates {
			keys := locks.Keys(b.Locks, w.Name)
			if first := reservedBy(reserved, keys, r.ID); first != 0 {
				if blocker == "" {
					blocker = fmt.Sprintf("waiting behind request %d for a lock", first)
				}
				continue
			}
			if why := locks.Blocker(b.Locks, w.Name); why != "" {
				if blocker == "" {
					blocker = why
				}
				continue
			}
			chosen = w
			break
		}
		if chosen == nil {
			d.Waiting[r.ID] = blocker
			for _, w := range candidates {
				for _, k := range locks.Keys(b.Locks, w.Name) {
					if _, ok := reserved[k]; !ok {
						reserved[k] = r.ID
					}
				}
			}
			continue
		}
		locks.Take(b.Locks, chosen.Name, drover.LockHolder{RequestID: r.ID, Builder: b.Name, Step: -1, Since: now})
		d.Assignments = append(d.Assignments, Assignment{Request: r.ID, Worker: chosen.Name, Why: why(chosen, b.Name)})
		chosen.Running++
		running[b.Name]++
		if r.Group != "" {
			groups := make(map[string]bool, len(chosen.Groups)+1) // the snapshot's map is the caller's
			for g := range chosen.Groups {
				groups[g] = true
			}
			groups[r.Group] = true
			chosen.Groups = groups
		}
	}
	return d
}

// queueOrder is the order requests are served in: priority (high first),
// then submission time, then ID.
func queueOrder(a, b Request) int {
	if a.Priority != b.Priority {
		return cmp.Compare(b.Priority, a.Priority)
	}
	if c := a.Submitted.Compare(b.Submitted); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// reservedBy returns the first request other than self that reserved any
// of keys, or 0.
func reservedBy(reserved map[LockKey]int64, keys []LockKey, self int64) int64 {
	for _, k := range keys {
		if id, ok := reserved[k]; ok && id != self {
			return id
		}
	}
	return 0
}

// better reports whether a is a better choice than b for builder.
func better(a, b *Worker, builder string) bool {
	if ca, cb := a.Checkouts[builder], b.Checkouts[builder]; ca != cb {
		return ca
	}
	// Compare load as running/slots without division: a.R/a.S < b.R/b.S.
	if la, lb := a.Running*b.Slots, b.Running*a.Slots; la != lb {
		return la < lb
	}
	return a.Name < b.Name
}

// unavailableWhy says why a worker takes no work, and what it still runs:
// "w1 is draining (1 build running)", "w2 is offline".
func unavailableWhy(w *Worker) string {
	s := fmt.Sprintf("%s is %s", w.Name, w.Availability)
	switch {
	case w.Running == 1:
		s += " (1 build running)"
	case w.Running > 1:
		s += fmt.Sprintf(" (%d builds running)", w.Running)
	}
	return s
}

func why(w *Worker, builder string) string {
	s := fmt.Sprintf("eligible and free (%d of %d slots busy)", w.Running, w.Slots)
	if w.Checkouts[builder] {
		s += "; holds a checkout of this builder"
	}
	if w.Availability == drover.Reluctant {
		s += "; reluctant, used as no eager worker could take it"
	}
	return s
}
