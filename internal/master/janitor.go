package master

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/workerhub"
)

// janitorStore is what the janitor expires from the store.
type janitorStore interface {
	ExpiredLogs(ctx context.Context, before time.Time, limit int) ([]drover.Log, error)
	DeleteLogs(ctx context.Context, ids []int64) error
	ExpiredArtifacts(ctx context.Context, before time.Time, limit int) ([]drover.Artifact, error)
	DeleteArtifacts(ctx context.Context, ids []int64) error
}

// Janitor timings.
const (
	// janitorInterval is how often expired logs and artifacts are removed.
	janitorInterval = time.Hour
	// janitorBatch is how many are removed per store call.
	janitorBatch = 500
	// janitorTimeout bounds each store call of a pass.
	janitorTimeout = time.Minute
	// partialHorizon is how long the partial file of an upload that
	// stopped waits for its worker to resume it: longer than any worker
	// grace period.
	partialHorizon = 24 * time.Hour
)

// janitor enforces the horizons: it removes the logs and artifacts of
// builds older than the config says, files first, then their index
// entries, so that a crash between the two leaves index rows pointing at
// nothing, which the next pass deletes, never orphan files. In a site
// only the leader does it.
type janitor struct {
	store     janitorStore
	logs      *logstore.Dir
	artifacts string // the artifact directory
	cfg       func() *config.Config
	leads     func() bool
	now       func() time.Time
	logger    *slog.Logger
}

// loop runs a pass at once and every janitorInterval until ctx is done.
func (j *janitor) loop(ctx context.Context) {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		if j.leads() {
			j.expireLogs(ctx)
			j.expireArtifacts(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// call runs one store call of a pass, bounded by janitorTimeout.
func (j *janitor) call(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, janitorTimeout)
	defer cancel()
	return f(ctx)
}

func (j *janitor) expireLogs(ctx context.Context) {
	horizon := j.cfg().Master.LogHorizon
	if horizon <= 0 {
		return
	}
	for {
		var old []drover.Log
		err := j.call(ctx, func(ctx context.Context) (err error) {
			old, err = j.store.ExpiredLogs(ctx, j.now().Add(-horizon), janitorBatch)
			return err
		})
		if err != nil || len(old) == 0 {
			if err != nil && ctx.Err() == nil {
				j.logger.Error("find expired logs", "err", err)
			}
			return
		}
		ids := make([]int64, len(old))
		for i, l := range old {
			ids[i] = l.ID
		}
		if err := j.logs.Delete(ids...); err != nil {
			j.logger.Error("delete expired logs", "err", err)
			return
		}
		if err := j.call(ctx, func(ctx context.Context) error { return j.store.DeleteLogs(ctx, ids) }); err != nil {
			j.logger.Error("delete expired log index", "err", err)
			return
		}
		j.logger.Info("expired logs", "count", len(ids))
	}
}

func (j *janitor) expireArtifacts(ctx context.Context) {
	j.expirePartials()
	horizon := j.cfg().Master.ArtifactHorizon
	if horizon <= 0 {
		return
	}
	for {
		var old []drover.Artifact
		err := j.call(ctx, func(ctx context.Context) (err error) {
			old, err = j.store.ExpiredArtifacts(ctx, j.now().Add(-horizon), janitorBatch)
			return err
		})
		if err != nil || len(old) == 0 {
			if err != nil && ctx.Err() == nil {
				j.logger.Error("find expired artifacts", "err", err)
			}
			return
		}
		ids := make([]int64, 0, len(old))
		for _, a := range old {
			p, err := workerhub.ArtifactFile(j.artifacts, a.BuildID, a.Path)
			if err == nil {
				err = os.Remove(p)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				j.logger.Error("delete expired artifact", "artifact", a.ID, "err", err)
				return
			}
			removeEmptyDirs(filepath.Dir(p), j.artifacts)
			ids = append(ids, a.ID)
		}
		if err := j.call(ctx, func(ctx context.Context) error { return j.store.DeleteArtifacts(ctx, ids) }); err != nil {
			j.logger.Error("delete expired artifact index", "err", err)
			return
		}
		j.logger.Info("expired artifacts", "count", len(ids))
	}
}

// expirePartials removes the partial files of uploads abandoned for
// longer than partialHorizon.
func (j *janitor) expirePartials() {
	dir := filepath.Join(j.artifacts, ".partial")
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			j.logger.Error("list partial uploads", "err", err)
		}
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || j.now().Sub(info.ModTime()) < partialHorizon {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			j.logger.Error("remove an abandoned partial upload", "file", e.Name(), "err", err)
		}
	}
}

// removeEmptyDirs removes dir and its parents up to, not including, top,
// while they are empty.
func removeEmptyDirs(dir, top string) {
	for dir != top && within(top, dir) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != "." && filepath.IsLocal(rel)
}
