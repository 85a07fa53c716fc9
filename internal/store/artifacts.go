package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
)

const artifactColumns = `id, build_id, step, path, size, sha256, created`

func scanArtifact(r scanner) (drover.Artifact, error) {
	var a drover.Artifact
	var created dbTime
	err := r.Scan(&a.ID, &a.BuildID, &a.StepIndex, &a.Path, &a.Size, &a.SHA256, &created)
	a.Created = time.Time(created)
	return a, err
}

// AddArtifact stores the index entry of an uploaded file and sets a.ID.
// A file stored again at the same path of the same build (an upload step
// run again, or resumed) replaces the entry. It fails with NotFound when
// the build does not exist.
func (s *DB) AddArtifact(ctx context.Context, a *drover.Artifact) error {
	if a == nil || a.Path == "" || a.BuildID == 0 {
		return drover.Errorf(drover.Invalid, "add artifact: an artifact needs a build and a path")
	}
	w, err := s.writer()
	if err != nil {
		return err
	}
	var id int64
	err = w.QueryRowContext(ctx, s.q(`INSERT INTO artifacts (build_id, step, path, size, sha256, created)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (build_id, path) DO UPDATE SET step = excluded.step, size = excluded.size,
			sha256 = excluded.sha256, created = excluded.created
		RETURNING id`),
		a.BuildID, a.StepIndex, a.Path, a.Size, a.SHA256, dbTime(a.Created)).Scan(&id)
	if s.d.isForeignKey(err) {
		return drover.Errorf(drover.NotFound, "add artifact %q: build %d not found", a.Path, a.BuildID)
	}
	if err != nil {
		return fmt.Errorf("add artifact %q of build %d: %w", a.Path, a.BuildID, err)
	}
	a.ID = id
	return nil
}

// GetArtifact returns artifact id, or NotFound.
func (s *DB) GetArtifact(ctx context.Context, id int64) (*drover.Artifact, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	a, err := scanArtifact(r.QueryRowContext(ctx, s.q(`SELECT `+artifactColumns+` FROM artifacts WHERE id = ?`), id))
	if err == sql.ErrNoRows {
		return nil, drover.Errorf(drover.NotFound, "artifact %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get artifact %d: %w", id, err)
	}
	return &a, nil
}

// ListArtifacts returns the artifacts of a build by path.
func (s *DB) ListArtifacts(ctx context.Context, buildID int64) ([]drover.Artifact, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	as, err := collect(ctx, r, s.q(`SELECT `+artifactColumns+` FROM artifacts WHERE build_id = ? ORDER BY path`),
		[]any{buildID}, scanArtifact)
	if err != nil {
		return nil, fmt.Errorf("list artifacts of build %d: %w", buildID, err)
	}
	return as, nil
}

// ExpiredArtifacts returns up to limit (default 100) artifacts created
// before t, oldest first.
func (s *DB) ExpiredArtifacts(ctx context.Context, before time.Time, limit int) ([]drover.Artifact, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	as, err := collect(ctx, r, s.q(`SELECT `+artifactColumns+` FROM artifacts WHERE created < ? ORDER BY created, id LIMIT ?`),
		[]any{dbTime(before), limitOr(limit, defaultLimit)}, scanArtifact)
	if err != nil {
		return nil, fmt.Errorf("list artifacts expired before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return as, nil
}

// DeleteArtifacts removes the index entries of artifacts whose bytes are
// gone. IDs that are not stored are ignored.
func (s *DB) DeleteArtifacts(ctx context.Context, ids []int64) error {
	return s.deleteByID(ctx, "artifacts", ids)
}
