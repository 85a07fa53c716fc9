package agent

// File transfers, worker side. A RunCommand with a Transfer is not run
// as a process: the agent walks the files under the builder's directory
// and sends them to the master over the Upload RPC (or fetches them over
// Download), then finishes the command like any other, so that the
// master's step machinery (await, re-attach, results) is the same.
//
// Paths are checked before any byte moves: the path must be relative and
// stay inside the builder's directory once every symlink is resolved; a
// symlink inside an uploaded tree that points outside the builder's
// directory fails the transfer. Downloads are written to a temporary
// file, checked against the sha256 the master sends, and renamed into
// place, never through a symlink that leaves the directory.
//
// An upload broken by a lost connection resumes: before each file the
// agent asks the master how much of it it holds (UploadStatus) and sends
// the rest. A download is restarted, each file being replaced whole.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

const (
	// transferChunk is the data size of one Upload or Download message,
	// well under gRPC's default 4 MiB message limit.
	transferChunk = 256 << 10
	// transferRetryMin and transferRetryMax bound the wait before a
	// transfer tries again after the master became unreachable: short
	// enough to resume soon after a reconnect, long enough not to spin.
	transferRetryMin = 200 * time.Millisecond
	transferRetryMax = 5 * time.Second
	// defaultUploadMax bounds an upload that names no limit (`drover step
	// upload`).
	defaultUploadMax = 1 << 30
)

// transferLink gives transfers the current connection's client. The zero
// value has no client; stop ends waiting transfers for good.
type transferLink struct {
	mu      sync.Mutex
	client  workerproto.WorkerClient // nil while disconnected
	changed chan struct{}            // closed when client changes or stop is called
	stopped bool
}

func (l *transferLink) changedLocked() chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

// set records the session's client (nil when it ends).
func (l *transferLink) set(c workerproto.WorkerClient) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.client = c
	close(l.changedLocked())
	l.changed = nil
}

// stop makes every later get fail: the worker is stopping.
func (l *transferLink) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	close(l.changedLocked())
	l.changed = nil
}

var errWorkerStopping = errors.New("worker stopping")

// get returns the current client, waiting for one until ctx ends.
func (l *transferLink) get(ctx context.Context) (workerproto.WorkerClient, error) {
	for {
		l.mu.Lock()
		c, stopped, ch := l.client, l.stopped, l.changedLocked()
		l.mu.Unlock()
		if stopped {
			return nil, errWorkerStopping
		}
		if c != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-ch:
		}
	}
}

// stopped reports whether stop was called.
func (l *transferLink) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

// transferAuth names this worker to the transfer RPCs.
func (a *Agent) transferAuth(commandID, dest string) *workerproto.TransferAuth {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return &workerproto.TransferAuth{Worker: a.st.Name, Token: a.st.Token, CommandId: commandID, ArtifactDest: dest}
}

// runTransfer performs the transfer command c and finishes it.
func (a *Agent) runTransfer(c *command) {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var errMaxTime error
	if ms := c.req.GetMaxTimeMs(); ms > 0 {
		d := time.Duration(ms) * time.Millisecond
		errMaxTime = fmt.Errorf("transfer ran longer than its max_time of %s: stopped", d)
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, d, errMaxTime)
		defer stop()
	}
	// Watch for a cancel (kill sets c.killed, abandon sets discard) or
	// the worker stopping.
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{})
	defer close(done)
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			c.mu.Lock()
			k := c.killed
			c.mu.Unlock()
			if k != nil {
				cancel(errors.New(k.text))
				return
			}
			if a.xfer.isStopped() {
				cancel(errWorkerStopping)
				return
			}
		}
	})
	say := func(format string, args ...any) {
		c.write(workerproto.Stream_STREAM_STDOUT, fmt.Appendf(nil, format+"\n", args...), spoolLoc{})
	}
	tr := c.req.GetTransfer()
	var err error
	switch tr.GetKind() {
	case workerproto.TransferKind_TRANSFER_KIND_UPLOAD:
		err = a.upload(ctx, c.req.GetBuilder(), c.id, tr.GetWorkerPath(), "", tr.GetMaxBytes(), say)
	case workerproto.TransferKind_TRANSFER_KIND_DOWNLOAD:
		err = a.download(ctx, c.req.GetBuilder(), c.id, tr.GetWorkerPath(), tr.GetMaxBytes(), say)
	default:
		err = fmt.Errorf("unknown transfer kind %v", tr.GetKind())
	}
	close(c.exited)
	c.mu.Lock()
	killed := c.killed
	c.mu.Unlock()
	switch {
	case errMaxTime != nil && errors.Is(context.Cause(ctx), errMaxTime):
		say("%v", errMaxTime)
		c.finish(-1, time.Since(start), workerproto.FinishReason_FINISH_REASON_MAX_TIME, errMaxTime.Error())
	case killed != nil:
		say("transfer stopped: %s", killed.text)
		c.finish(-1, time.Since(start), killed.reason, killed.text)
	case err != nil:
		say("transfer failed: %v", err)
		c.finish(1, time.Since(start), workerproto.FinishReason_FINISH_REASON_EXITED, err.Error())
	default:
		c.finish(0, time.Since(start), workerproto.FinishReason_FINISH_REASON_EXITED, "")
	}
}

// UploadArtifact uploads path, relative to the working directory of the
// running command commandID (or absolute, inside its builder's
// directory), to the master as artifacts of that command's build under
// dest (an artifact path; "" for the path's base name). A directory is
// uploaded whole. It is what `drover step upload PATH` does
// through the control socket; it returns when the master holds every
// file, resuming across reconnects, or with the first error (Invalid for
// a bad path, NotFound for an unknown command).
func (a *Agent) UploadArtifact(ctx context.Context, commandID, path, dest string) error {
	a.mu.Lock()
	c := a.cmds[commandID]
	a.mu.Unlock()
	if c == nil {
		return drover.Errorf(drover.NotFound, "no running command %q", commandID)
	}
	if dest == "" {
		dest = filepath.Base(filepath.Clean(path))
	}
	if !filepath.IsLocal(filepath.FromSlash(dest)) {
		return drover.Errorf(drover.Invalid, "artifact path %q must be relative, without ..", dest)
	}
	if filepath.IsAbs(path) {
		root, err := builderRoot(a.dir, c.req.GetBuilder())
		if err != nil {
			return err
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return drover.Errorf(drover.Invalid, "upload %s: %v", path, err)
		}
		if !within(root, real) {
			return drover.Errorf(drover.Invalid, "upload %s: outside the build directory %s", path, root)
		}
		path, _ = filepath.Rel(root, real)
	} else {
		path = filepath.Join(c.req.GetWorkdir(), path)
	}
	return a.upload(ctx, c.req.GetBuilder(), commandID, path, filepath.ToSlash(dest), defaultUploadMax, func(string, ...any) {})
}

// uploadFile is one file of an upload.
type uploadFile struct {
	abs  string // where it is read
	rel  string // slash-separated path under the upload root; "" for a lone file
	size int64
	mode fs.FileMode
}

// builderRoot returns DIR/<builder> with its symlinks resolved.
func builderRoot(dir, builder string) (string, error) {
	root, err := workdir(dir, builder, ".")
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolve the build directory: %w", err)
	}
	return real, nil
}

// within reports whether path (resolved) is root or under it.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// resolveInside resolves rel, relative to root, through every symlink,
// and fails with Invalid unless the result stays under root.
func resolveInside(root, rel string) (string, error) {
	if rel == "" {
		rel = "."
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", drover.Errorf(drover.Invalid, "path %q leaves the build directory: it must be relative, without ..", rel)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return "", drover.Errorf(drover.Invalid, "path %q: %v", rel, err)
	}
	if !within(root, real) {
		return "", drover.Errorf(drover.Invalid, "path %q resolves to %s, outside the build directory", rel, real)
	}
	return real, nil
}

// collectUpload lists the files to upload from rel under root: a file,
// or every regular file of a directory tree. A symlink in the tree is
// followed only when it stays under root (a file is sent with the link's
// name; a linked directory is skipped, so no cycle is walked); one that
// points outside fails the upload. The total must not exceed maxBytes
// (0: no limit).
func collectUpload(root, rel string, maxBytes int64) ([]uploadFile, error) {
	real, err := resolveInside(root, rel)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("upload %q: %w", rel, err)
	}
	var files []uploadFile
	var total int64
	add := func(f uploadFile) error {
		total += f.size
		if maxBytes > 0 && total > maxBytes {
			return drover.Errorf(drover.Invalid, "upload of %q is over max_bytes (%d bytes): at %s it is %d bytes already", rel, maxBytes, orDot(f.rel), total)
		}
		files = append(files, f)
		return nil
	}
	if fi.Mode().IsRegular() {
		return files, add(uploadFile{abs: real, size: fi.Size(), mode: fi.Mode().Perm()})
	}
	if !fi.IsDir() {
		return nil, drover.Errorf(drover.Invalid, "upload %q: not a regular file or directory", rel)
	}
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(real, p)
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return drover.Errorf(drover.Invalid, "upload %q: symlink %s: %v", rel, filepath.ToSlash(r), err)
			}
			if !within(root, target) {
				return drover.Errorf(drover.Invalid, "upload %q: symlink %s points to %s, outside the build directory", rel, filepath.ToSlash(r), target)
			}
			ti, err := os.Stat(target)
			if err != nil {
				return fmt.Errorf("upload %q: %w", rel, err)
			}
			if !ti.Mode().IsRegular() {
				return nil // a linked directory: its files are uploaded where they really are, if inside the tree
			}
			return add(uploadFile{abs: target, rel: filepath.ToSlash(r), size: ti.Size(), mode: ti.Mode().Perm()})
		}
		if !d.Type().IsRegular() {
			return nil // the directories themselves, and sockets, devices, pipes
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return add(uploadFile{abs: p, rel: filepath.ToSlash(r), size: info.Size(), mode: info.Mode().Perm()})
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// permanent reports whether a transfer RPC error is final: the master
// refused, rather than the connection failed.
func permanent(err error) bool {
	if drover.KindOf(err) == drover.Invalid {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.DataLoss, codes.Unimplemented, codes.AlreadyExists:
		return true
	}
	return false
}

// retry runs op until it succeeds, fails permanently, or ctx ends,
// waiting with backoff while the master is unreachable.
func (a *Agent) retry(ctx context.Context, what string, op func(workerproto.WorkerClient) error) error {
	wait := transferRetryMin
	for {
		client, err := a.xfer.get(ctx)
		if err != nil {
			return err
		}
		err = op(client)
		if err == nil || permanent(err) {
			if s, ok := status.FromError(err); ok && err != nil {
				return errors.New(s.Message())
			}
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		a.log.Info("transfer interrupted; retrying", "what", what, "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		wait = min(2*wait, transferRetryMax)
	}
}

// upload sends path (under the builder's directory) to the master for
// command id; dest is the artifact path for a non-transfer command.
func (a *Agent) upload(ctx context.Context, builder, id, path, dest string, maxBytes int64, say func(string, ...any)) error {
	root, err := builderRoot(a.dir, builder)
	if err != nil {
		return err
	}
	files, err := collectUpload(root, path, maxBytes)
	if err != nil {
		return err
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	say("uploading %d files (%d bytes) from %s", len(files), total, path)
	auth := a.transferAuth(id, dest)
	for _, f := range files {
		var sum string
		err := a.retry(ctx, "upload "+orDot(f.rel), func(client workerproto.WorkerClient) error {
			var err error
			sum, err = uploadOne(ctx, client, auth, f)
			return err
		})
		if err != nil {
			return fmt.Errorf("upload %s: %w", orDot(f.rel), err)
		}
		say("  %s  %d bytes  sha256 %s", orDot(f.rel), f.size, sum)
	}
	return nil
}

// uploadOne sends the part of f the master lacks and returns its sha256.
func uploadOne(ctx context.Context, client workerproto.WorkerClient, auth *workerproto.TransferAuth, f uploadFile) (string, error) {
	st, err := client.UploadStatus(ctx, &workerproto.UploadStatusRequest{Auth: auth, Path: f.rel, Size: f.size})
	if err != nil {
		return "", err
	}
	file, err := os.Open(f.abs)
	if err != nil {
		return "", drover.Errorf(drover.Invalid, "open: %v", err)
	}
	defer file.Close()
	h := sha256.New()
	offset := min(max(st.GetOffset(), 0), f.size)
	if st.GetComplete() {
		offset = f.size
	}
	if _, err := io.CopyN(h, file, offset); err != nil {
		return "", drover.Errorf(drover.Invalid, "read: %v (did the file change?)", err)
	}
	if st.GetComplete() {
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Upload(sctx)
	if err != nil {
		return "", err
	}
	hdr := &workerproto.UploadFileHeader{Auth: auth, Path: f.rel, Size: f.size, Mode: uint32(f.mode), Offset: offset}
	if err := stream.Send(&workerproto.UploadChunk{Header: hdr}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return "", errors.Join(err, rerr)
	}
	buf := make([]byte, transferChunk)
	sent := offset
	for sent < f.size {
		n, err := io.ReadFull(file, buf[:min(int64(len(buf)), f.size-sent)])
		if err != nil {
			return "", drover.Errorf(drover.Invalid, "read at byte %d: %v (did the file change?)", sent, err)
		}
		h.Write(buf[:n])
		if err := stream.Send(&workerproto.UploadChunk{Data: buf[:n]}); err != nil {
			_, rerr := stream.CloseAndRecv()
			return "", errors.Join(err, rerr)
		}
		sent += int64(n)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := stream.Send(&workerproto.UploadChunk{Sha256: sum}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return "", errors.Join(err, rerr)
	}
	res, err := stream.CloseAndRecv()
	if err != nil {
		return "", err
	}
	if res.GetSha256() != sum {
		return "", status.Errorf(codes.DataLoss, "master stored sha256 %s, sent %s", res.GetSha256(), sum)
	}
	return sum, nil
}

// download fetches the transfer's source into dest under the builder's
// directory, restarting on a broken connection.
func (a *Agent) download(ctx context.Context, builder, id, dest string, maxBytes int64, say func(string, ...any)) error {
	root, err := builderRoot(a.dir, builder)
	if err != nil {
		return err
	}
	if dest == "" || !filepath.IsLocal(filepath.FromSlash(dest)) {
		return drover.Errorf(drover.Invalid, "destination %q leaves the build directory: it must be relative, without ..", dest)
	}
	auth := a.transferAuth(id, "")
	var n int
	var total int64
	err = a.retry(ctx, "download", func(client workerproto.WorkerClient) error {
		var err error
		n, total, err = downloadAll(ctx, client, auth, root, dest, maxBytes, say)
		return err
	})
	if err != nil {
		return fmt.Errorf("download to %s: %w", dest, err)
	}
	say("downloaded %d files (%d bytes) to %s", n, total, dest)
	return nil
}

func downloadAll(ctx context.Context, client workerproto.WorkerClient, auth *workerproto.TransferAuth, root, dest string, maxBytes int64, say func(string, ...any)) (int, int64, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Download(sctx, &workerproto.DownloadRequest{Auth: auth})
	if err != nil {
		return 0, 0, err
	}
	var (
		n     int
		total int64
		cur   *downloadFile
	)
	defer func() {
		if cur != nil {
			cur.abort()
		}
	}()
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			if cur != nil {
				return n, total, status.Error(codes.DataLoss, "the master ended the download in the middle of a file")
			}
			return n, total, nil
		}
		if err != nil {
			return n, total, err
		}
		if h := m.GetHeader(); h != nil {
			if cur != nil {
				return n, total, status.Error(codes.DataLoss, "a file header before the previous file's sha256")
			}
			if maxBytes > 0 && total+h.GetSize() > maxBytes {
				return n, total, drover.Errorf(drover.Invalid, "download is over max_bytes (%d bytes) at %s", maxBytes, orDot(h.GetPath()))
			}
			if cur, err = openDownload(root, dest, h); err != nil {
				return n, total, err
			}
		}
		if len(m.GetData()) > 0 {
			if cur == nil {
				return n, total, status.Error(codes.DataLoss, "file data before its header")
			}
			if err := cur.write(m.GetData()); err != nil {
				return n, total, err
			}
		}
		if sum := m.GetSha256(); sum != "" {
			if cur == nil {
				return n, total, status.Error(codes.DataLoss, "a sha256 without a file")
			}
			f := cur
			cur = nil
			if err := f.commit(sum); err != nil {
				return n, total, err
			}
			n++
			total += f.size
			say("  %s  %d bytes  sha256 %s", orDot(f.rel), f.size, sum)
		}
	}
}

// downloadFile is a file being downloaded into a temporary file beside
// its target.
type downloadFile struct {
	rel, target string
	size        int64
	written     int64
	mode        fs.FileMode
	tmp         *os.File
	h           hashWriter
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// downloadTarget resolves where a downloaded file rel (slash-separated,
// "" for a lone file) goes: dest/rel under root. Its parent directory is
// created and, resolved, must stay under root; the file itself is
// replaced by a rename, never written through a symlink.
func downloadTarget(root, dest, rel string) (string, error) {
	p := filepath.FromSlash(dest)
	if rel != "" {
		if !filepath.IsLocal(filepath.FromSlash(rel)) || strings.Contains(rel, `\`) {
			return "", drover.Errorf(drover.Invalid, "the master sent a bad path %q", rel)
		}
		p = filepath.Join(p, filepath.FromSlash(rel))
	}
	if !filepath.IsLocal(p) {
		return "", drover.Errorf(drover.Invalid, "path %q leaves the build directory", filepath.ToSlash(p))
	}
	parent := filepath.Join(root, filepath.Dir(p))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", drover.Errorf(drover.Invalid, "create %s: %v", filepath.Dir(p), err)
	}
	real, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return "", drover.Errorf(drover.Invalid, "resolve %s: %v", filepath.Dir(p), err)
	}
	if !within(root, real) {
		return "", drover.Errorf(drover.Invalid, "directory %s resolves to %s, outside the build directory", filepath.ToSlash(filepath.Dir(p)), real)
	}
	target := filepath.Join(real, filepath.Base(p))
	if fi, err := os.Lstat(target); err == nil && fi.IsDir() {
		return "", drover.Errorf(drover.Invalid, "%s is a directory", filepath.ToSlash(p))
	}
	return target, nil
}

func openDownload(root, dest string, h *workerproto.DownloadFileHeader) (*downloadFile, error) {
	target, err := downloadTarget(root, dest, h.GetPath())
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), ".drover-download-*")
	if err != nil {
		return nil, fmt.Errorf("create a temporary file: %w", err)
	}
	mode := fs.FileMode(h.GetMode()).Perm()
	if mode == 0 {
		mode = 0o644
	}
	return &downloadFile{rel: h.GetPath(), target: target, size: h.GetSize(), mode: mode, tmp: tmp, h: sha256.New()}, nil
}

func (f *downloadFile) write(p []byte) error {
	f.written += int64(len(p))
	if f.written > f.size {
		return status.Errorf(codes.DataLoss, "%s: more data than its announced %d bytes", orDot(f.rel), f.size)
	}
	f.h.Write(p)
	if _, err := f.tmp.Write(p); err != nil {
		return fmt.Errorf("write %s: %w", orDot(f.rel), err)
	}
	return nil
}

func (f *downloadFile) abort() {
	f.tmp.Close()
	os.Remove(f.tmp.Name())
}

// commit checks the file's size and sha256 and renames it into place.
func (f *downloadFile) commit(sum string) error {
	if f.written != f.size {
		f.abort()
		return status.Errorf(codes.DataLoss, "%s: got %d bytes of %d", orDot(f.rel), f.written, f.size)
	}
	if got := hex.EncodeToString(f.h.Sum(nil)); got != sum {
		f.abort()
		return status.Errorf(codes.DataLoss, "%s: sha256 %s, the master said %s", orDot(f.rel), got, sum)
	}
	if err := f.tmp.Chmod(f.mode); err != nil {
		f.abort()
		return fmt.Errorf("chmod %s: %w", orDot(f.rel), err)
	}
	if err := f.tmp.Close(); err != nil {
		os.Remove(f.tmp.Name())
		return fmt.Errorf("write %s: %w", orDot(f.rel), err)
	}
	if err := os.Rename(f.tmp.Name(), f.target); err != nil {
		os.Remove(f.tmp.Name())
		return fmt.Errorf("move %s into place: %w", orDot(f.rel), err)
	}
	return nil
}
