package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// On-disk layout. Each log id lives in the bucket directory dir/<id/1000>/ so
// that no single directory grows past a thousand logs' worth of files:
//
//	<id>.zst    the readable bytes: zstd frames, one per chunk, back to back
//	<id>.idx    header, then one fixed-size record per chunk of <id>.zst,
//	            then, once the log is finished, a "complete" record
//	<id>.t<seq> tail segments of a truncated log that is still being
//	            written: chunk headers each followed by a zstd frame
//
// Records are written after the frame they describe, so a crash can leave a
// frame without a record (garbage, truncated on load) but a record whose frame
// is missing only if the OS lost writes; loading checks the last records'
// frames against their CRC and drops those that do not match.
const (
	idxMagic   = "DRVLOG01"
	headerSize = 16 // magic, then the log's MaxBytes as int64
	recordSize = 32
	// completeCRC fills the data-CRC field of the complete record, which has
	// no data; together with rawLen == 0 (no chunk is empty) it marks the end.
	completeCRC = 0x444f4e45 // "DONE"

	tailHeaderSize = 24

	// maxChunkSize bounds Options.ChunkSize: records store lengths as
	// uint32, and a chunk is held whole in memory by writers and readers.
	maxChunkSize = 16 << 20
	// bucketSize is how many consecutive ids share a directory.
	bucketSize = 1000
)

func checksum(p []byte) uint32 {
	return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli))
}

// record describes one chunk of <id>.zst, or (complete) the end of the log.
type record struct {
	rawOff  int64  // offset of the chunk's first byte as a reader sees it
	compOff int64  // offset of its frame in <id>.zst
	compLen uint32 // frame length
	rawLen  uint32 // decompressed length; 0 only in the complete record
	dataCRC uint32 // CRC-32C of the frame
}

// complete reports whether r is the trailing complete record, in which rawOff
// holds the log's final size and compOff the bytes dropped.
func (r record) complete() bool { return r.rawLen == 0 && r.compLen == 0 && r.dataCRC == completeCRC }

func (r record) rawEnd() int64  { return r.rawOff + int64(r.rawLen) }
func (r record) compEnd() int64 { return r.compOff + int64(r.compLen) }

func completeRecord(size, dropped int64) record {
	return record{rawOff: size, compOff: dropped, dataCRC: completeCRC}
}

func (r record) marshal(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], uint64(r.rawOff))
	binary.LittleEndian.PutUint64(b[8:], uint64(r.compOff))
	binary.LittleEndian.PutUint32(b[16:], r.compLen)
	binary.LittleEndian.PutUint32(b[20:], r.rawLen)
	binary.LittleEndian.PutUint32(b[24:], r.dataCRC)
	binary.LittleEndian.PutUint32(b[28:], checksum(b[:28]))
}

func unmarshalRecord(b []byte) (record, error) {
	if got, want := checksum(b[:28]), binary.LittleEndian.Uint32(b[28:]); got != want {
		return record{}, fmt.Errorf("record checksum %08x, want %08x", got, want)
	}
	r := record{
		rawOff:  int64(binary.LittleEndian.Uint64(b[0:])),
		compOff: int64(binary.LittleEndian.Uint64(b[8:])),
		compLen: binary.LittleEndian.Uint32(b[16:]),
		rawLen:  binary.LittleEndian.Uint32(b[20:]),
		dataCRC: binary.LittleEndian.Uint32(b[24:]),
	}
	if r.rawOff < 0 || r.compOff < 0 {
		return record{}, fmt.Errorf("record with negative offset")
	}
	return r, nil
}

func marshalHeader(limit int64) []byte {
	b := make([]byte, headerSize)
	copy(b, idxMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(limit))
	return b
}

func unmarshalHeader(b []byte) (limit int64, err error) {
	if string(b[:8]) != idxMagic {
		return 0, fmt.Errorf("bad index magic %q", b[:8])
	}
	limit = int64(binary.LittleEndian.Uint64(b[8:]))
	if limit < 0 {
		return 0, fmt.Errorf("bad limit %d in index header", limit)
	}
	return limit, nil
}

// tailHeader precedes each frame in a tail segment. Segments carry absolute
// stream offsets so that, after a restart, the kept tail and the number of
// bytes dropped can be rebuilt from the segments alone.
type tailHeader struct {
	rawOff  int64 // offset in the stream as written (head bytes included)
	rawLen  uint32
	compLen uint32
	dataCRC uint32
}

func (h tailHeader) marshal(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], uint64(h.rawOff))
	binary.LittleEndian.PutUint32(b[8:], h.rawLen)
	binary.LittleEndian.PutUint32(b[12:], h.compLen)
	binary.LittleEndian.PutUint32(b[16:], h.dataCRC)
	binary.LittleEndian.PutUint32(b[20:], checksum(b[:20]))
}

func unmarshalTailHeader(b []byte) (tailHeader, error) {
	if got, want := checksum(b[:20]), binary.LittleEndian.Uint32(b[20:]); got != want {
		return tailHeader{}, fmt.Errorf("tail chunk header checksum %08x, want %08x", got, want)
	}
	h := tailHeader{
		rawOff:  int64(binary.LittleEndian.Uint64(b[0:])),
		rawLen:  binary.LittleEndian.Uint32(b[8:]),
		compLen: binary.LittleEndian.Uint32(b[12:]),
		dataCRC: binary.LittleEndian.Uint32(b[16:]),
	}
	if h.rawOff < 0 || h.rawLen == 0 || h.rawLen > maxChunkSize {
		return tailHeader{}, fmt.Errorf("bad tail chunk header (offset %d, length %d)", h.rawOff, h.rawLen)
	}
	return h, nil
}

// paths names the files of one log.
type paths struct {
	bucket string
	base   string // bucket/<id>
}

func (d *Dir) pathsOf(id int64) paths {
	bucket := filepath.Join(d.root, strconv.FormatInt(id/bucketSize, 10))
	return paths{bucket: bucket, base: filepath.Join(bucket, strconv.FormatInt(id, 10))}
}

func (p paths) data() string             { return p.base + ".zst" }
func (p paths) index() string            { return p.base + ".idx" }
func (p paths) segment(seq int64) string { return p.base + ".t" + strconv.FormatInt(seq, 10) }

// segments lists the tail segments on disk in order of sequence number. It
// reads the bucket rather than globbing so that odd characters in the root
// path cannot act as patterns.
func (p paths) segments() ([]int64, error) {
	entries, err := os.ReadDir(p.bucket)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(p.base) + ".t"
	var seqs []int64
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		seq, err := strconv.ParseInt(name, 10, 64)
		if err != nil || seq < 0 {
			continue // not ours
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}
