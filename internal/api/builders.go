package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

func (s *server) version(w http.ResponseWriter, r *http.Request) error {
	site, err := s.b.Site(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, VersionInfo{Version: s.opts.Version, Protocol: workerproto.ProtocolVersion, Master: site.This})
	return nil
}

func (s *server) site(w http.ResponseWriter, r *http.Request) error {
	site, err := s.b.Site(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, site)
	return nil
}

func (s *server) listBuilders(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	st := s.b.Reader()
	// One query for the whole queue rather than one per builder.
	pending, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return fmt.Errorf("list pending requests: %w", err)
	}
	waiting := make(map[string]int)
	for _, req := range pending {
		waiting[req.Builder]++
	}
	builders := s.b.Builders()
	out := make([]BuilderSummary, 0, len(builders))
	for _, b := range builders {
		last, err := st.ListBuilds(ctx, drover.BuildFilter{Builder: b.Name, Limit: 1})
		if err != nil {
			return fmt.Errorf("last build of %s: %w", b.Name, err)
		}
		sum := BuilderSummary{Builder: b, Pending: waiting[b.Name]}
		if len(last) > 0 {
			sum.LastBuild = &last[0]
		}
		out = append(out, sum)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// builder finds the builder named in the path.
func (s *server) builder(r *http.Request) (*drover.Builder, error) {
	name := r.PathValue("name")
	b, ok := s.b.Builder(name)
	if !ok {
		return nil, drover.Errorf(drover.NotFound, "no builder %q in the config in force", name)
	}
	return b, nil
}

func (s *server) getBuilder(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	b, err := s.builder(r)
	if err != nil {
		return err
	}
	st := s.b.Reader()
	pending, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending, Builder: b.Name})
	if err != nil {
		return fmt.Errorf("list pending requests of %s: %w", b.Name, err)
	}
	recent, err := st.ListBuilds(ctx, drover.BuildFilter{Builder: b.Name, Limit: recentBuilds})
	if err != nil {
		return fmt.Errorf("list builds of %s: %w", b.Name, err)
	}
	sum := BuilderSummary{Builder: *b, Pending: len(pending), RecentBuilds: nonNil(recent)}
	if len(recent) > 0 {
		sum.LastBuild = &recent[0]
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

func (s *server) eligibility(w http.ResponseWriter, r *http.Request) error {
	b, err := s.builder(r)
	if err != nil {
		return err
	}
	el, err := s.b.Eligibility(r.Context(), b.Name)
	if err != nil {
		return fmt.Errorf("eligibility for %s: %w", b.Name, err)
	}
	writeJSON(w, http.StatusOK, nonNil(el))
	return nil
}

func (s *server) force(w http.ResponseWriter, r *http.Request) error {
	b, err := s.builder(r)
	if err != nil {
		return err
	}
	var body ForceRequest
	if err := decodeBody(w, r, &body, true); err != nil {
		return err
	}
	req, err := body.buildRequest(b.Name, callerRole(r.Context()))
	if err != nil {
		return err
	}
	if err := s.b.Force(r.Context(), req); err != nil {
		return fmt.Errorf("force %s: %w", b.Name, err)
	}
	s.log.Info("build forced", "builder", b.Name, "request", req.ID, "role", callerRole(r.Context()), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, req)
	return nil
}

// buildRequest checks f and turns it into a request for builder, forced by
// a caller with role.
func (f *ForceRequest) buildRequest(builder string, role drover.Role) (*drover.BuildRequest, error) {
	for k := range f.Properties {
		if strings.TrimSpace(k) == "" {
			return nil, drover.Errorf(drover.Invalid, "properties: empty property name")
		}
	}
	reason := strings.TrimSpace(f.Reason)
	if reason == "" {
		reason = fmt.Sprintf("forced by %s via API", role)
	}
	return &drover.BuildRequest{
		Builder: builder,
		Source: drover.SourceStamp{
			Repository: strings.TrimSpace(f.Repository),
			Branch:     strings.TrimSpace(f.Branch),
			Revision:   strings.TrimSpace(f.Revision),
		},
		Properties: f.Properties,
		Priority:   f.Priority,
		Reason:     reason,
	}, nil
}
