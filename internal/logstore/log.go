package logstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Creating a log retries while another Dir on the same directory removes
// the bucket under it (see createLocked). An rmdir in progress can leave the
// bucket visible to MkdirAll but closed to new files for a while on a busy
// disk, so retries pause rather than spin; createRetryFor only stops a loop
// on an error that persists, such as a dangling symlink.
const (
	createRetryPause = time.Millisecond
	createRetryFor   = 2 * time.Second
)

// log is the state of one log. Writers hold mu for the whole of an append,
// flush or finish; readers hold it only to take a snapshot, then read the
// files on their own handles, which is safe because chunks and records are
// never changed once a snapshot can see them.
type log struct {
	d     *Dir
	id    int64
	paths paths

	mu sync.Mutex
	// exists is false until the log's files are made, at its first append
	// or finish.
	exists   bool
	complete bool
	// gone means the log was dropped from Dir.logs while unfinished;
	// writers holding it must acquire it again.
	gone    bool
	deleted bool
	// limit is the MaxBytes the log was created with; head is the size of
	// the part kept from the start.
	limit, head int64
	data, idx   *os.File // open for writing while live; nil after Finish
	nrec        int      // chunk records readable
	rawEnd      int64    // bytes readable
	compEnd     int64    // end of the last readable frame
	dropped     int64    // final count, once complete
	pending     []byte   // bytes not yet in a chunk, at most chunkSize
	tail        *tail    // non-nil once the head of a limited log is full
	// changed is closed, and replaced, whenever readers have something new
	// to see: a chunk, completion, deletion.
	changed chan struct{}
}

func (d *Dir) newLog(id int64) *log {
	return &log{d: d, id: id, paths: d.pathsOf(id), changed: make(chan struct{})}
}

// snapshot is what a reader may read without the lock.
type snapshot struct {
	exists, complete, deleted bool
	nrec                      int
	rawEnd                    int64
	changed                   <-chan struct{}
}

func (l *log) snapshot() snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return snapshot{
		exists:   l.exists,
		complete: l.complete,
		deleted:  l.deleted,
		nrec:     l.nrec,
		rawEnd:   l.rawEnd,
		changed:  l.changed,
	}
}

func (l *log) infoLocked() Info {
	info := Info{Bytes: l.rawEnd, Dropped: l.dropped, Complete: l.complete, Chunks: l.nrec}
	if !l.complete && l.tail != nil {
		info.Dropped = l.tail.wouldDrop()
	}
	return info
}

func (l *log) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// inTail reports whether new output goes to the tail: the log is limited and
// its head is full.
func (l *log) inTail() bool { return l.limit > 0 && l.rawEnd >= l.head }

func (l *log) setLimit(limit int64) {
	l.limit, l.head = limit, limit/2
}

// createLocked makes the files of a new log.
func (l *log) createLocked() error {
	if l.exists {
		return nil
	}
	d := l.d
	d.dirMu.Lock()
	defer d.dirMu.Unlock()
	// Leftovers of an earlier log with this id (a Delete that failed half
	// way) must not be mistaken for this one's tail. Segments never outlive
	// their index, so only a log whose files remain can have any: a fresh
	// id costs no listing of the bucket, which holds a thousand logs.
	if exists(l.paths.index()) || exists(l.paths.data()) {
		if err := removeSegments(l.paths); err != nil {
			return fmt.Errorf("create log %d: %w", l.id, err)
		}
	}
	// The data file comes first: a crash between the two leaves a data file
	// without an index, which is no log, rather than an index whose data
	// file is missing.
	var data *os.File
	for start, retry := time.Now(), false; ; retry = true {
		if retry {
			time.Sleep(createRetryPause)
		}
		err := os.MkdirAll(l.paths.bucket, 0o755)
		if err == nil {
			data, err = os.OpenFile(l.paths.data(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err == nil {
				break
			}
		}
		// dirMu does not cover another Dir on the same directory (another
		// master), which may create the bucket and remove it again, empty,
		// in the middle of MkdirAll (EEXIST) or before the file is in
		// (ENOENT). Once the data file is in, the bucket stays.
		racing := errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist)
		if !racing || time.Since(start) > createRetryFor {
			return fmt.Errorf("create log %d: %w", l.id, err)
		}
	}
	idx, err := os.OpenFile(l.paths.index(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		data.Close()
		return fmt.Errorf("create log %d: %w", l.id, err)
	}
	if _, err := idx.WriteAt(marshalHeader(d.maxBytes), 0); err != nil {
		data.Close()
		idx.Close()
		return fmt.Errorf("create log %d: %w", l.id, err)
	}
	l.data, l.idx = data, idx
	l.exists = true
	l.setLimit(d.maxBytes)
	if l.inTail() {
		l.tail = newTail(l)
	}
	d.wakeWaiting()
	return nil
}

// load reads log id from disk for Recover: nil if it does not exist. An
// unfinished log is repaired: records and frames a crash left incomplete are cut off, and
// its files stay open for appending.
func (d *Dir) load(id int64) (*log, error) {
	l := d.newLog(id)
	idx, err := os.OpenFile(l.paths.index(), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			idx.Close()
			if l.data != nil {
				l.data.Close()
			}
		}
	}()
	fi, err := idx.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	l.exists = true
	if size < headerSize {
		// Torn at creation: the log is empty. Start it afresh under the
		// current limit.
		d.logger.Warn("log index header torn, starting the log afresh", "log", id, "size", size)
		if _, err := idx.WriteAt(marshalHeader(d.maxBytes), 0); err != nil {
			return nil, err
		}
		size = headerSize
		l.setLimit(d.maxBytes)
	} else {
		hdr := make([]byte, headerSize)
		if _, err := idx.ReadAt(hdr, 0); err != nil {
			return nil, err
		}
		limit, err := unmarshalHeader(hdr)
		if err != nil {
			return nil, err
		}
		l.setLimit(limit)
	}
	n := int((size - headerSize) / recordSize)
	if n > 0 {
		last, err := readRecord(idx, n-1)
		if err == nil && last.complete() {
			l.complete = true
			l.nrec = n - 1
			l.rawEnd = last.rawOff
			l.dropped = last.compOff
			idx.Close()
			ok = true
			return l, nil
		}
	}

	data, err := os.OpenFile(l.paths.data(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	l.data = data
	dfi, err := data.Stat()
	if err != nil {
		return nil, err
	}
	dataSize := dfi.Size()
	var last record
	kept := n
	for kept > 0 {
		r, err := l.validRecord(idx, kept-1, dataSize)
		if err == nil {
			last = r
			break
		}
		d.logger.Debug("dropping torn chunk of log", "log", id, "chunk", kept-1, "err", err)
		kept--
	}
	l.idx = idx
	l.nrec = kept
	l.rawEnd, l.compEnd = last.rawEnd(), last.compEnd()
	if err := idx.Truncate(headerSize + int64(kept)*recordSize); err != nil {
		return nil, err
	}
	if err := data.Truncate(l.compEnd); err != nil {
		return nil, err
	}
	if dataSize > l.compEnd || kept < n {
		d.logger.Warn("recovered unfinished log", "log", id, "chunks", kept, "bytes", l.rawEnd,
			"garbage_bytes", dataSize-l.compEnd, "records_dropped", n-kept)
	}
	if l.inTail() {
		t, err := recoverTail(l)
		if err != nil {
			return nil, err
		}
		l.tail = t
	} else if err := removeSegments(l.paths); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// validRecord reads record i and checks it against its neighbour, the data
// file and, by CRC, its frame.
func (l *log) validRecord(idx *os.File, i int, dataSize int64) (record, error) {
	r, err := readRecord(idx, i)
	if err != nil {
		return record{}, err
	}
	var prev record
	if i > 0 {
		if prev, err = readRecord(idx, i-1); err != nil {
			return record{}, fmt.Errorf("previous record: %w", err)
		}
	}
	if err := checkChunk(r, prev, dataSize, l.limit, l.head); err != nil {
		return record{}, err
	}
	frame := make([]byte, r.compLen)
	if err := checkFrame(l.data, r, frame); err != nil {
		return record{}, err
	}
	return r, nil
}

// checkChunk checks chunk record r of an unfinished log against prev, the
// record before it (zero for the first), the size of the data file and the
// log's limit and head size. Recovery (load) and readers of a log another
// process writes (sharedLog) apply the same rules, so that a reader never
// sees a chunk that a writer taking the log over would cut off.
func checkChunk(r, prev record, dataSize, limit, head int64) error {
	switch {
	case r.complete() || prev.complete():
		return errors.New("complete record before the end")
	case r.rawOff != prev.rawEnd() || r.compOff != prev.compEnd():
		return errors.New("record not contiguous with the one before")
	case r.compEnd() > dataSize:
		return fmt.Errorf("frame ends at %d past the data file's %d bytes", r.compEnd(), dataSize)
	case limit > 0 && r.rawEnd() > head:
		// Only Finish writes past the head of a limited log, and it
		// writes the complete record last: these are from a Finish cut
		// short, which will be done again from the tail segments.
		return errors.New("chunk past the head of an unfinished truncated log")
	}
	return nil
}

// checkFrame reads the frame of r from data into frame, which must be
// r.compLen bytes long, and checks it against r's checksum.
func checkFrame(data io.ReaderAt, r record, frame []byte) error {
	if _, err := data.ReadAt(frame, r.compOff); err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	if checksum(frame) != r.dataCRC {
		return errors.New("frame checksum mismatch")
	}
	return nil
}

func readRecord(idx io.ReaderAt, i int) (record, error) {
	var b [recordSize]byte
	if _, err := idx.ReadAt(b[:], headerSize+int64(i)*recordSize); err != nil {
		return record{}, fmt.Errorf("read record %d: %w", i, err)
	}
	r, err := unmarshalRecord(b[:])
	if err != nil {
		return record{}, fmt.Errorf("record %d: %w", i, err)
	}
	return r, nil
}

// appendLocked buffers p, writing chunks as they fill. The head of a limited
// log is cut exactly at its size, so that what follows is all tail.
func (l *log) appendLocked(p []byte) error {
	chunk := l.d.chunkSize
	for len(p) > 0 {
		if l.pending == nil {
			l.pending = make([]byte, 0, chunk)
		}
		room := chunk - len(l.pending)
		tail := l.inTail()
		if !tail && l.limit > 0 {
			room = int(min(int64(room), l.head-l.rawEnd-int64(len(l.pending))))
		}
		n := min(room, len(p))
		l.pending = append(l.pending, p[:n]...)
		p = p[n:]
		full := len(l.pending) == chunk ||
			(!tail && l.limit > 0 && l.rawEnd+int64(len(l.pending)) == l.head)
		if !full {
			continue
		}
		if err := l.flushLocked(); err != nil {
			return err
		}
	}
	return nil
}

// flushLocked writes the pending bytes as a chunk: readable in the data file
// while the head has room, otherwise into the tail ring.
func (l *log) flushLocked() error {
	if len(l.pending) == 0 {
		return nil
	}
	if l.inTail() {
		if l.tail == nil {
			l.tail = newTail(l)
		}
		if err := l.tail.write(l.pending); err != nil {
			return err
		}
		l.pending = l.pending[:0]
		return nil
	}
	if err := l.writeChunkLocked(l.pending); err != nil {
		return err
	}
	l.pending = l.pending[:0]
	if l.inTail() && l.tail == nil {
		l.tail = newTail(l)
	}
	l.broadcastLocked()
	return nil
}

// writeChunkLocked compresses raw into a frame at the end of the data file
// and records it. A failed write leaves the state as it was; the next
// attempt writes over whatever part of it reached the disk.
func (l *log) writeChunkLocked(raw []byte) error {
	buf := l.d.getBuf()
	defer l.d.putBuf(buf)
	frame := l.d.enc.EncodeAll(raw, (*buf)[:0])
	*buf = frame
	if _, err := l.data.WriteAt(frame, l.compEnd); err != nil {
		return fmt.Errorf("write chunk %d: %w", l.nrec, err)
	}
	r := record{
		rawOff:  l.rawEnd,
		compOff: l.compEnd,
		compLen: uint32(len(frame)),
		rawLen:  uint32(len(raw)),
		dataCRC: checksum(frame),
	}
	if err := l.writeRecordLocked(r); err != nil {
		return err
	}
	l.nrec++
	l.rawEnd = r.rawEnd()
	l.compEnd = r.compEnd()
	return nil
}

func (l *log) writeRecordLocked(r record) error {
	var b [recordSize]byte
	r.marshal(b[:])
	if _, err := l.idx.WriteAt(b[:], headerSize+int64(l.nrec)*recordSize); err != nil {
		return fmt.Errorf("write record %d: %w", l.nrec, err)
	}
	return nil
}

// finishLocked completes the log. When the log has a tail, the tail is
// re-chunked into the data file behind the marker. Until the complete record
// is durable the tail segments stay, and a failure rolls the in-memory state
// back to the head, so Finish can be tried again, after a crash too.
func (l *log) finishLocked() error {
	if err := l.flushLocked(); err != nil {
		return err
	}
	nrec, rawEnd, compEnd := l.nrec, l.rawEnd, l.compEnd
	var dropped int64
	// Only a log with a tail can have tail segments: a fresh log's
	// leftovers are removed at create, a loaded one's at load. Listing the
	// bucket (a thousand logs) for every finished log would cost more than
	// the rest of Finish.
	hadTail := l.tail != nil
	if l.tail != nil {
		var err error
		if dropped, err = l.tail.finish(); err != nil {
			l.nrec, l.rawEnd, l.compEnd = nrec, rawEnd, compEnd
			return err
		}
	}
	err := l.data.Sync()
	if err == nil {
		err = l.writeRecordLocked(completeRecord(l.rawEnd, dropped))
	}
	if err == nil {
		err = l.idx.Sync()
	}
	if err == nil {
		err = syncDir(l.paths.bucket)
	}
	if err != nil {
		l.nrec, l.rawEnd, l.compEnd = nrec, rawEnd, compEnd
		return err
	}
	l.complete = true
	l.dropped = dropped
	if err := l.releaseLocked(); err != nil {
		l.d.logger.Warn("closing finished log", "log", l.id, "err", err)
	}
	if hadTail {
		if err := removeSegments(l.paths); err != nil {
			// The complete record makes them garbage; a later load or
			// Delete removes them.
			l.d.logger.Warn("removing tail segments of finished log", "log", l.id, "err", err)
		}
	}
	l.broadcastLocked()
	return nil
}

// shutdownLocked writes what is buffered and closes the files, for Close.
func (l *log) shutdownLocked() error {
	if !l.exists || l.complete || l.deleted {
		return nil
	}
	var errs []error
	if err := l.flushLocked(); err != nil {
		errs = append(errs, fmt.Errorf("flush log %d: %w", l.id, err))
	}
	for _, f := range []*os.File{l.data, l.idx} {
		if f != nil {
			if err := f.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("sync log %d: %w", l.id, err))
			}
		}
	}
	if err := l.releaseLocked(); err != nil {
		errs = append(errs, err)
	}
	l.gone = true
	return errors.Join(errs...)
}

// releaseLocked closes the log's files and drops its buffers.
func (l *log) releaseLocked() error {
	var errs []error
	for _, f := range []*os.File{l.data, l.idx} {
		if f != nil {
			if err := f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close log %d: %w", l.id, err))
			}
		}
	}
	l.data, l.idx = nil, nil
	if l.tail != nil {
		if err := l.tail.close(); err != nil {
			errs = append(errs, err)
		}
		l.tail = nil
	}
	l.pending = nil
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeSegments removes the tail segments of a log, if any.
func removeSegments(p paths) error {
	seqs, err := p.segments()
	if err != nil {
		return err
	}
	var errs []error
	for _, seq := range seqs {
		if err := os.Remove(p.segment(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
