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
// by one Dir, which holds it in memory. Reads never repair: Stat, Copy and
// Follow of a log a Dir does not hold only read its files (shared.go), and
// a Dir writes such a log only after Recover, which the master calls when it
// takes over the log's build. Opening and closing a Dir touches no log it
// does not hold.
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
	"time"

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
	// Poll is how often Follow looks at a log this Dir does not write for
	// new output; 0 means DefaultPoll.
	Poll   time.Duration
	Logger *slog.Logger
}

// DefaultPoll is Options.Poll when it is 0: about as often as the master
// flushes a live log.
const DefaultPoll = 250 * time.Millisecond

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
	poll      time.Duration
	logger    *slog.Logger
	enc       *zstd.Encoder // EncodeAll only: safe for concurrent use
	dec       *zstd.Decoder // DecodeAll only: safe for concurrent use
	bufs      sync.Pool     // *[]byte scratch for compressed and decompressed chunks
	done      chan struct{} // closed by Close, to release waiting followers
	ops       sync.WaitGroup

	mu     sync.Mutex
	closed bool
	// logs holds the logs this Dir writes; finished logs are dropped from
	// it and read straight from disk.
	logs map[int64]*log

	// created is closed, and replaced, each time this Dir starts writing a
	// log (see createdCh).
	createdMu sync.Mutex
	created   chan struct{}

	// dirMu serialises creating and removing bucket directories, so that a
	// Delete emptying a bucket cannot remove it under a log being created.
	dirMu sync.Mutex
}

// Open opens the log directory dir, creating it if needed.
func Open(dir string, opts Options) (*Dir, error) {
	switch {
	case opts.MaxBytes < 0:
		return nil, drover.Errorf(drover.Invalid, "log store: negative MaxBytes %d", opts.MaxBytes)
	case opts.Poll < 0:
		return nil, drover.Errorf(drover.Invalid, "log store: negative Poll %v", opts.Poll)
	case opts.ChunkSize < 0 || opts.ChunkSize > maxChunkSize:
		return nil, drover.Errorf(drover.Invalid, "log store: ChunkSize %d out of range [0, %d]", opts.ChunkSize, maxChunkSize)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Poll == 0 {
		opts.Poll = DefaultPoll
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
		poll:      opts.Poll,
		logger:    logger.With("component", "logstore"),
		enc:       enc,
		dec:       dec,
		done:      make(chan struct{}),
		logs:      make(map[int64]*log),
		created:   make(chan struct{}),
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
// Appends to a finished log fail with Conflict, as do appends to a live log
// this Dir does not hold (see Recover). Append is safe for concurrent use,
// on the same log or different ones.
func (d *Dir) Append(id int64, p []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	l, finished, err := d.lockWritable(id, "append to")
	if err != nil {
		return err
	}
	if finished {
		return drover.Errorf(drover.Conflict, "append to log %d: log is finished", id)
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
// that does not exist is NotFound; a live log this Dir does not hold is
// Conflict.
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
		// Not in memory, so nothing is buffered; only say what it is.
		exists, complete, err := d.onDisk(id)
		switch {
		case err != nil:
			return fmt.Errorf("flush log %d: %w", id, err)
		case !exists:
			return drover.Errorf(drover.NotFound, "flush log %d: no such log", id)
		case !complete:
			return notHeld("flush", id)
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
// empty complete log; finishing a finished log does nothing; finishing a
// live log this Dir does not hold is Conflict (see Recover).
func (d *Dir) Finish(id int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	l, finished, err := d.lockWritable(id, "finish")
	if err != nil {
		return err
	}
	if finished {
		return nil
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

// Recover makes this Dir the writer of log id, a live log that no Dir
// holds: one left by a master that died, or by this one's previous life.
// What a crash left torn is cut off — never a chunk that passed the checks
// a reader applies, so nothing a reader has seen is taken back — and
// Append, Flush and Finish work on the log from then on. Only the master
// that has taken over the log's build may call it; reads never do, so that
// a reader cannot cut a log under its writer's feet. A log this Dir holds,
// or a finished one, is reported as it is; a log with no files is NotFound.
func (d *Dir) Recover(id int64) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := d.enter(); err != nil {
		return Info{}, err
	}
	defer d.leave()
	d.mu.Lock()
	l := d.logs[id]
	if l == nil {
		var err error
		// d.mu is held throughout so that no Delete removes the files
		// being repaired.
		if l, err = d.load(id); err != nil {
			d.mu.Unlock()
			return Info{}, fmt.Errorf("recover log %d: %w", id, err)
		}
		if l == nil {
			d.mu.Unlock()
			return Info{}, drover.Errorf(drover.NotFound, "recover log %d: no such log", id)
		}
		if !l.complete {
			d.logs[id] = l
			d.wakeWaiting()
		}
	}
	d.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.exists || l.deleted {
		return Info{}, drover.Errorf(drover.NotFound, "recover log %d: no such log", id)
	}
	return l.infoLocked(), nil
}

// Stat reports log id's size as a reader sees it, the bytes dropped, and
// whether it is complete. For a log this Dir writes, that is exact; for
// one it does not hold, it is what is durably readable on disk (see
// shared.go). A log with no files, or that never had an append and was not
// finished, is NotFound.
func (d *Dir) Stat(id int64) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := d.enter(); err != nil {
		return Info{}, err
	}
	defer d.leave()
	if l := d.writer(id); l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.deleted {
			return l.infoLocked(), nil
		}
		return Info{}, drover.Errorf(drover.NotFound, "log %d: no such log", id)
	}
	s := d.newShared(id)
	defer s.close()
	found, err := s.refresh(context.Background())
	if err != nil {
		return Info{}, fmt.Errorf("stat log %d: %w", id, err)
	}
	if !found {
		return Info{}, drover.Errorf(drover.NotFound, "log %d: no such log", id)
	}
	return s.info(), nil
}

// Copy writes the bytes of log id from offset to w and returns how many it
// wrote. The bytes are those a reader sees (head, marker, tail); for a log
// being written, those flushed so far, or, when another process writes
// it, those durably readable on disk. An offset at or past the end writes
// nothing.
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
	var n int64
	write := func(p []byte) error {
		m, err := w.Write(p)
		n += int64(m)
		if err == nil && m < len(p) {
			err = io.ErrShortWrite
		}
		return err
	}
	var err error
	if l := d.writer(id); l != nil {
		s := l.snapshot()
		if s.deleted {
			return 0, drover.Errorf(drover.NotFound, "log %d: no such log", id)
		}
		if offset >= s.rawEnd {
			return 0, nil
		}
		r := d.newReader(id)
		defer r.close()
		_, err = r.emit(ctx, offset, s.rawEnd, s.nrec, -1, write)
	} else {
		s := d.newShared(id)
		defer s.close()
		found, rerr := s.refresh(ctx)
		switch {
		case rerr != nil:
			return 0, fmt.Errorf("read log %d: %w", id, rerr)
		case !found:
			return 0, drover.Errorf(drover.NotFound, "log %d: no such log", id)
		}
		_, err = s.emit(ctx, offset, -1, write)
	}
	if err != nil {
		return n, fmt.Errorf("read log %d: %w", id, err)
	}
	return n, nil
}

// Follow calls fn with the bytes of log id from offset: first those stored,
// then each chunk as it becomes readable, without gap or duplicate, until
// the log is complete (nil), ctx is done (ctx.Err()), fn fails (its error),
// the log is deleted (NotFound) or the Dir closes (Unavailable). The slice
// passed to fn is valid only during the call.
//
// A log this Dir writes wakes its followers at each flush. A log it does
// not hold — another master's, or one no master has taken over yet — is
// looked at every Options.Poll, read-only, through a change of writer too;
// a follower waiting so switches to the flushes as soon as this Dir
// creates or recovers the log.
//
// Follow waits for a log that has no output yet, since the master creates a
// step's log with its first output; callers that know from the database that
// a log is gone for good should not follow it. While a truncated log is live,
// followers receive its head; the marker and the tail arrive at Finish.
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
	s := d.newShared(id)
	defer s.close()
	var tick *time.Ticker
	next := -1 // the record offset is probably in
	for {
		// Taken before looking, so that a log created meanwhile wakes us.
		created := d.createdCh()
		if l := d.writer(id); l != nil {
			return d.followHeld(ctx, l, offset, fn)
		}
		found, err := s.refresh(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow log %d: %w", id, err)
		}
		if found && offset < s.rawEnd {
			var fnErr error
			next, err = s.emit(ctx, offset, next, func(p []byte) error {
				if err := fn(p); err != nil {
					fnErr = err
					return err
				}
				offset += int64(len(p))
				return nil
			})
			switch {
			case err == nil:
			case fnErr != nil:
				return fmt.Errorf("follow log %d: %w", id, err)
			case ctx.Err() != nil:
				return ctx.Err()
			case s.complete:
				if !exists(s.p.index()) {
					return drover.Errorf(drover.NotFound, "follow log %d: log deleted", id)
				}
				return fmt.Errorf("follow log %d: %w", id, err)
			default:
				// A chunk that passed the checks did not read back, as
				// when a network file system shows an index record
				// before an earlier frame: try again from the same
				// offset. A deleted log is noticed by the next refresh.
				d.logger.Debug("following log: chunk not readable yet", "log", id, "offset", offset, "err", err)
				next = -1
			}
		}
		if s.complete && offset >= s.rawEnd {
			return nil
		}
		s.closeFiles()
		if tick == nil {
			tick = time.NewTicker(d.poll)
			defer tick.Stop()
		}
		select {
		case <-tick.C:
		case <-created:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return drover.Errorf(drover.Unavailable, "follow log %d: log store closed", id)
		}
	}
}

// followHeld is Follow for log l, which this Dir writes: woken by its
// flushes, and exact.
func (d *Dir) followHeld(ctx context.Context, l *log, offset int64, fn func([]byte) error) error {
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
			return drover.Errorf(drover.NotFound, "follow log %d: log deleted", l.id)
		}
		if offset < s.rawEnd {
			if r == nil {
				r = d.newReader(l.id)
			}
			var err error
			if next, err = r.emit(ctx, offset, s.rawEnd, s.nrec, next, fn); err != nil {
				return fmt.Errorf("follow log %d: %w", l.id, err)
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
			return drover.Errorf(drover.Unavailable, "follow log %d: log store closed", l.id)
		}
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
	// d.mu is held throughout so that no call can recover the log from the
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

// writer returns log id if this Dir writes it (holds it in memory with
// files made), else nil.
func (d *Dir) writer(id int64) *log {
	d.mu.Lock()
	l := d.logs[id]
	d.mu.Unlock()
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.exists || l.gone {
		return nil
	}
	return l
}

// lockWritable returns log id locked for writing: the one this Dir holds,
// or a new one when the log has no files yet. finished reports, with no log
// and no error, that the log is finished on disk. A live log on disk that
// this Dir does not hold belongs to another writer, or to none until a
// master takes it over with Recover: Conflict, for op.
func (d *Dir) lockWritable(id int64, op string) (l *log, finished bool, err error) {
	for {
		l, finished, err = d.writable(id, op)
		if err != nil || finished {
			return nil, finished, err
		}
		l.mu.Lock()
		if l.gone && !l.complete {
			// Dropped from memory (deleted) before it could be locked:
			// writes must never go to a log no longer in the map.
			l.mu.Unlock()
			continue
		}
		return l, false, nil
	}
}

func (d *Dir) writable(id int64, op string) (*log, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, drover.Errorf(drover.Unavailable, "log store closed")
	}
	if l := d.logs[id]; l != nil {
		return l, false, nil
	}
	exists, complete, err := d.onDisk(id)
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("%s log %d: %w", op, id, err)
	case complete:
		return nil, true, nil
	case exists:
		return nil, false, notHeld(op, id)
	}
	l := d.newLog(id)
	d.logs[id] = l
	return l, false, nil
}

func notHeld(op string, id int64) error {
	return drover.Errorf(drover.Conflict, "%s log %d: the log is live and this log store does not write it (another master's, or one left by a crash until Recover takes it over)", op, id)
}

// onDisk tells whether log id has files, and whether it is finished,
// reading them only.
func (d *Dir) onDisk(id int64) (exists, complete bool, err error) {
	idx, err := os.Open(d.pathsOf(id).index())
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer idx.Close()
	fi, err := idx.Stat()
	if err != nil {
		return false, false, err
	}
	if n := int((fi.Size() - headerSize) / recordSize); fi.Size() >= headerSize && n > 0 {
		if last, err := readRecord(idx, n-1); err == nil && last.complete() {
			return true, true, nil
		}
	}
	return true, false, nil
}

// createdCh returns a channel that is closed when this Dir next starts
// writing a log, so that followers polling for one it does not hold switch
// to its flushes at once.
func (d *Dir) createdCh() <-chan struct{} {
	d.createdMu.Lock()
	defer d.createdMu.Unlock()
	return d.created
}

// wakeWaiting wakes the followers waiting in createdCh: this Dir has
// started writing a log.
func (d *Dir) wakeWaiting() {
	d.createdMu.Lock()
	defer d.createdMu.Unlock()
	close(d.created)
	d.created = make(chan struct{})
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
