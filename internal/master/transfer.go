package master

import (
	"fmt"
	"path"
	"path/filepath"

	"github.com/drover-ci/drover"
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
