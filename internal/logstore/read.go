package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"github.com/drover-ci/drover"
)

// recordBatch is how many index records a reader fetches at once: one
// syscall per 2 KiB of index instead of one per chunk.
const recordBatch = 64

// reader reads chunks of one log through its own file handles, so that it
// needs no lock and is not disturbed when the writer closes or the log is
// deleted (the open handles keep the unlinked files readable).
type reader struct {
	d         *Dir
	p         paths
	idx, data *os.File

	recs     [recordBatch * recordSize]byte
	recFirst int // index of the first record in recs
	recN     int // records in recs

	fb, rb *[]byte // frame and raw scratch
}

func (d *Dir) newReader(id int64) *reader {
	return &reader{d: d, p: d.pathsOf(id)}
}

// newReaderOn returns a reader of log id on files already open, which it
// closes with itself.
func (d *Dir) newReaderOn(id int64, idx, data *os.File) *reader {
	return &reader{d: d, p: d.pathsOf(id), idx: idx, data: data, fb: d.getBuf(), rb: d.getBuf()}
}

func (r *reader) open() error {
	if r.idx != nil {
		return nil
	}
	idx, err := os.Open(r.p.index())
	if err != nil {
		return notFound(err)
	}
	data, err := os.Open(r.p.data())
	if err != nil {
		idx.Close()
		return notFound(err)
	}
	r.idx, r.data = idx, data
	r.fb, r.rb = r.d.getBuf(), r.d.getBuf()
	return nil
}

func (r *reader) close() {
	if r.idx != nil {
		r.idx.Close()
		r.data.Close()
		r.d.putBuf(r.fb)
		r.d.putBuf(r.rb)
		r.idx, r.data, r.fb, r.rb = nil, nil, nil, nil
	}
}

// record returns record i of the first nrec, fetching a batch when needed.
func (r *reader) record(i, nrec int) (record, error) {
	if i < r.recFirst || i >= r.recFirst+r.recN {
		n := min(recordBatch, nrec-i)
		b := r.recs[:n*recordSize]
		if _, err := r.idx.ReadAt(b, headerSize+int64(i)*recordSize); err != nil {
			r.recN = 0
			return record{}, fmt.Errorf("read records %d-%d: %w", i, i+n-1, err)
		}
		r.recFirst, r.recN = i, n
	}
	off := (i - r.recFirst) * recordSize
	rec, err := unmarshalRecord(r.recs[off : off+recordSize])
	if err != nil {
		return record{}, fmt.Errorf("record %d: %w", i, err)
	}
	return rec, nil
}

// emit calls fn with the bytes [from, to) of the log, which the first nrec
// records cover. hint, if not negative, is the record where from probably
// starts (a follower's position), saving the search. It returns the index
// of the record after the last one read.
func (r *reader) emit(ctx context.Context, from, to int64, nrec, hint int, fn func([]byte) error) (int, error) {
	if err := r.open(); err != nil {
		return 0, err
	}
	i := -1
	if hint >= 0 && hint < nrec {
		if rec, err := r.record(hint, nrec); err == nil && rec.rawOff <= from && from < rec.rawEnd() {
			i = hint
		}
	}
	if i < 0 {
		var err error
		if i, err = r.search(from, nrec); err != nil {
			return 0, err
		}
	}
	for pos := from; pos < to; i++ {
		if err := ctx.Err(); err != nil {
			return i, err
		}
		if i >= nrec {
			return i, fmt.Errorf("index ends at record %d before offset %d", nrec, pos)
		}
		rec, err := r.record(i, nrec)
		if err != nil {
			return i, err
		}
		raw, err := r.d.readFrame(r.data, rec.compOff, rec.compLen, rec.dataCRC, rec.rawLen, r.fb, r.rb)
		if err != nil {
			return i, fmt.Errorf("chunk %d: %w", i, err)
		}
		lo, hi := pos-rec.rawOff, min(to, rec.rawEnd())-rec.rawOff
		if lo < 0 || lo > hi {
			return i, fmt.Errorf("chunk %d at %d does not hold offset %d", i, rec.rawOff, pos)
		}
		if err := fn(raw[lo:hi]); err != nil {
			return i, err
		}
		pos = rec.rawOff + hi
	}
	return i, nil
}

// search finds the first of nrec records that ends after offset.
func (r *reader) search(offset int64, nrec int) (int, error) {
	var err error
	i := sort.Search(nrec, func(i int) bool {
		if err != nil {
			return true
		}
		var rec record
		rec, err = r.record(i, nrec)
		return err != nil || rec.rawEnd() > offset
	})
	return i, err
}

// readFrame reads the frame of compLen bytes at off, checks it against crc
// and decompresses it, expecting rawLen bytes. The result lives in rb.
func (d *Dir) readFrame(f io.ReaderAt, off int64, compLen, crc, rawLen uint32, fb, rb *[]byte) ([]byte, error) {
	frame := growTo(fb, int(compLen))
	if _, err := f.ReadAt(frame, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame at %d: %w", off, err)
	}
	if got := checksum(frame); got != crc {
		return nil, fmt.Errorf("frame at %d: checksum %08x, want %08x", off, got, crc)
	}
	raw := growTo(rb, int(rawLen))
	raw, err := d.dec.DecodeAll(frame, raw[:0])
	if err != nil {
		return nil, fmt.Errorf("decompress frame at %d: %w", off, err)
	}
	if len(raw) != int(rawLen) {
		return nil, fmt.Errorf("frame at %d holds %d bytes, want %d", off, len(raw), rawLen)
	}
	return raw, nil
}

// growTo returns (*b)[:n], growing *b if it is too small.
func growTo(b *[]byte, n int) []byte {
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return *b
}

// notFound gives a missing file, which means the log was deleted since its
// state was taken, the kind callers expect of a deleted log.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return drover.Errorf(drover.NotFound, "log deleted: %w", err)
	}
	return err
}
