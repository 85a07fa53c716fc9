package web

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// queuePage is the data of the queue page: the pending requests in the
// order the dispatcher serves them, each with why it waits.
type queuePage struct {
	Entries []drover.QueueEntry
	// Err says why the master could not explain the waits; the page then
	// lists the pending requests from the store without reasons.
	Err string
}

func (s *server) handleQueue(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var p queuePage
	entries, err := s.b.Queue(ctx)
	if err == nil {
		p.Entries = entries
		s.render(w, r, http.StatusOK, "queue", "queue", "Queue", p)
		return
	}
	// The reasons are an explanation; the queue itself is in the store.
	// Show it even when the master cannot say why each request waits.
	s.logger.Warn("queue explanations", "err", err)
	p.Err = drover.Message(err)
	reqs, lerr := s.b.Reader().ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if lerr != nil {
		s.fail(w, r, fmt.Errorf("list pending requests: %w", lerr))
		return
	}
	for _, req := range reqs {
		p.Entries = append(p.Entries, drover.QueueEntry{Request: req})
	}
	s.render(w, r, http.StatusOK, "queue", "queue", "Queue", p)
}

// handleRequests sends the old pending-requests page to the queue page,
// which shows the same requests with why they wait.
func (s *server) handleRequests(w http.ResponseWriter, r *http.Request) {
	target := "/queue"
	if q := r.URL.RawQuery; q != "" {
		target += "?" + q
	}
	http.Redirect(w, r, target, http.StatusMovedPermanently)
}

// lockView is one lock instance as the locks page shows it.
type lockView struct {
	drover.LockState
	Used int // slots taken: an exclusive holder takes them all
}

// lockUsed counts the slots l's holders take, never more than l.Max.
func lockUsed(l drover.LockState) int {
	used := 0
	for _, h := range l.Holders {
		if h.Exclusive {
			used += l.Max
		} else {
			used++
		}
	}
	return min(used, max(l.Max, 0))
}

func (s *server) handleLocks(w http.ResponseWriter, r *http.Request) {
	ls := s.b.Locks()
	views := make([]lockView, 0, len(ls))
	for _, l := range ls {
		views = append(views, lockView{LockState: l, Used: lockUsed(l)})
	}
	s.render(w, r, http.StatusOK, "locks", "locks", "Locks", views)
}

// buildLock is a lock a build holds or waits for, for the build page.
type buildLock struct {
	Lock    lockView
	Holding bool // false: waiting
	drover.LockHolder
}

// buildLocks returns the locks build id holds, then those it waits for.
func buildLocks(ls []drover.LockState, id int64) []buildLock {
	var held, waiting []buildLock
	for _, l := range ls {
		v := lockView{LockState: l, Used: lockUsed(l)}
		for _, h := range l.Holders {
			if h.BuildID == id {
				held = append(held, buildLock{Lock: v, Holding: true, LockHolder: h})
			}
		}
		for _, h := range l.Waiters {
			if h.BuildID == id {
				waiting = append(waiting, buildLock{Lock: v, LockHolder: h})
			}
		}
	}
	return append(held, waiting...)
}

// availView is a worker's availability as the pages show it: the one
// dispatch applies, why and who set it, and the worker's own when an
// operator's override or a downtime hides it.
type availView struct {
	Effective drover.Availability
	Reason    string
	By        string
	// Overridden is set when an operator's setting or a downtime applies;
	// Own and OwnReason are then what the worker itself reports.
	Overridden bool
	Own        drover.Availability
	OwnReason  string
	Since      time.Time // when the operator set it; zero for a downtime
	// Downtime is the downtime the worker is in, which wins over the
	// operator's setting too: Operator then describes that setting.
	Downtime *drover.Downtime
	Operator string
}

func availabilityOf(w drover.Worker) availView {
	a, reason, by := w.Effective()
	v := availView{Effective: a, Reason: reason, By: by, Downtime: w.Downtime}
	if w.Override != nil || w.Downtime != nil {
		v.Overridden = true
		v.Own = w.Availability
		if v.Own == "" {
			v.Own = drover.Eager
		}
		v.OwnReason = w.AvailabilityReason
	}
	if o := w.Override; o != nil {
		if w.Downtime == nil {
			v.Since = o.At
		} else {
			v.Operator = fmt.Sprintf("%s, set by %s", o.Availability, o.By)
			if o.Reason != "" {
				v.Operator += ": " + o.Reason
			}
		}
	}
	return v
}

// availabilityChoices are the states the worker page's form offers, with
// "auto" first: it clears the operator's setting.
func availabilityChoices() []string {
	return []string{"auto", string(drover.Eager), string(drover.Reluctant), string(drover.Draining), string(drover.Offline)}
}

// shellQuote quotes s for a POSIX shell when it needs it, so that a
// command shown on a page can be pasted as is.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@=+,", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
