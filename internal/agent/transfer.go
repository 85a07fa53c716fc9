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
// A transfer broken by a lost connection resumes. An upload asks the
// master, before each file, how much of it it holds (UploadStatus) and
// sends the rest. A download asks again, telling the master the files
// it wrote whole and the bytes it kept of the file it was writing; the
// master sends the rest, and the whole-file sha256 is checked over the
// kept bytes and the new ones (see downloader).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	// transferCallTimeout bounds one UploadStatus call: the master looks
	// up a command and the size of a partial file. A master that does
	// not answer fails the call, and the transfer tries again as after a
	// broken connection.
	transferCallTimeout = 30 * time.Second
	// transferIdleTimeout bounds how long an Upload or Download stream
	// may go without a chunk moving. A chunk is 256 KiB, a second on a
	// 2 Mbit/s link; between files the master may hash a file the worker
	// says it holds (up to the 1 GiB upload limit: several seconds on a
	// slow disk) or index an artifact. Two minutes catches only a master
	// that stopped; the transfer resumes as after a broken connection.
	transferIdleTimeout = 2 * time.Minute
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
	ctx, errMaxTime, stop := a.inProcessContext(c, "transfer")
	defer stop()
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
	case errors.Is(context.Cause(ctx), errMaxTime):
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

// inProcessContext is the context of a command the agent carries out
// itself (a transfer, a checkout) instead of running a process: it ends
// when the command has run its max_time (errMaxTime is then its cause;
// never the cause when the command has none), when the command is killed
// (the kill's text), or when the worker stops. stop releases it and
// waits for the goroutine that watches the command.
func (a *Agent) inProcessContext(c *command, what string) (ctx context.Context, errMaxTime error, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	errMaxTime = errors.New("no max_time")
	stopTimer := func() bool { return true }
	if ms := c.req.GetMaxTimeMs(); ms > 0 {
		d := time.Duration(ms) * time.Millisecond
		errMaxTime = fmt.Errorf("%s ran longer than its max_time of %s: stopped", what, d)
		t := time.AfterFunc(d, func() { cancel(errMaxTime) })
		stopTimer = t.Stop
	}
	// Watch for a cancel (kill sets c.killed, abandon sets discard) or
	// the worker stopping.
	var wg sync.WaitGroup
	done := make(chan struct{})
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
	return ctx, errMaxTime, func() {
		stopTimer()
		close(done)
		wg.Wait()
		cancel(nil)
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

// idleWatch cancels a transfer stream on which nothing moved for d.
type idleWatch struct {
	d      time.Duration
	t      *time.Timer
	cancel context.CancelCauseFunc
}

// watchIdle returns a context derived from ctx for one stream, which is
// cancelled with errStalled once d passes without a call of moved, and
// errStalled. Call stop when the stream is done.
func watchIdle(ctx context.Context, d time.Duration) (context.Context, *idleWatch, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	errStalled := drover.Errorf(drover.Unavailable, "no chunk moved for %s: the master stopped answering", d)
	return sctx, &idleWatch{d: d, t: time.AfterFunc(d, func() { cancel(errStalled) }), cancel: cancel}, errStalled
}

// moved restarts the wait: a chunk went through.
func (w *idleWatch) moved() { w.t.Reset(w.d) }

// stop ends the watch and the stream's context.
func (w *idleWatch) stop() {
	w.t.Stop()
	w.cancel(nil)
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
			sum, err = uploadOne(ctx, client, auth, f, a.timeouts)
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
// A master that stops answering, to UploadStatus or on the stream, fails
// it (within tm.TransferCall and tm.TransferIdle) with an error that is
// not permanent.
func uploadOne(ctx context.Context, client workerproto.WorkerClient, auth *workerproto.TransferAuth, f uploadFile, tm Timeouts) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, tm.TransferCall)
	st, err := client.UploadStatus(cctx, &workerproto.UploadStatusRequest{Auth: auth, Path: f.rel, Size: f.size})
	cancel()
	if err != nil {
		if ctx.Err() == nil && (errors.Is(cctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) {
			return "", drover.Errorf(drover.Unavailable, "the master did not answer UploadStatus within %s", tm.TransferCall)
		}
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
	sctx, idle, errStalled := watchIdle(ctx, tm.TransferIdle)
	defer idle.stop()
	// stalled puts the watch's verdict before the stream's "canceled".
	stalled := func(err error) error {
		if context.Cause(sctx) == errStalled {
			return errStalled
		}
		return err
	}
	stream, err := client.Upload(sctx)
	if err != nil {
		return "", stalled(err)
	}
	hdr := &workerproto.UploadFileHeader{Auth: auth, Path: f.rel, Size: f.size, Mode: uint32(f.mode), Offset: offset}
	if err := stream.Send(&workerproto.UploadChunk{Header: hdr}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return "", stalled(errors.Join(err, rerr))
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
			return "", stalled(errors.Join(err, rerr))
		}
		idle.moved()
		sent += int64(n)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := stream.Send(&workerproto.UploadChunk{Sha256: sum}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return "", stalled(errors.Join(err, rerr))
	}
	idle.moved()
	res, err := stream.CloseAndRecv()
	if err != nil {
		return "", stalled(err)
	}
	if res.GetSha256() != sum {
		return "", status.Errorf(codes.DataLoss, "master stored sha256 %s, sent %s", res.GetSha256(), sum)
	}
	return sum, nil
}

// download fetches the transfer's source into dest under the builder's
// directory, resuming across broken streams (see downloader).
func (a *Agent) download(ctx context.Context, builder, id, dest string, maxBytes int64, say func(string, ...any)) error {
	root, err := builderRoot(a.dir, builder)
	if err != nil {
		return err
	}
	if dest == "" || !filepath.IsLocal(filepath.FromSlash(dest)) {
		return drover.Errorf(drover.Invalid, "destination %q leaves the build directory: it must be relative, without ..", dest)
	}
	d := &downloader{root: root, dest: dest, maxBytes: maxBytes, idle: a.timeouts.TransferIdle, auth: a.transferAuth(id, ""), say: say,
		done: make(map[string]string), refetched: make(map[string]bool)}
	defer d.close()
	var n int
	var total int64
	err = a.retry(ctx, "download", func(client workerproto.WorkerClient) error {
		var err error
		n, total, err = d.fetch(ctx, client)
		return err
	})
	if err != nil {
		return fmt.Errorf("download to %s: %w", dest, err)
	}
	say("downloaded %d files (%d bytes) to %s", n, total, dest)
	return nil
}

// downloader is one download step's state across its attempts. After a
// broken stream it asks again, naming the files it wrote whole (read
// back from disk and hashed, so that the master checks what is really
// there) and how many bytes it holds of the file it was writing, whose
// temporary file it keeps. A resumed file is checked over all its bytes,
// the kept ones hashed again from disk, then the new ones; if its sha256
// does not match it is fetched again from byte 0, once: a second
// mismatch fails the download.
type downloader struct {
	root, dest string
	maxBytes   int64
	idle       time.Duration // the longest a Download stream may bring nothing
	auth       *workerproto.TransferAuth
	say        func(string, ...any)

	done      map[string]string // header path → target, of the files written whole
	partial   *downloadFile     // the file a broken stream left, its temporary file open; nil if none
	refetched map[string]bool   // header paths fetched again from 0 after a resumed copy failed
}

// errRefetch ends an attempt whose resumed file failed its check: the
// next attempt fetches it from byte 0.
var errRefetch = errors.New("a resumed file failed its check")

// fetch runs attempts until one completes the download or fails with an
// error other than errRefetch, and returns the download's files and
// bytes. errRefetch comes at most once per file, so this ends.
func (d *downloader) fetch(ctx context.Context, client workerproto.WorkerClient) (int, int64, error) {
	for {
		n, total, err := d.attempt(ctx, client)
		if !errors.Is(err, errRefetch) {
			return n, total, err
		}
	}
}

// request is the Download request for the next attempt, and the sha256
// of each file it says the worker has whole.
func (d *downloader) request() (*workerproto.DownloadRequest, map[string]string) {
	req := &workerproto.DownloadRequest{Auth: d.auth}
	held := make(map[string]string)
	for _, rel := range slices.Sorted(maps.Keys(d.done)) {
		size, sum, err := hashFile(d.done[rel])
		if err != nil {
			delete(d.done, rel) // gone or replaced meanwhile: fetch it again
			continue
		}
		held[rel] = sum
		req.Have = append(req.Have, &workerproto.DownloadHave{Path: rel, Size: size, Sha256: sum})
	}
	if p := d.partial; p != nil {
		req.Partial = &workerproto.DownloadPartial{Path: p.rel, Offset: p.written}
	}
	return req, held
}

// hashFile returns the size and sha256 of the regular file p.
func hashFile(p string) (int64, string, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, "", err
	}
	if !fi.Mode().IsRegular() {
		return 0, "", fmt.Errorf("%s is not a regular file", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// attempt makes one Download call and writes what it brings. A stream
// that breaks mid-file leaves that file in d.partial for the next
// attempt.
func (d *downloader) attempt(ctx context.Context, client workerproto.WorkerClient) (n int, total int64, err error) {
	req, held := d.request()
	sctx, idle, errStalled := watchIdle(ctx, d.idle)
	defer idle.stop()
	stream, err := client.Download(sctx, req)
	if err != nil {
		if context.Cause(sctx) == errStalled {
			return 0, 0, errStalled
		}
		return 0, 0, err
	}
	var cur *downloadFile
	broken := false
	defer func() {
		if cur != nil {
			if broken && cur.tmp != nil && cur.written > 0 {
				if d.partial != nil {
					d.partial.abort() // a later file, not reached: only the latest is kept
				}
				d.partial = cur
			} else {
				cur.abort()
			}
		}
		if err == nil && d.partial != nil {
			d.partial.abort() // a file the master no longer sends
			d.partial = nil
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
			broken = true
			if context.Cause(sctx) == errStalled {
				return n, total, errStalled
			}
			return n, total, err
		}
		idle.moved()
		if h := m.GetHeader(); h != nil {
			if cur != nil {
				return n, total, status.Error(codes.DataLoss, "a file header before the previous file's sha256")
			}
			if d.maxBytes > 0 && total+h.GetSize() > d.maxBytes {
				return n, total, drover.Errorf(drover.Invalid, "download is over max_bytes (%d bytes) at %s", d.maxBytes, orDot(h.GetPath()))
			}
			if cur, err = d.open(h, held); err != nil {
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
			if err := d.commit(f, sum); err != nil {
				return n, total, err
			}
			n++
			total += f.size
		}
	}
}

// open starts the file a header announces, from its offset: 0 for a new
// temporary file, the length of d.partial to go on with it, or the
// file's size for one the request said the worker has whole.
func (d *downloader) open(h *workerproto.DownloadFileHeader, held map[string]string) (*downloadFile, error) {
	rel, off, size := h.GetPath(), h.GetOffset(), h.GetSize()
	if off < 0 || off > size {
		return nil, status.Errorf(codes.DataLoss, "%s: the master starts at byte %d of %d", orDot(rel), off, size)
	}
	if p := d.partial; p != nil && p.rel == rel {
		d.partial = nil
		if off > 0 && off == p.written {
			return d.resume(p, h)
		}
		p.abort()
	}
	switch {
	case off == 0:
		return openDownload(d.root, d.dest, h)
	case off == size && held[rel] != "":
		return &downloadFile{rel: rel, size: size, written: size, held: held[rel]}, nil
	}
	return nil, status.Errorf(codes.DataLoss, "%s: the master resumes at byte %d, which this worker does not hold", orDot(rel), off)
}

// resume goes on with p, kept from a broken stream, after hashing again
// the bytes it holds, so that the file's sha256 covers what is really on
// disk.
func (d *downloader) resume(p *downloadFile, h *workerproto.DownloadFileHeader) (*downloadFile, error) {
	p.size, p.mode, p.resumed = h.GetSize(), headerMode(h), p.written
	p.h = sha256.New()
	if _, err := p.tmp.Seek(0, io.SeekStart); err != nil {
		return nil, d.refetch(p, fmt.Errorf("%s: read back: %w", orDot(p.rel), err))
	}
	if _, err := io.CopyN(p.h, p.tmp, p.written); err != nil {
		return nil, d.refetch(p, fmt.Errorf("%s: read back the %d bytes kept: %w", orDot(p.rel), p.written, err))
	}
	if err := p.tmp.Truncate(p.written); err != nil {
		return nil, d.refetch(p, fmt.Errorf("%s: truncate to the %d bytes kept: %w", orDot(p.rel), p.written, err))
	}
	d.say("  %s  resuming at byte %d of %d", orDot(p.rel), p.written, p.size)
	return p, nil
}

// refetch drops f, a resumed file that failed for why (which names it),
// and returns errRefetch for the next attempt to fetch it from byte 0,
// or, if it was fetched again already, why as the download's failure.
func (d *downloader) refetch(f *downloadFile, why error) error {
	f.abort()
	msg := status.Convert(why).Message()
	if d.refetched[f.rel] {
		return status.Errorf(codes.DataLoss, "%s (resumed at byte %d, after fetching it again once)", msg, f.resumed)
	}
	d.refetched[f.rel] = true
	d.say("  %s (resumed at byte %d); fetching it again from the start", msg, f.resumed)
	return errRefetch
}

// commit ends f with the master's sha256 of the whole file: a new file
// is checked and moved into place; one the worker has whole is only
// compared.
func (d *downloader) commit(f *downloadFile, sum string) error {
	if f.tmp == nil {
		if sum != f.held {
			return status.Errorf(codes.DataLoss, "%s: the master has sha256 %s, not this worker's %s", orDot(f.rel), sum, f.held)
		}
		return nil
	}
	if err := f.check(sum); err != nil {
		if f.resumed > 0 {
			return d.refetch(f, err)
		}
		f.abort()
		return err
	}
	if err := f.install(); err != nil {
		return err
	}
	d.done[f.rel] = f.target
	d.say("  %s  %d bytes  sha256 %s", orDot(f.rel), f.size, sum)
	return nil
}

// close drops a partial file the download leaves.
func (d *downloader) close() {
	if d.partial != nil {
		d.partial.abort()
		d.partial = nil
	}
}

// downloadFile is a file being downloaded into a temporary file beside
// its target, or, with tmp nil, one the worker has whole already.
type downloadFile struct {
	rel, target string
	size        int64
	written     int64 // bytes in tmp
	resumed     int64 // bytes tmp held when this attempt went on with it; 0 if it started it
	held        string
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
	return &downloadFile{rel: h.GetPath(), target: target, size: h.GetSize(), mode: headerMode(h), tmp: tmp, h: sha256.New()}, nil
}

// headerMode is the permission bits a downloaded file gets.
func headerMode(h *workerproto.DownloadFileHeader) fs.FileMode {
	if mode := fs.FileMode(h.GetMode()).Perm(); mode != 0 {
		return mode
	}
	return 0o644
}

func (f *downloadFile) write(p []byte) error {
	if f.tmp == nil {
		return status.Errorf(codes.DataLoss, "%s: data for a file this worker has whole", orDot(f.rel))
	}
	if f.written+int64(len(p)) > f.size {
		return status.Errorf(codes.DataLoss, "%s: more data than its announced %d bytes", orDot(f.rel), f.size)
	}
	n, err := f.tmp.Write(p)
	f.written += int64(n)
	f.h.Write(p[:n])
	if err != nil {
		return fmt.Errorf("write %s: %w", orDot(f.rel), err)
	}
	return nil
}

func (f *downloadFile) abort() {
	if f.tmp != nil {
		f.tmp.Close()
		os.Remove(f.tmp.Name())
	}
}

// check compares the file's size and sha256 with the master's.
func (f *downloadFile) check(sum string) error {
	if f.written != f.size {
		return status.Errorf(codes.DataLoss, "%s: got %d bytes of %d", orDot(f.rel), f.written, f.size)
	}
	if got := hex.EncodeToString(f.h.Sum(nil)); got != sum {
		return status.Errorf(codes.DataLoss, "%s: sha256 %s, the master said %s", orDot(f.rel), got, sum)
	}
	return nil
}

// install sets the file's mode and renames it into place.
func (f *downloadFile) install() error {
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
