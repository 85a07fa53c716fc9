package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/drover-ci/drover/internal/workerproto"
)

// The files of a supervised command, in DIR/run/<command-id>/. The agent
// writes spec.json before it starts the supervisor, and chunks, acked,
// cancel.json and delivered as the command goes; the supervisor writes
// pid, cmdpid, out.spool, supervisor.log and, last, exit.json. Nothing in
// the directory depends on the agent's memory, so a new worker process
// rebuilds the command from it.
const (
	runDirName        = "run"
	specFileName      = "spec.json"
	spoolFileName     = "out.spool"
	exitFileName      = "exit.json"
	pidFileName       = "pid"
	cmdPIDFileName    = "cmdpid"
	chunksFileName    = "chunks"
	ackedFileName     = "acked"
	cancelFileName    = "cancel.json"
	deliveredFileName = "delivered"
	superLogFileName  = "supervisor.log"

	// spoolHeaderSize is a spool record's header: the stream (1 byte) and
	// the payload's length (4 bytes, big-endian).
	spoolHeaderSize = 5
	// chunkEntrySize is one entry of the chunk index: seq (8), the spool
	// offset of the record the chunk starts in (8), the payload bytes of
	// that record before the chunk (4), the chunk's length (4), its
	// stream (1).
	chunkEntrySize = 25
)

// commandSpec is spec.json: all the supervisor needs to run the command,
// and all a later agent needs to report it.
type commandSpec struct {
	CommandID       string   `json:"command_id"`
	Builder         string   `json:"builder"`
	Argv            []string `json:"argv"`
	Env             []string `json:"env"` // the complete environment
	Workdir         string   `json:"workdir"`
	NoOutputTimeout int64    `json:"no_output_timeout_ms,omitempty"`
	MaxTime         int64    `json:"max_time_ms,omitempty"`
	KillGrace       int64    `json:"kill_grace_ms,omitempty"`
}

// exitStatus is exit.json: how the command ended.
type exitStatus struct {
	ExitCode   int    `json:"exit_code"` // -1 when killed by a signal or never started
	Reason     string `json:"reason"`    // a workerproto.FinishReason name
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// cancelRequest is cancel.json: why the agent asks the supervisor to stop
// the command, read by the supervisor when it receives SIGTERM.
type cancelRequest struct {
	Reason  string `json:"reason"` // a workerproto.FinishReason name
	Error   string `json:"error"`
	GraceMs int64  `json:"grace_ms"`
}

func (e exitStatus) reason() workerproto.FinishReason {
	if v, ok := workerproto.FinishReason_value[e.Reason]; ok {
		return workerproto.FinishReason(v)
	}
	return workerproto.FinishReason_FINISH_REASON_EXITED
}

// validCommandID reports whether id can name a directory in DIR/run.
func validCommandID(id string) bool {
	return id != "" && id != "." && id != ".." && len(id) <= 200 &&
		!strings.ContainsAny(id, `/\:`) && filepath.IsLocal(id)
}

func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// readExit reads exit.json; ok is false while it does not exist.
func readExit(dir string) (exitStatus, bool, error) {
	var e exitStatus
	err := readJSON(filepath.Join(dir, exitFileName), &e)
	if errors.Is(err, fs.ErrNotExist) {
		return e, false, nil
	}
	if err != nil {
		return e, false, err
	}
	return e, true, nil
}

// readPID reads a pid file; 0 if it is missing or unreadable (it is
// written atomically, so unreadable means not yet written).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

func writePID(path string, pid int) error {
	return writeFileAtomic(path, []byte(strconv.Itoa(pid)+"\n"))
}

// readAcked reads the highest acknowledged seq; 0 when unknown, which
// only means more is replayed (the master dedupes).
func readAcked(dir string) uint64 {
	b, err := os.ReadFile(filepath.Join(dir, ackedFileName))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// spoolLoc is a position in a spool: the offset of a record's header and
// how many bytes of its payload come before the position.
type spoolLoc struct {
	rec  int64
	skip int
}

// spoolRecord is one record read back from a spool.
type spoolRecord struct {
	stream workerproto.Stream
	at     int64 // offset of the header
	data   []byte
}

// readSpoolRecord reads the record whose header is at off. It returns
// io.EOF when no complete record is there yet: the supervisor may be
// writing it.
func readSpoolRecord(f *os.File, off int64, buf []byte) (spoolRecord, error) {
	var h [spoolHeaderSize]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return spoolRecord{}, io.EOF
		}
		return spoolRecord{}, fmt.Errorf("read spool record at %d: %w", off, err)
	}
	n := int(binary.BigEndian.Uint32(h[1:]))
	if n > readBufSize {
		return spoolRecord{}, fmt.Errorf("spool record at %d: length %d is corrupt", off, n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, off+spoolHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return spoolRecord{}, io.EOF
		}
		return spoolRecord{}, fmt.Errorf("read spool record at %d: %w", off, err)
	}
	return spoolRecord{stream: workerproto.Stream(h[0]), at: off, data: buf}, nil
}

// readSpoolChunk reads n bytes of output starting at loc, across as many
// records as they span.
func readSpoolChunk(f *os.File, loc spoolLoc, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, readBufSize)
	for len(out) < n {
		r, err := readSpoolRecord(f, loc.rec, buf)
		if err != nil {
			return nil, fmt.Errorf("read chunk: %w", err)
		}
		if loc.skip > len(r.data) {
			return nil, fmt.Errorf("read chunk: spool record at %d is shorter than %d", loc.rec, loc.skip)
		}
		take := min(n-len(out), len(r.data)-loc.skip)
		out = append(out, r.data[loc.skip:loc.skip+take]...)
		loc = spoolLoc{rec: loc.rec + spoolHeaderSize + int64(len(r.data))}
	}
	return out, nil
}

// advanceSpool returns the position n payload bytes after loc.
func advanceSpool(f *os.File, loc spoolLoc, n int) (spoolLoc, error) {
	var h [spoolHeaderSize]byte
	for {
		if _, err := f.ReadAt(h[:], loc.rec); err != nil {
			return loc, fmt.Errorf("advance spool at %d: %w", loc.rec, err)
		}
		size := int(binary.BigEndian.Uint32(h[1:]))
		if loc.skip+n <= size {
			loc.skip += n
			if loc.skip == size {
				return spoolLoc{rec: loc.rec + spoolHeaderSize + int64(size)}, nil
			}
			return loc, nil
		}
		n -= size - loc.skip
		loc = spoolLoc{rec: loc.rec + spoolHeaderSize + int64(size)}
	}
}

// chunkEntry is one entry of the chunk index: a numbered chunk's place in
// the spool. Entries are written before the chunk is sent, so every seq a
// master may have seen is in the index, and a later agent replays the
// same bytes under the same seq.
type chunkEntry struct {
	seq    uint64
	loc    spoolLoc
	n      int
	stream workerproto.Stream
}

func (e chunkEntry) marshal() []byte {
	b := make([]byte, chunkEntrySize)
	binary.BigEndian.PutUint64(b[0:], e.seq)
	binary.BigEndian.PutUint64(b[8:], uint64(e.loc.rec))
	binary.BigEndian.PutUint32(b[16:], uint32(e.loc.skip))
	binary.BigEndian.PutUint32(b[20:], uint32(e.n))
	b[24] = byte(e.stream)
	return b
}

// readChunkIndex reads the chunk index, dropping a torn last entry (the
// agent died while writing it, so that chunk was never sent).
func readChunkIndex(path string) ([]chunkEntry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read chunk index: %w", err)
	}
	var entries []chunkEntry
	for i := 0; i+chunkEntrySize <= len(b); i += chunkEntrySize {
		e := chunkEntry{
			seq:    binary.BigEndian.Uint64(b[i:]),
			loc:    spoolLoc{rec: int64(binary.BigEndian.Uint64(b[i+8:])), skip: int(binary.BigEndian.Uint32(b[i+16:]))},
			n:      int(binary.BigEndian.Uint32(b[i+20:])),
			stream: workerproto.Stream(b[i+24]),
		}
		if e.seq != uint64(len(entries)+1) {
			return nil, fmt.Errorf("chunk index %s: entry %d has seq %d", path, len(entries), e.seq)
		}
		entries = append(entries, e)
	}
	if rest := len(b) % chunkEntrySize; rest != 0 {
		if err := os.Truncate(path, int64(len(b)-rest)); err != nil {
			return nil, fmt.Errorf("truncate torn chunk index: %w", err)
		}
	}
	return entries, nil
}

// spoolWriter appends records to a spool; it is the supervisor's side.
type spoolWriter struct {
	f *os.File
}

func (w *spoolWriter) write(s workerproto.Stream, p []byte) error {
	rec := make([]byte, spoolHeaderSize+len(p))
	rec[0] = byte(s)
	binary.BigEndian.PutUint32(rec[1:], uint32(len(p)))
	copy(rec[spoolHeaderSize:], p)
	// One write per record, promptly and without fsync: the agent tails
	// the file, and only the last record can be incomplete when it looks
	// (readSpoolRecord then reports EOF and it looks again later).
	if _, err := w.f.Write(rec); err != nil {
		return fmt.Errorf("write spool: %w", err)
	}
	return nil
}
