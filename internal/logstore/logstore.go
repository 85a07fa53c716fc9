// Package logstore keeps build logs outside the database.
//
// Each log is a file of numbered, independently readable zstd chunks with a
// sidecar index of fixed-size records, so a reader can start at any offset by
// decompressing one chunk, and a writer needs only one chunk buffer however
// long the log grows. Live readers (Follow) are woken each time a chunk is
// flushed, without a goroutine of their own.
//
// A log over its limit (Options.MaxBytes) keeps its first half as written and
// its last half in a ring of tail segments that drops the oldest output as
// new output arrives; Finish joins head, a marker line and tail. Disk use of
// a truncated log is thus bounded too.
//
// Several masters may share one directory of logs. Each live log is written
// by one Dir, which holds it in memory; Stat, Copy and Follow are for logs
// this Dir writes, or finished ones, since loading a live log from disk
// repairs it as after a crash. Logs that another process may be writing are
// read with StatShared, CopyShared and FollowShared (shared.go), which only
// read the files and poll them for new chunks. Opening and closing a Dir
// touches no log it does not hold.
//
// The master owns the index row of each log (drover.Log) and copies Stat into
// it; this package owns the bytes and their byte-level index. The layout and
// the crash-recovery rules are described in format.go.
package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-ci/drover"
)

// DefaultChunkSize is the raw size of a chunk when Options.ChunkSize is 0:
// large enough to compress well, small enough that reading from an arbitrary
// offset decompresses little that is thrown away.
const DefaultChunkSize = 64 << 10

// Options configure a Dir.
type Options struct {
	// MaxBytes limits each log; 0 means unlimited. Beyond it, output is cut
	// from the middle: the first MaxBytes/2 and the last MaxBytes-MaxBytes/2
	// bytes are kept, with a marker line
	// "\n[drover: N bytes of output dropped here]\n" at the cut. A log keeps
	// the limit in force when it was created.
	MaxBytes int64
	// ChunkSize is the number of raw bytes per chunk before compression;
	// 0 means DefaultChunkSize.
	ChunkSize int
	Logger    *slog.Logger
}

// Info describes a log as a reader sees it.
type Info struct {
	// Bytes is the size a reader sees: while a truncated log is still being
	// written, only its head; once finished, head, marker and tail.
	Bytes int64
	// Dropped counts bytes cut from the middle (while the log is live: the
	// bytes that would be cut if it finished now).
	Dropped  int64
	Complete bool
	// Chunks is the number of readable chunks.
	Chunks int
}

// Dir is a directory of logs. Its methods are safe for concurrent use.
type Dir struct {
	root      string
	maxBytes  int64
	chunkSize int
	logger    *slog.Logger
	enc       *zstd.Encoder // EncodeAll only: safe for concurrent use
	dec       *zstd.Decoder // DecodeAll only: safe for concurrent use
	bufs      sync.Pool     // *[]byte scratch for compressed and decompressed chunks
	done      chan struct{} // closed by Close, to release waiting followers
	ops       sync.WaitGroup

	mu     sync.Mutex
	closed bool
	// logs holds the logs being written or waited on; finished logs are
	// dropped from it and read straight from disk.
	logs map[int64]*log

	// dirMu serialises creating and removing bucket directories, so that a
	// Delete emptying a bucket cannot remove it under a log being created.
	dirMu sync.Mutex
}

// Open opens the log directory dir, creating it if needed.
func Open(dir string, opts Options) (*Dir, error) {
	switch {
	case opts.MaxBytes < 0:
		return nil, drover.Errorf(drover.Invalid, "log store: negative MaxBytes %d", opts.MaxBytes)
	case opts.ChunkSize < 0 || opts.ChunkSize > maxChunkSize:
		return nil, drover.Errorf(drover.Invalid, "log store: ChunkSize %d out of range [0, %d]", opts.ChunkSize, maxChunkSize)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("open log store: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(maxChunkSize))
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("open log store: zstd decoder: %w", err)
	}
	return &Dir{
		root:      dir,
		maxBytes:  opts.MaxBytes,
		chunkSize: opts.ChunkSize,
		logger:    logger.With("component", "logstore"),
		enc:       enc,
		dec:       dec,
		done:      make(chan struct{}),
		logs:      make(map[int64]*log),
	}, nil
}

// Close waits for calls in progress (followers return Unavailable), writes
// the buffered bytes of unfinished logs so that a restarted master can go on
// appending, and releases the files. Calls after Close fail with Unavailable.
// Close is idempotent.
func (d *Dir) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.done)
	d.mu.Unlock()

	d.ops.Wait()

	d.mu.Lock()
	logs := d.logs
	d.logs = nil
	d.mu.Unlock()
	var errs []error
	for _, l := range logs {
		l.mu.Lock()
		if err := l.shutdownLocked(); err != nil {
			errs = append(errs, err)
		}
		l.mu.Unlock()
	}
	d.enc.Close()
	d.dec.Close()
	return errors.Join(errs...)
}

// enter registers a call in progress, so that Close can wait for it.
func (d *Dir) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return drover.Errorf(drover.Unavailable, "log store closed")
	}
	d.ops.Add(1)
	return nil
}

func (d *Dir) leave() { d.ops.Done() }

func checkID(id int64) error {
	if id <= 0 {
		return drover.Errorf(drover.Invalid, "bad log id %d", id)
	}
	return nil
}

// Append adds p to the end of log id, creating the log on first append.
// Bytes are written a chunk at a time; Flush and Finish write partial chunks.
// Appends to a finished log fail with Conflict. Append is safe for
// concurrent use, on the same log or different ones.
func (d *Dir) Append(id int64, p []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	l, err := d.lockLive(id, true)
	if err != nil {
		return err
	}
	defer l.mu.Unlock()
	if l.complete {
		return drover.Errorf(drover.Conflict, "append to log %d: log is finished", id)
	}
	if err := l.createLocked(); err != nil {
		return err
	}
	if err := l.appendLocked(p); err != nil {
		return fmt.Errorf("append to log %d: %w", id, err)
	}
	return nil
}

// Flush writes the buffered bytes of log id as a chunk and wakes its
// followers. The master calls it on a short timer so that live views stay
// live even when output is slow. Flushing a finished log does nothing; a log
// that does not exist is NotFound.
func (d *Dir) Flush(id int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	d.mu.Lock()
	l := d.logs[id]
	d.mu.Unlock()
	if l == nil {
		// Not in memory, so nothing is buffered; only say whether it exists.
		if _, err := os.Stat(d.pathsOf(id).index()); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return drover.Errorf(drover.NotFound, "flush log %d: no such log", id)
			}
			return fmt.Errorf("flush log %d: %w", id, err)
		}
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.gone && !l.complete:
		return drover.Errorf(drover.NotFound, "flush log %d: no such log", id)
	case l.complete:
		return nil
	case !l.exists:
		return drover.Errorf(drover.NotFound, "flush log %d: no such log", id)
	}
	if err := l.flushLocked(); err != nil {
		return fmt.Errorf("flush log %d: %w", id, err)
	}
	return nil
}

// Finish writes what is buffered, joins head, marker and tail when the log
// was truncated, marks log id complete and makes it durable, and wakes its
// followers so that they return. Finishing a log with no output makes an
// empty complete log; finishing a finished log does nothing.
func (d *Dir) Finish(id int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	l, err := d.lockLive(id, true)
	if err != nil {
		return err
	}
	if l.complete {
		l.mu.Unlock()
		return nil
	}
	err = l.createLocked()
	if err == nil {
		err = l.finishLocked()
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("finish log %d: %w", id, err)
	}
	// A finished log is immutable and read from disk from now on.
	d.mu.Lock()
	if d.logs[id] == l {
		delete(d.logs, id)
	}
	d.mu.Unlock()
	return nil
}

// Stat reports log id's size as a reader sees it, the bytes dropped, and
// whether it is complete. A log that never had an append and was not
// finished is NotFound. A live log that this Dir does not hold is loaded,
// and repaired, as the new writer would: for a log another process may be
// writing, use StatShared.
func (d *Dir) Stat(id int64) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := d.enter(); err != nil {
		return Info{}, err
	}
	defer d.leave()
	l, err := d.acquire(id, false)
	if err != nil {
		return Info{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.exists || l.deleted {
		return Info{}, drover.Errorf(drover.NotFound, "log %d: no such log", id)
	}
	return l.infoLocked(), nil
}

// Copy writes the bytes of log id from offset to w and returns how many it
// wrote. The bytes are those a reader sees (head, marker, tail); for a log
// being written, those flushed so far. An offset at or past the end writes
// nothing. For a log another process may be writing, use CopyShared.
func (d *Dir) Copy(ctx context.Context, id int64, offset int64, w io.Writer) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	if offset < 0 {
		return 0, drover.Errorf(drover.Invalid, "read log %d: negative offset %d", id, offset)
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer d.leave()
	l, err := d.acquire(id, false)
	if err != nil {
		return 0, err
	}
	s := l.snapshot()
	if !s.exists || s.deleted {
		return 0, drover.Errorf(drover.NotFound, "log %d: no such log", id)
	}
	if offset >= s.rawEnd {
		return 0, nil
	}
	r := d.newReader(id)
	defer r.close()
	var n int64
	_, err = r.emit(ctx, offset, s.rawEnd, s.nrec, -1, func(p []byte) error {
		m, err := w.Write(p)
		n += int64(m)
		if err == nil && m < len(p) {
			err = io.ErrShortWrite
		}
		return err
	})
	if err != nil {
		return n, fmt.Errorf("read log %d: %w", id, err)
	}
	return n, nil
}

// Follow calls fn with the bytes of log id from offset: first those stored,
// then each chunk as it is flushed, without gap or duplicate, until the log
// is complete (nil), ctx is done (ctx.Err()), fn fails (its error), the log
// is deleted (NotFound) or the Dir closes (Unavailable). The slice passed to
// fn is valid only during the call.
//
// Follow waits for a log that has no output yet, since the master creates a
// step's log with its first output; callers that know from the database that
// a log is gone for good should not follow it. While a truncated log is live,
// followers receive its head; the marker and the tail arrive at Finish.
// Follow is woken by this Dir's flushes only: for a log another process may
// be writing, use FollowShared.
func (d *Dir) Follow(ctx context.Context, id int64, offset int64, fn func([]byte) error) error {
	if err := checkID(id); err != nil {
		return err
	}
	if offset < 0 {
		return drover.Errorf(drover.Invalid, "follow log %d: negative offset %d", id, offset)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	l, err := d.acquire(id, true)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.followers++
	l.mu.Unlock()
	defer d.unfollow(l)

	var r *reader
	defer func() {
		if r != nil {
			r.close()
		}
	}()
	next := -1
	for {
		s := l.snapshot()
		if s.deleted {
			return drover.Errorf(drover.NotFound, "follow log %d: log deleted", id)
		}
		if offset < s.rawEnd {
			if r == nil {
				r = d.newReader(id)
			}
			if next, err = r.emit(ctx, offset, s.rawEnd, s.nrec, next, fn); err != nil {
				return fmt.Errorf("follow log %d: %w", id, err)
			}
			offset = s.rawEnd
		}
		if s.complete {
			return nil
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return drover.Errorf(drover.Unavailable, "follow log %d: log store closed", id)
		}
	}
}

// unfollow forgets a follower, and the log too when it was only a
// placeholder for followers waiting for output that never came.
func (d *Dir) unfollow(l *log) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.followers--
	if l.followers == 0 && !l.exists && !l.gone && d.logs[l.id] == l {
		delete(d.logs, l.id)
		l.gone = true
	}
}

// Delete removes logs: their files, sidecars and tail segments. Logs that do
// not exist are not an error. Followers of a deleted log return NotFound.
func (d *Dir) Delete(ids ...int64) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	var errs []error
	for _, id := range ids {
		if err := checkID(id); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.delete(id); err != nil {
			errs = append(errs, fmt.Errorf("delete log %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Dir) delete(id int64) error {
	// d.mu is held throughout so that no call can load the log from the
	// files being removed.
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if l := d.logs[id]; l != nil {
		delete(d.logs, id)
		l.mu.Lock()
		l.gone, l.deleted = true, true
		if err := l.releaseLocked(); err != nil {
			errs = append(errs, err)
		}
		l.broadcastLocked()
		l.mu.Unlock()
	}
	p := d.pathsOf(id)
	d.dirMu.Lock()
	defer d.dirMu.Unlock()
	// Tail segments go first, so that segments never outlive their log's
	// index (creating a log relies on it to skip a directory listing);
	// then the index: without it the rest is garbage, never a log.
	if err := removeSegments(p); err != nil {
		errs = append(errs, err)
	}
	for _, name := range []string{p.index(), p.data()} {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Drop the bucket when this was its last log; failing because other
	// logs remain is expected.
	_ = os.Remove(p.bucket)
	return errors.Join(errs...)
}

// acquire returns the log id: the one in memory, or one loaded from disk.
// A finished log loaded from disk is returned without being kept. A log that
// does not exist is NotFound, or, if placeholder is set, a placeholder that
// Append and Finish turn into a real log and followers wait on.
func (d *Dir) acquire(id int64, placeholder bool) (*log, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, drover.Errorf(drover.Unavailable, "log store closed")
	}
	if l := d.logs[id]; l != nil {
		return l, nil
	}
	l, err := d.load(id)
	if err != nil {
		return nil, fmt.Errorf("load log %d: %w", id, err)
	}
	if l == nil {
		if !placeholder {
			return nil, drover.Errorf(drover.NotFound, "log %d: no such log", id)
		}
		l = d.newLog(id)
	}
	if !l.complete {
		d.logs[id] = l
	}
	return l, nil
}

// lockLive acquires log id and locks it, retrying when the log it got was
// dropped from memory (deleted, or an abandoned placeholder) before it could
// lock it, so that writes never go to a log object no longer in the map.
func (d *Dir) lockLive(id int64, placeholder bool) (*log, error) {
	for {
		l, err := d.acquire(id, placeholder)
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.gone && !l.complete {
			l.mu.Unlock()
			continue
		}
		return l, nil
	}
}

// getBuf returns scratch space for one chunk.
func (d *Dir) getBuf() *[]byte {
	if b, ok := d.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, d.chunkSize+d.chunkSize/8+tailHeaderSize+64)
	return &b
}

func (d *Dir) putBuf(b *[]byte) {
	if cap(*b) > 2*maxChunkSize {
		return // keep the pool from pinning a freak buffer
	}
	*b = (*b)[:0]
	d.bufs.Put(b)
}

// marker is the line that stands for the bytes cut from a truncated log.
func marker(dropped int64) []byte {
	return fmt.Appendf(nil, "\n[drover: %d bytes of output dropped here]\n", dropped)
}
