package api

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/drover-ci/drover"
)

// maxReasonBytes bounds an availability reason: it is one line on a page
// ("disk replaced, back tomorrow"), not a document.
const maxReasonBytes = 500

// availabilityAuto is the availability word that clears an operator's
// override, so that the worker's own setting applies again.
const availabilityAuto = "auto"

func (s *server) queue(w http.ResponseWriter, r *http.Request) error {
	q, err := s.b.Queue(r.Context())
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	writeJSON(w, http.StatusOK, nonNil(q))
	return nil
}

func (s *server) locks(w http.ResponseWriter, r *http.Request) error {
	ls := s.b.Locks()
	out := make([]drover.LockState, len(ls))
	for i, l := range ls {
		// Copy rather than patch the backend's slices: they may be shared
		// with the dispatcher.
		l.Holders = nonNil(l.Holders)
		l.Waiters = nonNil(l.Waiters)
		out[i] = l
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) setAvailability(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var body AvailabilityRequest
	if err := decodeBody(w, r, &body, false); err != nil {
		return err
	}
	a, reason, err := body.parse()
	if err != nil {
		return err
	}
	by := "operator"
	if id := callerTokenID(r.Context()); id != "" {
		by += " " + id
	}
	if err := s.b.SetAvailability(r.Context(), name, a, reason, by); err != nil {
		return fmt.Errorf("set availability of worker %q: %w", name, err)
	}
	shown := string(a)
	if a == "" {
		shown = availabilityAuto
	}
	s.log.Info("worker availability set", "worker", name, "availability", shown, "reason", reason, "by", by)
	wk, err := s.b.Reader().GetWorker(r.Context(), name)
	if err != nil {
		return fmt.Errorf("get worker %q: %w", name, err)
	}
	writeJSON(w, http.StatusOK, wk)
	return nil
}

// parse checks ar: its availability ("" when the override is to be
// cleared) and its reason, trimmed.
func (ar *AvailabilityRequest) parse() (drover.Availability, string, error) {
	reason := strings.TrimSpace(ar.Reason)
	if len(reason) > maxReasonBytes {
		return "", "", drover.Errorf(drover.Invalid, "reason is %d bytes long: at most %d", len(reason), maxReasonBytes)
	}
	if !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl) {
		return "", "", drover.Errorf(drover.Invalid, "reason: want one line of text, without control characters")
	}
	word := strings.TrimSpace(ar.Availability)
	if word == "" || word == availabilityAuto {
		return "", reason, nil
	}
	a, err := drover.ParseAvailability(word)
	if err != nil {
		return "", "", drover.Errorf(drover.Invalid, "unknown availability %q (want eager, reluctant, draining, offline or auto)", word)
	}
	return a, reason, nil
}
