package api

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"

	"github.com/drover-ci/drover"
)

// ArtifactFiles is implemented by a Backend that keeps the bytes of
// uploaded artifacts (the master); without it, artifacts are listed but
// not served.
type ArtifactFiles interface {
	// OpenArtifact returns artifact id and its file, which the caller
	// closes. NotFound when either is gone (expired).
	OpenArtifact(ctx context.Context, id int64) (*drover.Artifact, *os.File, error)
}

// listArtifacts serves GET /api/v1/builds/{id}/artifacts.
func (s *server) listArtifacts(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	st := s.b.Reader()
	// A missing build is a 404, not an empty list.
	if _, err := st.GetBuild(r.Context(), id); err != nil {
		return fmt.Errorf("get build %d: %w", id, err)
	}
	as, err := st.ListArtifacts(r.Context(), id)
	if err != nil {
		return fmt.Errorf("list artifacts of build %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, nonNil(as))
	return nil
}

// getArtifact serves GET /api/v1/artifacts/{id}: the file itself, as an
// attachment named after its last path element, with ranges.
func (s *server) getArtifact(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	af, ok := s.b.(ArtifactFiles)
	if !ok {
		return drover.Errorf(drover.NotFound, "this master serves no artifacts")
	}
	a, f, err := af.OpenArtifact(r.Context(), id)
	if err != nil {
		return fmt.Errorf("artifact %d: %w", id, err)
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(a.Path)}))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", `"`+a.SHA256+`"`)
	h.Set("X-Drover-Sha256", a.SHA256)
	http.ServeContent(w, r, "", a.Created, f)
	return nil
}

// Artifacts returns the artifacts of build id.
func (c *Client) Artifacts(ctx context.Context, buildID int64) ([]drover.Artifact, error) {
	var out []drover.Artifact
	return out, c.call(ctx, http.MethodGet, "/builds/"+strconv.FormatInt(buildID, 10)+"/artifacts", nil, nil, &out)
}

// DownloadArtifact copies artifact id's bytes to w.
func (c *Client) DownloadArtifact(ctx context.Context, id int64, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, "/artifacts/"+strconv.FormatInt(id, 10), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("artifact %d: %w", id, err)
	}
	return nil
}
