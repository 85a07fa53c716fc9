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
//     a free slot, whose availability is not draining or offline, and
//     which is not in a downtime (a downtime wins over any availability).
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
// starve other builders. Every request left waiting gets a reason: a code
// for programs, words for people.
//
// Decide also makes the queue's time-based and housekeeping decisions, so
// that the master only acts on them: which requests a newer one replaces
// (collapse), which have had no eligible worker online for too long
// (expiry), and when the next decision that depends on the clock is due (a
// reluctant worker's wait ending, a request expiring, a worker's downtime
// starting or ending).
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
	// Collapsible is set for a request a newer one may replace, when its
	// builder collapses: made by a scheduler from changes, never tried.
	// Requests of the same builder, Repository and Branch collapse into
	// the newest.
	Collapsible        bool
	Repository, Branch string
}

// LockWait is a running build's step waiting for locks: the instances it
// waits for are reserved, so that a new build does not jump ahead of it.
type LockWait struct {
	Uses   []drover.LockUse
	Worker string
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
	// Downtime, when set, says the worker is in a downtime now, in words
	// ("downtime (config): Wed 08:00-10:00 UTC until 10:00"): it takes no
	// new build, whatever its Availability.
	Downtime string
	// Until is when the worker's downtime next starts or ends (zero:
	// never): a decision then may differ, so Decide wakes for it.
	Until time.Time
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
	// StepLocks are the locks running builds' steps wait for.
	StepLocks []LockWait
	// NoWorkerSince is the previous decision's: since when each request
	// has had no eligible worker online.
	NoWorkerSince map[int64]time.Time
	// ExpireAfter cancels a request that has had no eligible worker online
	// this long; a builder's own ExpireAfter wins. Zero: never.
	ExpireAfter time.Duration
	// Partial says the snapshot holds only some of the fleet's workers
	// (other masters of a site have their own): a request without an
	// eligible worker here may have one there, so none expires.
	Partial bool
}

// Assignment says: run request Request on worker Worker, because Why.
type Assignment struct {
	Request int64
	Worker  string
	Why     string
}

// Decision is what Decide returns: the assignments to make now; for every
// other request, why it waits; the requests to cancel; and when to decide
// again.
type Decision struct {
	Assignments []Assignment
	Waiting     map[int64]drover.WaitReason
	// NoWorkerSince says since when each request has had no eligible
	// worker online, for the next snapshot and the queue view.
	NoWorkerSince map[int64]time.Time
	// Collapsed maps each request a newer one replaces to that one.
	Collapsed map[int64]int64
	// Expired maps each request to cancel, for having had no eligible
	// worker online for too long, to the reason.
	Expired map[int64]string
	// Next is when a decision that depends on the clock is next due;
	// zero: none is.
	Next time.Time
}

// due makes t the next wake-up if it is sooner.
func (d *Decision) due(t time.Time) {
	if d.Next.IsZero() || t.Before(d.Next) {
		d.Next = t
	}
}

func (d *Decision) wait(id int64, code drover.WaitCode, text string) {
	d.Waiting[id] = drover.WaitReason{Code: code, Text: text}
}

// Decide plans assignments for the snapshot at time now. It never assigns
// more builds to a worker than its free slots, more builds of a builder than
// its MaxBuilds, or a lock beyond its capacity or one a step waits for.
func Decide(s Snapshot, now time.Time) Decision {
	reqs := s.Requests
	if !slices.IsSortedFunc(reqs, queueOrder) { // the master's queue comes sorted
		reqs = slices.Clone(reqs)
		slices.SortStableFunc(reqs, queueOrder)
	}
	d := Decision{
		Waiting:       make(map[int64]drover.WaitReason, len(reqs)),
		NoWorkerSince: map[int64]time.Time{},
		Collapsed:     collapsed(reqs, s.Builders),
		Expired:       map[int64]string{},
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
		if u := workers[i].Until; u.After(now) {
			d.due(u)
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
	stepWaits := map[LockKey]bool{} // lock instances running builds' steps wait for
	for _, w := range s.StepLocks {
		for _, k := range locks.Keys(w.Uses, w.Worker) {
			stepWaits[k] = true
		}
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

	// A builder none of whose eligible workers can take a build now stays
	// so for the rest of the round (assignments only fill workers): its
	// later requests outside a group get the same verdict without another
	// pass over the workers, so a long queue costs a lookup per request.
	full := map[string]drover.WaitReason{}

	for _, r := range reqs {
		if _, ok := d.Collapsed[r.ID]; ok {
			continue
		}
		b, ok := s.Builders[r.Builder]
		if !ok {
			d.wait(r.ID, drover.WaitNoBuilder, fmt.Sprintf("builder %s is not in the config", r.Builder))
			continue
		}
		if b.MaxBuilds > 0 && running[b.Name] >= b.MaxBuilds {
			d.wait(r.ID, drover.WaitMaxBuilds, fmt.Sprintf("builder at its max_builds (%d running)", running[b.Name]))
			continue
		}
		if v, ok := full[b.Name]; ok && r.Group == "" {
			d.Waiting[r.ID] = v
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
			if w.Downtime != "" || !w.Availability.TakesWork() {
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
		var v drover.WaitReason
		switch {
		case len(online) == 0:
			v = drover.WaitReason{Code: drover.WaitNoWorker, Text: "no eligible worker online"}
		case len(free) == 0 && len(unavailable) == len(online):
			v = drover.WaitReason{Code: drover.WaitUnavailable, Text: "every eligible worker is unavailable: " + strings.Join(unavailable, ", ")}
		case len(free) == 0 && partOfGroup > 0:
			v = drover.WaitReason{Code: drover.WaitShardBusy,
				Text: fmt.Sprintf("the %d eligible workers not already running a part of this step are busy", len(online)-len(unavailable)-partOfGroup)}
		case len(free) == 0:
			v = drover.WaitReason{Code: drover.WaitBusy, Text: fmt.Sprintf("all %d eligible workers busy", len(online)-len(unavailable))}
		}
		if v.Code != "" {
			d.Waiting[r.ID] = v
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
					d.due(r.Submitted.Add(s.ReluctantAfter))
				}
				d.wait(r.ID, drover.WaitReluctant, msg)
				continue
			}
		}
		sort.SliceStable(candidates, func(i, j int) bool { return better(candidates[i], candidates[j], b.Name) })
		var chosen *Worker
		var blocker string
		for _, w := range candidates {
			keys := locks.Keys(b.Locks, w.Name)
			if k, ok := firstOf(keys, stepWaits); ok {
				if blocker == "" {
					blocker = fmt.Sprintf("waiting for lock %s, which a running build's step is queued for", describeKey(k))
				}
				continue
			}
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
			d.wait(r.ID, drover.WaitLock, blocker)
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
	d.expire(reqs, s, now)
	return d
}

// expire keeps since when each request has had no eligible worker online
// and picks those that have waited so past their builder's expire_after.
func (d *Decision) expire(reqs []Request, s Snapshot, now time.Time) {
	for _, r := range reqs {
		if d.Waiting[r.ID].Code != drover.WaitNoWorker {
			continue
		}
		since, ok := s.NoWorkerSince[r.ID]
		if !ok {
			since = now
		}
		d.NoWorkerSince[r.ID] = since
		expire := s.ExpireAfter
		if b := s.Builders[r.Builder]; b != nil && b.ExpireAfter > 0 {
			expire = b.ExpireAfter
		}
		if expire <= 0 || s.Partial {
			continue
		}
		if now.Sub(since) < expire {
			d.due(since.Add(expire))
			continue
		}
		d.Expired[r.ID] = fmt.Sprintf("expired: no eligible worker online for %s", now.Sub(since).Round(time.Second))
		delete(d.Waiting, r.ID)
		delete(d.NoWorkerSince, r.ID)
	}
}

// collapsed picks, among requests, those a newer one replaces: collapsible
// requests of a builder that collapses, with the same repository and
// branch; the newest wins. It maps each dropped request to its
// replacement.
func collapsed(reqs []Request, builders map[string]*drover.Builder) map[int64]int64 {
	type key struct{ builder, repo, branch string }
	newest := map[key]Request{}
	isNewer := func(a, b Request) bool {
		if !a.Submitted.Equal(b.Submitted) {
			return a.Submitted.After(b.Submitted)
		}
		return a.ID > b.ID
	}
	eligible := func(r Request) bool {
		b, ok := builders[r.Builder]
		return ok && b.Collapse && r.Collapsible
	}
	for _, r := range reqs {
		if !eligible(r) {
			continue
		}
		k := key{r.Builder, r.Repository, r.Branch}
		if cur, ok := newest[k]; !ok || isNewer(r, cur) {
			newest[k] = r
		}
	}
	out := map[int64]int64{}
	for _, r := range reqs {
		if !eligible(r) {
			continue
		}
		if n := newest[key{r.Builder, r.Repository, r.Branch}]; n.ID != r.ID {
			out[r.ID] = n.ID
		}
	}
	return out
}

// firstOf returns the first of keys in set.
func firstOf(keys []LockKey, set map[LockKey]bool) (LockKey, bool) {
	for _, k := range keys {
		if set[k] {
			return k, true
		}
	}
	return LockKey{}, false
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
// "w1 is draining (1 build running)", "w2 is offline", "w3 is in downtime
// (config): Wed 08:00-10:00 UTC until 10:00".
func unavailableWhy(w *Worker) string {
	s := fmt.Sprintf("%s is %s", w.Name, w.Availability)
	if w.Downtime != "" {
		s = fmt.Sprintf("%s is in %s", w.Name, w.Downtime)
	}
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
