package logstore

// Reading logs that this Dir does not write.
//
// Several masters may share one log directory. Each live log has exactly one
// writer, the master driving its build, which holds the log in its Dir's
// memory; loading the log from disk as a writer does (Recover) would repair
// it, cutting off what looks torn, under the writer's feet. So every other
// reader — another master, or this one before it has taken the build over —
// opens the files read-only and never writes, truncates or keeps the log.
//
// What such a reader sees of a live log is the longest run of chunk records,
// from the first, each of which is whole (record checksum), follows on from
// the one before, lies within the data file, ends within the head of a
// truncated log, and whose frame matches its checksum: the rules of
// checkChunk and checkFrame, which load applies too. A chunk still being
// written, or left torn by a writer that died, is not visible yet; and since
// a writer taking the log over keeps at least every chunk that passes them,
// nothing a reader has seen is ever taken back. A finished log (complete
// record) is read as Copy reads it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/drover-ci/drover"
)

// sharedLog is a read-only view of a log that another process may be
// writing, refreshed from its files. It is used by one goroutine.
type sharedLog struct {
	d  *Dir
	id int64
	p  paths
	// pin holds the index file as first opened, whose identity is ident,
	// so that its inode number cannot be reused: a log deleted and created
	// afresh under the same id is another log.
	pin         *os.File
	ident       os.FileInfo
	header      bool // limit and head are known
	limit, head int64
	// The readable part: nrec chunks, the last of them last, rawEnd bytes;
	// once complete, the final size and the bytes dropped.
	nrec     int
	last     record
	rawEnd   int64
	complete bool
	dropped  int64
	// idx and data are open from refresh until emit or closeFiles.
	idx, data *os.File
}

func (d *Dir) newShared(id int64) *sharedLog {
	return &sharedLog{d: d, id: id, p: d.pathsOf(id)}
}

// closeFiles closes the files of a round.
func (s *sharedLog) closeFiles() {
	for _, f := range []*os.File{s.idx, s.data} {
		if f != nil {
			f.Close()
		}
	}
	s.idx, s.data = nil, nil
}

// close closes all files.
func (s *sharedLog) close() {
	s.closeFiles()
	if s.pin != nil {
		s.pin.Close()
		s.pin = nil
	}
}

func (s *sharedLog) deleted() error {
	return drover.Errorf(drover.NotFound, "log %d deleted", s.id)
}

// refresh opens the files afresh (which also makes a network file system
// revalidate its cache) and takes in the chunks that became readable since
// the last call. It reports false if the log has no index yet; if it had
// one before, or another one, the log was deleted: NotFound. The files stay
// open for emit.
func (s *sharedLog) refresh(ctx context.Context) (found bool, err error) {
	s.closeFiles()
	if s.pin == nil {
		pin, err := os.Open(s.p.index())
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		fi, err := pin.Stat()
		if err != nil {
			pin.Close()
			return false, err
		}
		s.pin, s.ident = pin, fi
	}
	idx, err := os.Open(s.p.index())
	if errors.Is(err, fs.ErrNotExist) {
		return false, s.deleted()
	}
	if err != nil {
		return false, err
	}
	s.idx = idx
	fi, err := idx.Stat()
	if err != nil {
		return false, err
	}
	if !os.SameFile(s.ident, fi) {
		return false, s.deleted()
	}
	size := fi.Size()
	if !s.header {
		if size < headerSize {
			return true, nil // just created: no chunk yet
		}
		var b [headerSize]byte
		if _, err := idx.ReadAt(b[:], 0); err != nil {
			return false, fmt.Errorf("read index header: %w", err)
		}
		limit, err := unmarshalHeader(b[:])
		if err != nil {
			return false, err
		}
		s.limit, s.head, s.header = limit, limit/2, true
	}
	n := int((size - headerSize) / recordSize)
	switch {
	case n < s.nrec:
		// A writer never cuts off what a reader may have seen: this is
		// another log, where ident did not tell.
		return false, s.deleted()
	case n == 0:
		return true, nil
	}
	data, err := os.Open(s.p.data())
	if errors.Is(err, fs.ErrNotExist) {
		// Delete removes the index first; the next refresh will say.
		return true, nil
	}
	if err != nil {
		return false, err
	}
	s.data = data
	if n == s.nrec {
		return true, nil
	}
	if last, err := readRecord(idx, n-1); err == nil && last.complete() {
		s.complete, s.nrec, s.rawEnd, s.dropped = true, n-1, last.rawOff, last.compOff
		return true, nil
	}
	dfi, err := data.Stat()
	if err != nil {
		return false, err
	}
	return true, s.advance(ctx, n, dfi.Size())
}

// advance takes in records nrec to n-1 as far as they pass the checks,
// stopping at the first that does not: it is torn or still being written.
func (s *sharedLog) advance(ctx context.Context, n int, dataSize int64) error {
	var batch [recordBatch * recordSize]byte
	fb := s.d.getBuf()
	defer s.d.putBuf(fb)
	defer func() { s.rawEnd = s.last.rawEnd() }()
	for s.nrec < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(recordBatch, n-s.nrec)
		b := batch[:m*recordSize]
		if _, err := s.idx.ReadAt(b, headerSize+int64(s.nrec)*recordSize); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // cut short meanwhile by a writer taking over
			}
			return fmt.Errorf("read records %d-%d: %w", s.nrec, s.nrec+m-1, err)
		}
		for j := range m {
			r, err := unmarshalRecord(b[j*recordSize : (j+1)*recordSize])
			if err == nil {
				err = checkChunk(r, s.last, dataSize, s.limit, s.head)
			}
			if err == nil {
				err = checkFrame(s.data, r, growTo(fb, int(r.compLen)))
			}
			if err != nil {
				s.d.logger.Debug("shared log: chunk not readable yet", "log", s.id, "chunk", s.nrec, "why", err)
				return nil
			}
			s.nrec++
			s.last = r
		}
	}
	return nil
}

// info is what Stat would say of the log as last refreshed.
func (s *sharedLog) info() Info {
	info := Info{Bytes: s.rawEnd, Dropped: s.dropped, Complete: s.complete, Chunks: s.nrec}
	if !s.complete && s.header && s.limit > 0 && s.rawEnd >= s.head {
		info.Dropped = s.wouldDrop()
	}
	return info
}

// wouldDrop is tail.wouldDrop for a live truncated log, from the newest
// chunk on disk in its tail segments. It reads the chunk headers only,
// trusting their checksums: it is a count, not bytes shown to anyone.
// Segments that the writer drops meanwhile are skipped.
func (s *sharedLog) wouldDrop() int64 {
	seqs, err := s.p.segments()
	if err != nil {
		s.d.logger.Debug("shared log: listing tail segments", "log", s.id, "err", err)
		return 0
	}
	for i := len(seqs) - 1; i >= 0; i-- {
		if end, ok := s.segmentEnd(seqs[i]); ok {
			// The tail starts at the head's end and keeps limit-head
			// bytes of it: end-head-(limit-head) are dropped.
			return max(0, end-s.limit)
		}
	}
	return 0
}

// segmentEnd returns the stream offset after the last whole chunk of tail
// segment seq, and false if it has none of this log's tail.
func (s *sharedLog) segmentEnd(seq int64) (int64, bool) {
	f, err := os.Open(s.p.segment(seq))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	size := fi.Size()
	var hb [tailHeaderSize]byte
	var end int64
	found := false
	for off := int64(0); off+tailHeaderSize <= size; {
		if _, err := f.ReadAt(hb[:], off); err != nil {
			break
		}
		h, err := unmarshalTailHeader(hb[:])
		if err != nil || (found && h.rawOff != end) || (!found && h.rawOff < s.head) {
			break // torn, or not of this log's tail (see recoverSegment)
		}
		next := off + tailHeaderSize + int64(h.compLen)
		if next > size {
			break
		}
		end, found = h.rawOff+int64(h.rawLen), true
		off = next
	}
	return end, found
}

// emit calls fn with the readable bytes from offset on, as refreshed; hint
// is as for reader.emit, whose result it returns. It consumes the files.
func (s *sharedLog) emit(ctx context.Context, offset int64, hint int, fn func([]byte) error) (int, error) {
	if offset >= s.rawEnd {
		return hint, nil
	}
	if s.idx == nil || s.data == nil {
		return hint, s.deleted()
	}
	r := s.d.newReaderOn(s.id, s.idx, s.data)
	s.idx, s.data = nil, nil
	defer r.close()
	return r.emit(ctx, offset, s.rawEnd, s.nrec, hint, fn)
}
