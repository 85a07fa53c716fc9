package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

func (s *server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	ws, err := s.b.Reader().ListWorkers(r.Context())
	if err != nil {
		return fmt.Errorf("list workers: %w", err)
	}
	writeJSON(w, http.StatusOK, nonNil(ws))
	return nil
}

func (s *server) getWorker(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	st := s.b.Reader()
	wk, err := st.GetWorker(r.Context(), name)
	if err != nil {
		return fmt.Errorf("get worker %q: %w", name, err)
	}
	builds, err := st.ListBuilds(r.Context(), drover.BuildFilter{Worker: name, Limit: recentBuilds})
	if err != nil {
		return fmt.Errorf("list builds on worker %q: %w", name, err)
	}
	writeJSON(w, http.StatusOK, WorkerDetail{Worker: *wk, Builds: nonNil(builds)})
	return nil
}

func (s *server) listChanges(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryInt(r, "limit", maxLimit)
	if err != nil {
		return err
	}
	cs, err := s.b.Reader().ListChanges(r.Context(), drover.ChangeFilter{Limit: int(limit)})
	if err != nil {
		return fmt.Errorf("list changes: %w", err)
	}
	writeJSON(w, http.StatusOK, nonNil(cs))
	return nil
}

func (s *server) addChange(w http.ResponseWriter, r *http.Request) error {
	var body ChangeRequest
	if err := decodeBody(w, r, &body, false); err != nil {
		return err
	}
	c, err := body.change(time.Now())
	if err != nil {
		return err
	}
	if err := s.b.AddChange(r.Context(), c); err != nil {
		return fmt.Errorf("add change: %w", err)
	}
	s.log.Info("change added", "change", c.ID, "repository", c.Repository, "branch", c.Branch, "revision", c.Revision, "role", callerRole(r.Context()))
	writeJSON(w, http.StatusCreated, c)
	return nil
}

// change checks cr and turns it into a change; now is When when unset.
func (cr *ChangeRequest) change(now time.Time) (*drover.Change, error) {
	c := &drover.Change{
		Repository: strings.TrimSpace(cr.Repository),
		Branch:     strings.TrimSpace(cr.Branch),
		Revision:   strings.TrimSpace(cr.Revision),
		Author:     cr.Author,
		Comments:   cr.Comments,
		Files:      cr.Files,
		Category:   cr.Category,
		Properties: cr.Properties,
		When:       cr.When,
	}
	if c.Revision == "" {
		return nil, drover.Errorf(drover.Invalid, "change: revision is required")
	}
	if c.Repository == "" && c.Branch == "" {
		return nil, drover.Errorf(drover.Invalid, "change: repository or branch is required, so that a scheduler can match it")
	}
	for k := range c.Properties {
		if strings.TrimSpace(k) == "" {
			return nil, drover.Errorf(drover.Invalid, "change: empty property name")
		}
	}
	if c.When.IsZero() {
		c.When = now
	}
	c.When = c.When.UTC()
	return c, nil
}
