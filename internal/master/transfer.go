package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Where the master keeps transferred files, under its directory.
const (
	artifactsDirName = "artifacts" // DIR/artifacts/<build id>/<path>: uploads
	filesDirName     = "files"     // DIR/files: what downloads may read as "files/..."
)

// ArtifactDir is where a master in dir keeps uploaded artifacts.
func ArtifactDir(dir string) string { return filepath.Join(dir, artifactsDirName) }

// FilesDir is the directory a master in dir lets download steps read.
func FilesDir(dir string) string { return filepath.Join(dir, filesDirName) }

// transferFor makes the Transfer of an upload or download step, its
// paths interpolated; the worker's path is relative to the step's workdir,
// as a shell step's files are.
func transferFor(spec *drover.StepSpec, workdir string, props drover.Properties, facts drover.Facts) *pb.Transfer {
	t := &pb.Transfer{MaxBytes: spec.MaxBytes}
	src, dest := interpolate(spec.Src, props, facts), interpolate(spec.Dest, props, facts)
	switch spec.Kind {
	case drover.StepUpload:
		t.Kind, t.WorkerPath, t.MasterPath = pb.TransferKind_TRANSFER_KIND_UPLOAD, path.Join(workdir, src), dest
	case drover.StepDownload:
		t.Kind, t.WorkerPath, t.MasterPath = pb.TransferKind_TRANSFER_KIND_DOWNLOAD, path.Join(workdir, dest), src
	default:
		return nil
	}
	return t
}

// transferHeader is the log's first line for a transfer step.
func transferHeader(run *pb.RunCommand, worker string) string {
	t := run.GetTransfer()
	if t.GetKind() == pb.TransferKind_TRANSFER_KIND_DOWNLOAD {
		return fmt.Sprintf("$ download %s from the master to %s/%s on %s (at most %d bytes)\n\n", t.GetMasterPath(), run.GetBuilder(), t.GetWorkerPath(), worker, t.GetMaxBytes())
	}
	return fmt.Sprintf("$ upload %s/%s on %s to the master as artifacts %s (at most %d bytes)\n\n", run.GetBuilder(), t.GetWorkerPath(), worker, t.GetMasterPath(), t.GetMaxBytes())
}

var (
	_ workerhub.TransferHandler = (*Master)(nil)
	_ api.ArtifactFiles         = (*Master)(nil)
)

// TransferCommand implements workerhub.TransferHandler: a worker may
// transfer files for a command the master runs on it now.
func (m *Master) TransferCommand(worker, commandID string) (*pb.RunCommand, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[commandID]
	if !ok || c.worker != worker {
		return nil, false
	}
	return c.run, true
}

// ArtifactPath returns the file holding artifact a.
func (m *Master) ArtifactPath(a drover.Artifact) (string, error) {
	return workerhub.ArtifactFile(ArtifactDir(m.data), a.BuildID, a.Path)
}

// expireArtifacts removes artifacts older than the config's horizon:
// their files first, then their index entries, so that a crash between
// the two leaves index rows pointing at nothing, which the next pass
// deletes, never orphan files.
func (m *Master) expireArtifacts(ctx context.Context) {
	m.expirePartials()
	horizon := m.config().Master.ArtifactHorizon
	if horizon <= 0 {
		return
	}
	for {
		old, err := m.store.ExpiredArtifacts(ctx, m.now().Add(-horizon), 500)
		if err != nil || len(old) == 0 {
			if err != nil && ctx.Err() == nil {
				m.logger.Error("find expired artifacts", "err", err)
			}
			return
		}
		ids := make([]int64, 0, len(old))
		for _, a := range old {
			p, err := m.ArtifactPath(a)
			if err == nil {
				err = os.Remove(p)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.logger.Error("delete expired artifact", "artifact", a.ID, "err", err)
				return
			}
			removeEmptyDirs(filepath.Dir(p), ArtifactDir(m.data))
			ids = append(ids, a.ID)
		}
		if err := m.store.DeleteArtifacts(ctx, ids); err != nil {
			m.logger.Error("delete expired artifact index", "err", err)
			return
		}
		m.logger.Info("expired artifacts", "count", len(ids))
	}
}

// partialHorizon is how long the partial file of an upload that stopped
// waits for its worker to resume it: longer than any worker grace period.
const partialHorizon = 24 * time.Hour

// expirePartials removes the partial files of uploads abandoned for
// longer than partialHorizon.
func (m *Master) expirePartials() {
	dir := filepath.Join(ArtifactDir(m.data), ".partial")
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.logger.Error("list partial uploads", "err", err)
		}
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || m.now().Sub(info.ModTime()) < partialHorizon {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.logger.Error("remove an abandoned partial upload", "file", e.Name(), "err", err)
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

// OpenArtifact implements api.ArtifactFiles.
func (m *Master) OpenArtifact(ctx context.Context, id int64) (*drover.Artifact, *os.File, error) {
	a, err := m.store.GetArtifact(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	p, err := m.ArtifactPath(*a)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, drover.Errorf(drover.NotFound, "artifact %d (%s): its file is gone", id, a.Path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open artifact %d: %w", id, err)
	}
	return a, f, nil
}

// recoveredTransfer is the Transfer of a re-attached command of step
// spec, nil unless it is an upload or download step.
func recoveredTransfer(spec *drover.StepSpec, props drover.Properties) *pb.Transfer {
	workdir := spec.Workdir
	if workdir == "" {
		workdir = defaultWorkdir
	} else {
		workdir = interpolate(workdir, props, nil)
	}
	return transferFor(spec, workdir, props, nil)
}
