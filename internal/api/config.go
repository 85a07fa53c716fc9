package api

import (
	"fmt"
	"net/http"
)

// getConfig answers with the config in force and how the last load went,
// so that an operator can see whether the file on disk is the one running.
func (s *server) getConfig(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.b.ConfigStatus())
	return nil
}

// reloadConfig asks the master to load its config file again. A refused
// config is a 400 whose message carries the loader's file:line errors; the
// config in force stays, and its status records the refusal.
func (s *server) reloadConfig(w http.ResponseWriter, r *http.Request) error {
	by := "admin"
	if id := callerTokenID(r.Context()); id != "" {
		by += " " + id
	}
	if err := s.b.Reload(r.Context()); err != nil {
		s.log.Warn("config reload refused", "by", by, "err", err)
		return fmt.Errorf("reload config: %w", err)
	}
	st := s.b.ConfigStatus()
	s.log.Info("config reloaded", "by", by, "hash", st.Hash, "builders", st.Builders)
	writeJSON(w, http.StatusOK, st)
	return nil
}
