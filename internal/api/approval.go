package api

import (
	"fmt"
	"net/http"

	"github.com/drover-ci/drover"
)

// approveWorker and rejectWorker record an admin's verdict on a worker
// held by drover.master(approve_workers = True), and answer with the
// worker as it now is. Either may be repeated, and either may reverse the
// other: an admin who rejected a machine by mistake approves it.
func (s *server) approveWorker(w http.ResponseWriter, r *http.Request) error {
	return s.setApproval(w, r, drover.ApprovalApproved)
}

func (s *server) rejectWorker(w http.ResponseWriter, r *http.Request) error {
	return s.setApproval(w, r, drover.ApprovalRejected)
}

func (s *server) setApproval(w http.ResponseWriter, r *http.Request, approval string) error {
	name := r.PathValue("name")
	by := "admin"
	if id := callerTokenID(r.Context()); id != "" {
		by += " " + id
	}
	if err := s.b.SetApproval(r.Context(), name, approval, by); err != nil {
		return fmt.Errorf("set approval of worker %q: %w", name, err)
	}
	s.log.Info("worker approval set", "worker", name, "approval", approval, "by", by)
	wk, err := s.b.Reader().GetWorker(r.Context(), name)
	if err != nil {
		return fmt.Errorf("get worker %q: %w", name, err)
	}
	writeJSON(w, http.StatusOK, wk)
	return nil
}
