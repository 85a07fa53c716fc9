package workerhub

// File transfers, master side: the Upload, UploadStatus and Download RPCs.
//
// Each call names the worker, its token and a command id (TransferAuth).
// The token is checked as a hello's is; the command must be one the
// master runs on that worker now (the command table), and it decides what
// the call may touch:
//
//   - a transfer command (RunCommand.transfer) of kind upload stores files
//     under its master_path, up to its max_bytes;
//   - any other running command may upload (`drover step upload`) under
//     the artifact path it names, up to DefaultUploadMax;
//   - a transfer command of kind download reads its master_path:
//     "artifact:<path>" of the command's build, or "files/<path>" under
//     the master's files directory.
//
// Uploaded files are written to ArtifactDir/.partial/, kept there across
// broken streams so that UploadStatus can tell a retry where to resume,
// checked against the worker's sha256 and renamed to
// ArtifactDir/<build id>/<path>, then indexed with store.AddArtifact.
// Every path is slash-separated, relative, cleaned and without ".."; the
// directories written to are resolved and must stay under the build's
// artifact directory, so no symlink leads a write outside.
//
// A download keeps no state here: a worker that retries after a broken
// stream says which files it has whole and how much of the next one, and
// Download sends the rest (see pb.DownloadRequest).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// DefaultUploadMax bounds an upload by a command that is not a transfer
// step (`drover step upload`).
const DefaultUploadMax = 1 << 30

// transferChunk is the data size of one Download message.
const transferChunk = 256 << 10

// transfers is the hub's transfer state: which partial files are being
// written, so that two streams never write one.
type transfers struct {
	artifactDir string // "": uploads and artifact downloads refused
	filesDir    string // "": files/ downloads refused

	mu      sync.Mutex
	writing map[string]bool // partial file paths with an Upload in progress
}

func newTransfers(artifactDir, filesDir string) *transfers {
	return &transfers{artifactDir: artifactDir, filesDir: filesDir, writing: make(map[string]bool)}
}

// ArtifactFile returns where the bytes of artifact path of build buildID
// are kept under dir, the master's artifact directory. It fails with
// Invalid for a path that is not clean, relative and without "..".
func ArtifactFile(dir string, buildID int64, p string) (string, error) {
	clean, err := CleanArtifactPath(p)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, strconv.FormatInt(buildID, 10), filepath.FromSlash(clean)), nil
}

// CleanArtifactPath checks an artifact path: slash-separated, relative,
// no "..", no backslash, not empty. It returns it cleaned.
func CleanArtifactPath(p string) (string, error) {
	if p == "" {
		return "", drover.Errorf(drover.Invalid, "empty artifact path")
	}
	if strings.ContainsAny(p, "\\\x00") || strings.HasPrefix(p, "/") {
		return "", drover.Errorf(drover.Invalid, "artifact path %q must be relative and slash-separated", p)
	}
	clean := path.Clean(p)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") || !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", drover.Errorf(drover.Invalid, "artifact path %q leaves the artifact directory", p)
	}
	return clean, nil
}

// joinArtifact joins an upload's destination and a file's relative path
// ("" for a lone file).
func joinArtifact(dest, rel string) (string, error) {
	d, err := CleanArtifactPath(dest)
	if err != nil {
		return "", err
	}
	if rel == "" {
		return d, nil
	}
	r, err := CleanArtifactPath(rel)
	if err != nil {
		return "", err
	}
	return d + "/" + r, nil
}

// within reports whether p (resolved) is root or under it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// mkdirInside creates dir, which must lie under root, and checks that,
// symlinks resolved, it still does.
func mkdirInside(root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if !within(realRoot, real) {
		return drover.Errorf(drover.Invalid, "%s resolves outside %s", dir, root)
	}
	return nil
}

// grpcError turns an error into a status for the worker: kinds map to
// codes, internals are logged and hidden.
func grpcError(log *slog.Logger, what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch drover.KindOf(err) {
	case drover.Invalid:
		return status.Error(codes.InvalidArgument, err.Error())
	case drover.NotFound:
		return status.Error(codes.NotFound, err.Error())
	case drover.Unauthorized:
		return status.Error(codes.Unauthenticated, err.Error())
	case drover.Conflict:
		return status.Error(codes.Aborted, err.Error())
	}
	log.Error(what, "err", err)
	return status.Errorf(codes.Unavailable, "%s failed on the master; try again", what)
}

// transferCommand authenticates auth and returns the command it names.
func (h *Hub) transferCommand(ctx context.Context, auth *pb.TransferAuth) (*pb.RunCommand, *slog.Logger, error) {
	log := h.logger.With("worker", auth.GetWorker(), "command", auth.GetCommandId(), "peer", peerAddr(ctx))
	if err := h.authenticate(ctx, &pb.Hello{Name: auth.GetWorker(), Token: auth.GetToken()}); err != nil {
		log.Warn("transfer refused: bad credentials", "err", err)
		if drover.KindOf(err) == drover.Unauthorized {
			return nil, log, status.Error(codes.Unauthenticated, err.Error())
		}
		return nil, log, grpcError(log, "authenticate", err)
	}
	if err := h.checkApproval(ctx, log, auth.GetWorker()); err != nil {
		return nil, log, err
	}
	c, ok := h.Tracked(auth.GetWorker(), auth.GetCommandId())
	if !ok {
		return nil, log, status.Errorf(codes.NotFound, "command %s is not running on %s", auth.GetCommandId(), auth.GetWorker())
	}
	return c.Run, log, nil
}

// uploadTarget is where one uploaded file goes.
type uploadTarget struct {
	buildID  int64
	step     int
	artifact string // artifact path
	final    string // its file
	partial  string // the partial file while uploading
	max      int64  // the command's limit on all it uploads; 0: none
}

func (h *Hub) uploadTarget(ctx context.Context, auth *pb.TransferAuth, rel string) (*uploadTarget, *slog.Logger, error) {
	run, log, err := h.transferCommand(ctx, auth)
	if err != nil {
		return nil, log, err
	}
	if h.xfer.artifactDir == "" {
		return nil, log, status.Error(codes.Unimplemented, "this master keeps no artifacts")
	}
	dest, max := auth.GetArtifactDest(), int64(DefaultUploadMax)
	if t := run.GetTransfer(); t != nil {
		if t.GetKind() != pb.TransferKind_TRANSFER_KIND_UPLOAD {
			return nil, log, status.Errorf(codes.FailedPrecondition, "command %s is not an upload", auth.GetCommandId())
		}
		dest, max = t.GetMasterPath(), t.GetMaxBytes()
	}
	art, err := joinArtifact(dest, rel)
	if err != nil {
		return nil, log, status.Error(codes.InvalidArgument, err.Error())
	}
	final, err := ArtifactFile(h.xfer.artifactDir, run.GetBuildId(), art)
	if err != nil {
		return nil, log, status.Error(codes.InvalidArgument, err.Error())
	}
	sum := sha256.Sum256([]byte(art))
	partial := filepath.Join(h.xfer.artifactDir, ".partial", fmt.Sprintf("%d-%s", run.GetBuildId(), hex.EncodeToString(sum[:12])))
	return &uploadTarget{buildID: run.GetBuildId(), step: int(run.GetStep()), artifact: art, final: final, partial: partial, max: max}, log.With("artifact", art), nil
}

// checkSize refuses a file that would take the step's uploads past max.
func (h *Hub) checkSize(ctx context.Context, t *uploadTarget, size int64) error {
	if size < 0 {
		return status.Error(codes.InvalidArgument, "negative size")
	}
	if t.max <= 0 {
		return nil
	}
	if size > t.max {
		return status.Errorf(codes.ResourceExhausted, "%s is %d bytes, over the step's max_bytes of %d", t.artifact, size, t.max)
	}
	as, err := h.store.ListArtifacts(ctx, t.buildID)
	if err != nil {
		return fmt.Errorf("list artifacts: %w", err)
	}
	total := size
	for _, a := range as {
		if a.StepIndex == t.step && a.Path != t.artifact {
			total += a.Size
		}
	}
	if total > t.max {
		return status.Errorf(codes.ResourceExhausted, "with %s the step's uploads come to %d bytes, over its max_bytes of %d", t.artifact, total, t.max)
	}
	return nil
}

// UploadStatus implements the Worker service: how much of a file the
// master holds.
func (h *Hub) UploadStatus(ctx context.Context, req *pb.UploadStatusRequest) (*pb.UploadStatusResponse, error) {
	t, log, err := h.uploadTarget(ctx, req.GetAuth(), req.GetPath())
	if err != nil {
		return nil, err
	}
	if err := h.checkSize(ctx, t, req.GetSize()); err != nil {
		return nil, grpcError(log, "upload status", err)
	}
	fi, err := os.Stat(t.partial)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &pb.UploadStatusResponse{}, nil
	case err != nil:
		return nil, grpcError(log, "upload status", err)
	case fi.Size() > req.GetSize():
		// Not this file's beginning: start again.
		return &pb.UploadStatusResponse{}, nil
	}
	return &pb.UploadStatusResponse{Offset: fi.Size()}, nil
}

// lock marks a partial file as being written; false if it already is.
func (x *transfers) lock(p string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.writing[p] {
		return false
	}
	x.writing[p] = true
	return true
}

func (x *transfers) unlock(p string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.writing, p)
}

// Upload implements the Worker service: one file, from its header's
// offset, then its sha256.
func (h *Hub) Upload(stream pb.Worker_UploadServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Error(codes.InvalidArgument, "upload without a header")
	}
	t, log, err := h.uploadTarget(ctx, hdr.GetAuth(), hdr.GetPath())
	if err != nil {
		return err
	}
	if err := h.checkSize(ctx, t, hdr.GetSize()); err != nil {
		return grpcError(log, "upload", err)
	}
	if !h.xfer.lock(t.partial) {
		return status.Errorf(codes.Aborted, "%s is being uploaded already", t.artifact)
	}
	defer h.xfer.unlock(t.partial)
	if err := os.MkdirAll(filepath.Dir(t.partial), 0o700); err != nil {
		return grpcError(log, "upload", err)
	}
	f, err := os.OpenFile(t.partial, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return grpcError(log, "upload", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return grpcError(log, "upload", err)
	}
	off := hdr.GetOffset()
	if off < 0 || off > fi.Size() || off > hdr.GetSize() {
		return status.Errorf(codes.Aborted, "the master holds %d bytes of %s, not %d: ask again", fi.Size(), t.artifact, off)
	}
	if err := f.Truncate(off); err != nil {
		return grpcError(log, "upload", err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return grpcError(log, "upload", err)
	}
	size, sum := off, first.GetSha256()
	if d := first.GetData(); len(d) > 0 {
		return status.Error(codes.InvalidArgument, "data in the header message")
	}
	for sum == "" {
		m, err := stream.Recv()
		if err == io.EOF {
			return status.Errorf(codes.InvalidArgument, "upload of %s ended without its sha256", t.artifact)
		}
		if err != nil {
			return err // what was written stays, for a resume
		}
		if m.GetHeader() != nil {
			return status.Error(codes.InvalidArgument, "a second header")
		}
		if d := m.GetData(); len(d) > 0 {
			if size+int64(len(d)) > hdr.GetSize() {
				return status.Errorf(codes.InvalidArgument, "%s: more data than its announced %d bytes", t.artifact, hdr.GetSize())
			}
			if _, err := f.Write(d); err != nil {
				return grpcError(log, "upload", err)
			}
			size += int64(len(d))
		}
		sum = m.GetSha256()
	}
	if size != hdr.GetSize() {
		return status.Errorf(codes.InvalidArgument, "%s: got %d bytes of %d", t.artifact, size, hdr.GetSize())
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return grpcError(log, "upload", err)
	}
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return grpcError(log, "upload", err)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != strings.ToLower(sum) {
		f.Close()
		os.Remove(t.partial)
		log.Warn("upload refused: sha256 mismatch", "got", got, "want", sum)
		return status.Errorf(codes.DataLoss, "%s: the master got sha256 %s, the worker sent %s (did the file change while uploading?)", t.artifact, got, sum)
	}
	mode := fs.FileMode(hdr.GetMode()).Perm() &^ 0o022
	if mode&0o400 == 0 {
		mode = 0o644
	}
	if err := f.Chmod(mode); err != nil {
		return grpcError(log, "upload", err)
	}
	if err := f.Close(); err != nil {
		return grpcError(log, "upload", err)
	}
	buildDir := filepath.Join(h.xfer.artifactDir, strconv.FormatInt(t.buildID, 10))
	if err := mkdirInside(buildDir, filepath.Dir(t.final)); err != nil {
		return grpcError(log, "upload", err)
	}
	if fi, err := os.Lstat(t.final); err == nil && fi.IsDir() {
		return status.Errorf(codes.InvalidArgument, "%s is a directory of artifacts already", t.artifact)
	}
	if err := os.Rename(t.partial, t.final); err != nil {
		return grpcError(log, "upload", err)
	}
	a := &drover.Artifact{BuildID: t.buildID, StepIndex: t.step, Path: t.artifact, Size: size, SHA256: hex.EncodeToString(hash.Sum(nil)), Created: h.now()}
	if err := h.store.AddArtifact(ctx, a); err != nil {
		return grpcError(log, "upload", fmt.Errorf("index artifact: %w", err))
	}
	log.Info("artifact stored", "build", t.buildID, "bytes", size)
	return stream.SendAndClose(&pb.UploadResult{Size: size, Sha256: a.SHA256})
}

// downloadFile is one file a download sends.
type downloadFile struct {
	abs  string
	rel  string // "" for a lone file
	size int64
	mode fs.FileMode
}

// downloadSource resolves a download's master_path to its files.
func (h *Hub) downloadSource(run *pb.RunCommand) ([]downloadFile, error) {
	src := run.GetTransfer().GetMasterPath()
	var root, rel string
	switch {
	case strings.HasPrefix(src, "artifact:"):
		if h.xfer.artifactDir == "" {
			return nil, drover.Errorf(drover.Invalid, "this master keeps no artifacts")
		}
		root, rel = filepath.Join(h.xfer.artifactDir, strconv.FormatInt(run.GetBuildId(), 10)), strings.TrimPrefix(src, "artifact:")
	case strings.HasPrefix(src, "files/"):
		if h.xfer.filesDir == "" {
			return nil, drover.Errorf(drover.Invalid, "this master has no files directory")
		}
		root, rel = h.xfer.filesDir, strings.TrimPrefix(src, "files/")
	default:
		return nil, drover.Errorf(drover.Invalid, "download source %q must start with artifact: or files/", src)
	}
	clean, err := CleanArtifactPath(rel)
	if err != nil {
		return nil, err
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, drover.Errorf(drover.NotFound, "download source %q: nothing there", src)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(realRoot, filepath.FromSlash(clean)))
	if err != nil {
		return nil, drover.Errorf(drover.NotFound, "download source %q: nothing there", src)
	}
	if !within(realRoot, real) {
		return nil, drover.Errorf(drover.Invalid, "download source %q leads outside its directory", src)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, err
	}
	if fi.Mode().IsRegular() {
		return []downloadFile{{abs: real, size: fi.Size(), mode: fi.Mode().Perm()}}, nil
	}
	var files []downloadFile
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil // directories are made as needed; symlinks are not followed
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		r, err := filepath.Rel(real, p)
		if err != nil {
			return err
		}
		files = append(files, downloadFile{abs: p, rel: filepath.ToSlash(r), size: info.Size(), mode: info.Mode().Perm()})
		return nil
	})
	return files, err
}

// Download implements the Worker service: the files of a download
// transfer, each as a header, its data and its sha256. A retry after a
// broken stream says what the worker holds (DownloadRequest.have and
// partial): a file it has whole and identical is confirmed by its header
// (offset = size) and sha256 alone, the file it has the beginning of is
// sent from there, and everything else from byte 0.
func (h *Hub) Download(req *pb.DownloadRequest, stream pb.Worker_DownloadServer) error {
	ctx := stream.Context()
	run, log, err := h.transferCommand(ctx, req.GetAuth())
	if err != nil {
		return err
	}
	t := run.GetTransfer()
	if t.GetKind() != pb.TransferKind_TRANSFER_KIND_DOWNLOAD {
		return status.Errorf(codes.FailedPrecondition, "command %s is not a download", req.GetAuth().GetCommandId())
	}
	files, err := h.downloadSource(run)
	if err != nil {
		return grpcError(log, "download", err)
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	if max := t.GetMaxBytes(); max > 0 && total > max {
		return status.Errorf(codes.ResourceExhausted, "%s is %d bytes, over the step's max_bytes of %d", t.GetMasterPath(), total, max)
	}
	have := make(map[string]*pb.DownloadHave, len(req.GetHave()))
	for _, hv := range req.GetHave() {
		have[hv.GetPath()] = hv
	}
	partial := req.GetPartial()
	buf := make([]byte, transferChunk)
	var sent, kept int64
	for _, df := range files {
		var from int64
		var held string
		if hv := have[df.rel]; hv != nil && hv.GetSize() == df.size {
			held = strings.ToLower(hv.GetSha256())
		} else if partial != nil && partial.GetPath() == df.rel && partial.GetOffset() > 0 && partial.GetOffset() <= df.size {
			from = partial.GetOffset()
		}
		n, err := sendFile(stream, df, buf, from, held)
		if err != nil {
			return grpcError(log, "download", err)
		}
		sent += n
		kept += df.size - n
	}
	log.Info("download sent", "source", t.GetMasterPath(), "files", len(files), "bytes", total, "bytes_sent", sent, "bytes_kept", kept)
	return nil
}

// sendFile sends df to the worker, which holds its first from bytes, or
// the whole of it with sha256 held ("": it does not). It ends the file
// with the whole file's sha256 and returns how many data bytes it sent.
func sendFile(stream pb.Worker_DownloadServer, df downloadFile, buf []byte, from int64, held string) (int64, error) {
	f, err := os.Open(df.abs)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	hash := sha256.New()
	if held != "" {
		// Read the file once to compare; if the worker's copy differs it
		// is sent whole.
		if _, err := io.CopyBuffer(hash, io.LimitReader(f, df.size), buf); err != nil {
			return 0, fmt.Errorf("read %s: %w", df.abs, err)
		}
		if sum := hex.EncodeToString(hash.Sum(nil)); sum == held {
			if err := stream.Send(&pb.DownloadChunk{Header: &pb.DownloadFileHeader{Path: df.rel, Size: df.size, Mode: uint32(df.mode), Offset: df.size}}); err != nil {
				return 0, status.Convert(err).Err()
			}
			return 0, status.Convert(stream.Send(&pb.DownloadChunk{Sha256: sum})).Err()
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		hash.Reset()
	}
	// The worker's first from bytes are hashed here, not sent.
	if n, err := io.CopyBuffer(hash, io.LimitReader(f, from), buf); err != nil || n != from {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read %s: %w", df.abs, err)
	}
	if err := stream.Send(&pb.DownloadChunk{Header: &pb.DownloadFileHeader{Path: df.rel, Size: df.size, Mode: uint32(df.mode), Offset: from}}); err != nil {
		return 0, status.Convert(err).Err()
	}
	sent := from
	for sent < df.size {
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), df.size-sent)])
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", df.abs, err)
		}
		hash.Write(buf[:n])
		if err := stream.Send(&pb.DownloadChunk{Data: buf[:n]}); err != nil {
			return 0, status.Convert(err).Err()
		}
		sent += int64(n)
	}
	return sent - from, status.Convert(stream.Send(&pb.DownloadChunk{Sha256: hex.EncodeToString(hash.Sum(nil))})).Err()
}
