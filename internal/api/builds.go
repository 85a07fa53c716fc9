package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/drover-ci/drover"
)

func (s *server) listBuilds(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := drover.BuildFilter{Builder: q.Get("builder"), Worker: q.Get("worker")}
	switch st := drover.BuildState(q.Get("state")); st {
	case "", drover.BuildRunning, drover.BuildFinished:
		f.State = st
	default:
		return drover.Errorf(drover.Invalid, "query parameter state=%q: want running or finished", st)
	}
	limit, err := queryInt(r, "limit", maxLimit)
	if err != nil {
		return err
	}
	before, err := queryInt(r, "before", 0)
	if err != nil {
		return err
	}
	f.Limit, f.BeforeID = int(limit), before
	builds, err := s.b.Reader().ListBuilds(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list builds: %w", err)
	}
	writeJSON(w, http.StatusOK, nonNil(builds))
	return nil
}

func (s *server) getBuild(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	b, err := s.b.Reader().GetBuild(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get build %d: %w", id, err)
	}
	return s.writeBuildDetail(w, r, b)
}

func (s *server) getBuildByNumber(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	num, err := strconv.Atoi(r.PathValue("number"))
	if err != nil || num <= 0 {
		return drover.Errorf(drover.Invalid, "build number %q: want a positive integer", r.PathValue("number"))
	}
	b, err := s.b.Reader().GetBuildByNumber(r.Context(), name, num)
	if err != nil {
		return fmt.Errorf("get build %s #%d: %w", name, num, err)
	}
	return s.writeBuildDetail(w, r, b)
}

func (s *server) writeBuildDetail(w http.ResponseWriter, r *http.Request, b *drover.Build) error {
	ctx := r.Context()
	st := s.b.Reader()
	steps, err := st.ListSteps(ctx, b.ID)
	if err != nil {
		return fmt.Errorf("list steps of build %d: %w", b.ID, err)
	}
	logs, err := st.ListLogs(ctx, b.ID)
	if err != nil {
		return fmt.Errorf("list logs of build %d: %w", b.ID, err)
	}
	writeJSON(w, http.StatusOK, BuildDetail{Build: *b, Steps: nonNil(steps), Logs: nonNil(logs)})
	return nil
}

func (s *server) listSteps(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	st := s.b.Reader()
	// A missing build is a 404, not an empty list.
	if _, err := st.GetBuild(r.Context(), id); err != nil {
		return fmt.Errorf("get build %d: %w", id, err)
	}
	steps, err := st.ListSteps(r.Context(), id)
	if err != nil {
		return fmt.Errorf("list steps of build %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, nonNil(steps))
	return nil
}

func (s *server) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	reason, err := cancelReason(w, r)
	if err != nil {
		return err
	}
	if err := s.b.CancelBuild(r.Context(), id, reason); err != nil {
		return fmt.Errorf("cancel build %d: %w", id, err)
	}
	s.log.Info("build cancelled", "build", id, "role", callerRole(r.Context()), "remote", r.RemoteAddr)
	b, err := s.b.Reader().GetBuild(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get build %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// cancelReason reads the optional {"reason"} body of a cancel endpoint.
func cancelReason(w http.ResponseWriter, r *http.Request) (string, error) {
	var body CancelRequestBody
	if err := decodeBody(w, r, &body, true); err != nil {
		return "", err
	}
	if reason := strings.TrimSpace(body.Reason); reason != "" {
		return reason, nil
	}
	return fmt.Sprintf("cancelled by %s via API", callerRole(r.Context())), nil
}

func (s *server) listRequests(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := drover.RequestFilter{Builder: q.Get("builder")}
	switch st := drover.RequestState(q.Get("state")); st {
	case "", drover.RequestPending, drover.RequestClaimed, drover.RequestFinished, drover.RequestCancelled:
		f.State = st
	default:
		return drover.Errorf(drover.Invalid, "query parameter state=%q: want pending, claimed, finished or cancelled", st)
	}
	limit, err := queryInt(r, "limit", maxLimit)
	if err != nil {
		return err
	}
	f.Limit = int(limit)
	reqs, err := s.b.Reader().ListRequests(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list requests: %w", err)
	}
	writeJSON(w, http.StatusOK, nonNil(reqs))
	return nil
}

func (s *server) getRequest(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	st := s.b.Reader()
	req, err := st.GetRequest(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get request %d: %w", id, err)
	}
	builds, err := st.ListBuilds(r.Context(), drover.BuildFilter{RequestID: id})
	if err != nil {
		return fmt.Errorf("list builds of request %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, RequestDetail{Request: *req, Builds: nonNil(builds)})
	return nil
}

func (s *server) cancelRequest(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	reason, err := cancelReason(w, r)
	if err != nil {
		return err
	}
	if err := s.b.CancelRequest(r.Context(), id, reason); err != nil {
		return fmt.Errorf("cancel request %d: %w", id, err)
	}
	s.log.Info("request cancelled", "request", id, "role", callerRole(r.Context()), "remote", r.RemoteAddr)
	req, err := s.b.Reader().GetRequest(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get request %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}
