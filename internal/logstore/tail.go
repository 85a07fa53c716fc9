package logstore

import (
	"errors"
	"fmt"
	"os"
)

// tail keeps the newest output of a log whose head is full: at least keep
// bytes when that many were written, in segment files of about segTarget
// bytes each, dropping the oldest segment whenever the others still hold
// keep bytes. Disk use is thus about keep+segTarget, whatever the output.
type tail struct {
	l         *log
	keep      int64 // bytes of tail the finished log shows
	segTarget int64
	start     int64 // stream offset of the first tail byte: the head size
	end       int64 // stream offset after the last tail byte written
	kept      int64 // bytes held in segs
	segs      []segment
	cur       *os.File // the newest segment while it takes writes; nil: start a new one
	nextSeq   int64
}

type segment struct {
	seq      int64
	rawStart int64 // stream offset of its first byte
	rawLen   int64
	size     int64 // file size
}

func newTail(l *log) *tail {
	keep := l.limit - l.head
	return &tail{
		l:    l,
		keep: keep,
		// Four segments to the tail keep the overshoot on disk to a quarter
		// of the tail, with few files; no smaller than a chunk, since a
		// segment holds whole chunks.
		segTarget: max(keep/4, int64(l.d.chunkSize)),
		start:     l.head,
		end:       l.head,
	}
}

// wouldDrop is the number of bytes cut if the log finished now.
func (t *tail) wouldDrop() int64 { return max(0, t.end-t.start-t.keep) }

// write adds raw as one chunk to the newest segment.
func (t *tail) write(raw []byte) error {
	d := t.l.d
	if t.cur == nil {
		f, err := os.OpenFile(t.l.paths.segment(t.nextSeq), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("create tail segment: %w", err)
		}
		t.segs = append(t.segs, segment{seq: t.nextSeq, rawStart: t.end})
		t.nextSeq++
		t.cur = f
	}
	seg := &t.segs[len(t.segs)-1]
	buf := d.getBuf()
	defer d.putBuf(buf)
	var zero [tailHeaderSize]byte
	b := d.enc.EncodeAll(raw, append((*buf)[:0], zero[:]...))
	*buf = b
	h := tailHeader{
		rawOff:  t.end,
		rawLen:  uint32(len(raw)),
		compLen: uint32(len(b) - tailHeaderSize),
		dataCRC: checksum(b[tailHeaderSize:]),
	}
	h.marshal(b[:tailHeaderSize])
	if _, err := t.cur.WriteAt(b, seg.size); err != nil {
		return fmt.Errorf("write tail segment %d: %w", seg.seq, err)
	}
	seg.size += int64(len(b))
	seg.rawLen += int64(len(raw))
	t.end += int64(len(raw))
	t.kept += int64(len(raw))
	if seg.rawLen >= t.segTarget || seg.size >= t.segTarget {
		err := t.cur.Close()
		t.cur = nil
		if err != nil {
			return fmt.Errorf("close tail segment %d: %w", seg.seq, err)
		}
	}
	t.dropOld()
	return nil
}

// dropOld removes the oldest segments while the rest hold the whole tail.
func (t *tail) dropOld() {
	for len(t.segs) > 1 && t.kept-t.segs[0].rawLen >= t.keep {
		s := t.segs[0]
		if err := os.Remove(t.l.paths.segment(s.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			// Keep it listed so the next write tries again; the tail is
			// still right, only bigger on disk.
			t.l.d.logger.Warn("removing tail segment", "log", t.l.id, "segment", s.seq, "err", err)
			return
		}
		t.kept -= s.rawLen
		t.segs = t.segs[1:]
	}
}

// finish appends the kept tail to the log's readable chunks, behind the
// marker when bytes were dropped, re-chunked to full chunks whatever the
// flushes made of it. It returns the number of bytes dropped. The segments
// are left for the caller to remove once the log is durably complete.
func (t *tail) finish() (int64, error) {
	l, d := t.l, t.l.d
	total := t.end - t.start
	show := min(t.keep, total)
	if t.kept < show {
		// Only after a crash tore the newest chunks, once older segments
		// had been let go: show what is left and count the rest dropped.
		l.d.logger.Warn("tail of truncated log is short", "log", l.id, "kept", t.kept, "want", show)
		show = t.kept
	}
	dropped := total - show
	skip := t.kept - show

	chunk := d.chunkSize
	out := l.pending[:0]
	if out == nil {
		out = make([]byte, 0, chunk)
	}
	defer func() { l.pending = out[:0] }()
	emit := func(p []byte) error {
		for len(p) > 0 {
			n := min(chunk-len(out), len(p))
			out = append(out, p[:n]...)
			p = p[n:]
			if len(out) == chunk {
				if err := l.writeChunkLocked(out); err != nil {
					return err
				}
				out = out[:0]
			}
		}
		return nil
	}
	if dropped > 0 {
		if err := emit(marker(dropped)); err != nil {
			return 0, err
		}
	}
	fb, rb := d.getBuf(), d.getBuf()
	defer d.putBuf(fb)
	defer d.putBuf(rb)
	var shown int64
	for _, s := range t.segs {
		err := t.scan(s, fb, rb, func(raw []byte) error {
			if skip > 0 {
				n := min(skip, int64(len(raw)))
				raw = raw[n:]
				skip -= n
			}
			shown += int64(len(raw))
			return emit(raw)
		})
		if err != nil {
			return 0, err
		}
	}
	if len(out) > 0 {
		if err := l.writeChunkLocked(out); err != nil {
			return 0, err
		}
		out = out[:0]
	}
	if shown != show {
		return 0, fmt.Errorf("tail segments yielded %d bytes, want %d", shown, show)
	}
	return dropped, nil
}

// scan calls fn with each chunk of segment s, decompressed.
func (t *tail) scan(s segment, fb, rb *[]byte, fn func([]byte) error) error {
	d := t.l.d
	f, err := os.Open(t.l.paths.segment(s.seq))
	if err != nil {
		return fmt.Errorf("open tail segment %d: %w", s.seq, err)
	}
	defer f.Close()
	var hb [tailHeaderSize]byte
	for off := int64(0); off < s.size; {
		if _, err := f.ReadAt(hb[:], off); err != nil {
			return fmt.Errorf("tail segment %d at %d: %w", s.seq, off, err)
		}
		h, err := unmarshalTailHeader(hb[:])
		if err != nil {
			return fmt.Errorf("tail segment %d at %d: %w", s.seq, off, err)
		}
		raw, err := d.readFrame(f, off+tailHeaderSize, h.compLen, h.dataCRC, h.rawLen, fb, rb)
		if err != nil {
			return fmt.Errorf("tail segment %d at %d: %w", s.seq, off, err)
		}
		if err := fn(raw); err != nil {
			return err
		}
		off += tailHeaderSize + int64(h.compLen)
	}
	return nil
}

func (t *tail) close() error {
	if t.cur == nil {
		return nil
	}
	err := t.cur.Close()
	t.cur = nil
	if err != nil {
		return fmt.Errorf("close tail segment: %w", err)
	}
	return nil
}

// recoverTail rebuilds the tail of an unfinished log from its segments after
// a restart. It keeps the longest run of whole, contiguous chunks ending at
// the newest one it can trust: a torn chunk ends the run (it and everything
// after are removed), and a gap between segments discards the older side.
func recoverTail(l *log) (*tail, error) {
	t := newTail(l)
	seqs, err := l.paths.segments()
	if err != nil {
		return nil, fmt.Errorf("list tail segments: %w", err)
	}
	var hb [tailHeaderSize]byte
	torn := false
	for _, seq := range seqs {
		t.nextSeq = seq + 1
		name := l.paths.segment(seq)
		if torn {
			if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			continue
		}
		s, err := t.recoverSegment(seq, hb[:], &torn)
		if err != nil {
			return nil, err
		}
		if s.rawLen == 0 {
			if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			continue
		}
		t.segs = append(t.segs, s)
		t.kept += s.rawLen
		t.end = s.rawStart + s.rawLen
	}
	t.dropOld()
	return t, nil
}

// recoverSegment scans one segment, truncating it after its last good chunk
// and setting *torn if it had to. A segment that does not follow on from
// the ones before replaces them.
func (t *tail) recoverSegment(seq int64, hb []byte, torn *bool) (segment, error) {
	l := t.l
	name := l.paths.segment(seq)
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return segment{}, fmt.Errorf("open tail segment %d: %w", seq, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segment{}, err
	}
	size := fi.Size()
	s := segment{seq: seq}
	fb := l.d.getBuf()
	defer l.d.putBuf(fb)
	var off int64
	for off < size {
		bad := func(why string) {
			l.d.logger.Warn("dropping torn tail chunk", "log", l.id, "segment", seq, "offset", off, "why", why)
			*torn = true
		}
		if off+tailHeaderSize > size {
			bad("short header")
			break
		}
		if _, err := f.ReadAt(hb, off); err != nil {
			return segment{}, err
		}
		h, err := unmarshalTailHeader(hb)
		if err != nil {
			bad(err.Error())
			break
		}
		if off+tailHeaderSize+int64(h.compLen) > size {
			bad("short frame")
			break
		}
		frame := growTo(fb, int(h.compLen))
		if _, err := f.ReadAt(frame, off+tailHeaderSize); err != nil {
			return segment{}, err
		}
		if checksum(frame) != h.dataCRC {
			bad("frame checksum mismatch")
			break
		}
		if off == 0 {
			if h.rawOff < t.start {
				// Not of this log's tail (its head ends later): drop it.
				l.d.logger.Warn("dropping stray tail segment", "log", l.id, "segment", seq)
				break
			}
			s.rawStart = h.rawOff
			if len(t.segs) > 0 && h.rawOff != t.end {
				// A gap: the segments before are older than this run.
				for _, old := range t.segs {
					if err := os.Remove(l.paths.segment(old.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
						return segment{}, err
					}
				}
				t.segs, t.kept = nil, 0
			}
		} else if h.rawOff != s.rawStart+s.rawLen {
			bad("chunk not contiguous")
			break
		}
		s.rawLen += int64(h.rawLen)
		off += tailHeaderSize + int64(h.compLen)
	}
	if off < size {
		if err := f.Truncate(off); err != nil {
			return segment{}, fmt.Errorf("truncate tail segment %d: %w", seq, err)
		}
	}
	s.size = off
	return s, nil
}
