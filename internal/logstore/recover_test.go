package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// crash simulates a master dying after writing log 1: its Dir is closed
// (the files are complete), then damage edits the files as a crash could
// have left them.
func TestRecoverTorn(t *testing.T) {
	const chunk = 1000
	data := testData(10_500, 21)
	tests := []struct {
		name string
		// damage edits the files of log 1; it returns how many bytes
		// of data must survive.
		damage func(t *testing.T, p paths) int
	}{
		{"clean", func(t *testing.T, p paths) int { return len(data) }},
		{"last frame cut short", func(t *testing.T, p paths) int {
			truncateBy(t, p.data(), 10)
			return 10_000
		}},
		{"last frame gone", func(t *testing.T, p paths) int {
			truncateTo(t, p.data(), recordAt(t, p, 10).compOff)
			return 10_000
		}},
		{"last frame corrupted", func(t *testing.T, p paths) int {
			r := recordAt(t, p, 10)
			corrupt(t, p.data(), r.compOff+int64(r.compLen)/2)
			return 10_000
		}},
		{"record torn", func(t *testing.T, p paths) int {
			truncateBy(t, p.index(), recordSize/2)
			return 10_000
		}},
		{"record corrupted", func(t *testing.T, p paths) int {
			corrupt(t, p.index(), headerSize+10*recordSize+3)
			return 10_000
		}},
		{"frame without a record", func(t *testing.T, p paths) int {
			appendBytes(t, p.data(), []byte("garbage from a chunk whose record never made it"))
			return len(data)
		}},
		{"several records lost", func(t *testing.T, p paths) int {
			truncateBy(t, p.index(), 3*recordSize)
			return 8000
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			d := openAt(t, root, Options{ChunkSize: chunk})
			appendPieces(t, d, 1, data, 333, 1)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			survive := tt.damage(t, d.pathsOf(1))

			d = openAt(t, root, Options{ChunkSize: chunk})
			// What a reader sees before the repair is what survives it.
			info := mustStat(t, d, 1)
			if info.Bytes != int64(survive) || info.Complete {
				t.Errorf("Stat = %+v, want %d bytes, live", info, survive)
			}
			if got := mustRecover(t, d, 1); got != info {
				t.Errorf("Recover = %+v, Stat before it = %+v", got, info)
			}
			if got := readAll(t, d, 1, 0); !bytes.Equal(got, data[:survive]) {
				t.Errorf("after recovery: %s", diffAt(got, data[:survive]))
			}
			more := []byte("the build re-attached and went on\n")
			if err := d.Append(1, more); err != nil {
				t.Fatal(err)
			}
			if err := d.Finish(1); err != nil {
				t.Fatal(err)
			}
			want := append(append([]byte(nil), data[:survive]...), more...)
			if got := readAll(t, d, 1, 0); !bytes.Equal(got, want) {
				t.Errorf("after appending: %s", diffAt(got, want))
			}
			if got, want := fileSize(t, d.pathsOf(1).data()), lastRecord(t, d.pathsOf(1)).compEnd(); got != want {
				t.Errorf("data file is %d bytes, its frames end at %d", got, want)
			}
		})
	}
}

// TestRecoverTail damages the tail segments of a truncated live log.
func TestRecoverTail(t *testing.T) {
	opts := Options{ChunkSize: 500, MaxBytes: 20_000}
	data := testData(60_000, 22)
	tests := []struct {
		name string
		// damage returns how many bytes of the stream survive.
		damage func(t *testing.T, p paths, newest string) int
	}{
		{"clean", func(t *testing.T, p paths, newest string) int { return len(data) }},
		{"newest chunk cut short", func(t *testing.T, p paths, newest string) int {
			truncateBy(t, newest, 7)
			return len(data) - 500
		}},
		{"empty segment after a crash at rotation", func(t *testing.T, p paths, newest string) int {
			if err := os.WriteFile(p.segment(999), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return len(data)
		}},
		{"chunk header corrupted", func(t *testing.T, p paths, newest string) int {
			lost := segRaw(t, newest)
			corrupt(t, newest, 2)
			return len(data) - int(lost)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			d := openAt(t, root, opts)
			// Whole chunks, so that what a damaged chunk loses is known.
			for p := 0; p < len(data); p += 500 {
				if err := d.Append(1, data[p:p+500]); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			p := d.pathsOf(1)
			seqs, err := p.segments()
			if err != nil || len(seqs) == 0 {
				t.Fatalf("no tail segments: %v", err)
			}
			survive := tt.damage(t, p, p.segment(seqs[len(seqs)-1]))

			d = openAt(t, root, opts)
			mustRecover(t, d, 1)
			more := []byte("after the restart\n")
			if err := d.Append(1, more); err != nil {
				t.Fatal(err)
			}
			if err := d.Finish(1); err != nil {
				t.Fatal(err)
			}
			stream := append(append([]byte(nil), data[:survive]...), more...)
			checkTruncated(t, readAll(t, d, 1, 0), stream, opts.MaxBytes)
		})
	}
}

// TestRecoverInterruptedFinish rebuilds the state a crash in the middle of
// finishing a truncated log leaves: marker and tail chunks written to the
// log file and index, no complete record, tail segments still there. The
// restarted master must show the head only, and finish it the same way.
func TestRecoverInterruptedFinish(t *testing.T) {
	root := t.TempDir()
	opts := Options{ChunkSize: 500, MaxBytes: 8000}
	data := testData(40_000, 23)
	d := openAt(t, root, opts)
	appendPieces(t, d, 1, data, 700, 3)
	if err := d.Flush(1); err != nil {
		t.Fatal(err)
	}
	p := d.pathsOf(1)
	seqs, err := p.segments()
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string][]byte{}
	for _, seq := range seqs {
		saved[p.segment(seq)] = readFile(t, p.segment(seq))
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, d, 1, 0)
	d.Close()

	truncateBy(t, p.index(), recordSize) // the complete record never made it
	for name, b := range saved {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d = openAt(t, root, opts)
	if got := mustStat(t, d, 1); got.Bytes != 4000 || got.Complete {
		t.Errorf("Stat = %+v, want the 4000-byte head, live", got)
	}
	mustRecover(t, d, 1)
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d, 1, 0); !bytes.Equal(got, want) {
		t.Errorf("%s", diffAt(got, want))
	}
}

func recordAt(t *testing.T, p paths, i int) record {
	t.Helper()
	f, err := os.Open(p.index())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := readRecord(f, i)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func lastRecord(t *testing.T, p paths) record {
	t.Helper()
	n := int((fileSize(t, p.index()) - headerSize) / recordSize)
	for i := n - 1; i >= 0; i-- {
		if r := recordAt(t, p, i); !r.complete() {
			return r
		}
	}
	return record{}
}

// segRaw is the number of raw bytes in a tail segment.
func segRaw(t *testing.T, name string) int64 {
	t.Helper()
	b := readFile(t, name)
	var n int64
	for off := 0; off < len(b); {
		h, err := unmarshalTailHeader(b[off : off+tailHeaderSize])
		if err != nil {
			t.Fatal(err)
		}
		n += int64(h.rawLen)
		off += tailHeaderSize + int(h.compLen)
	}
	return n
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func truncateBy(t *testing.T, name string, n int64) {
	t.Helper()
	truncateTo(t, name, fileSize(t, name)-n)
}

func truncateTo(t *testing.T, name string, size int64) {
	t.Helper()
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
}

func corrupt(t *testing.T, name string, off int64) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, name string, p []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(p); err != nil {
		t.Fatal(err)
	}
}

// checkTruncated checks that got is stream cut under limit max, allowing
// the tail to be short, as it may be after a crash tore its newest chunks:
// the head whole, a marker for all bytes not shown, a suffix of stream.
func checkTruncated(t *testing.T, got, stream []byte, max int64) {
	t.Helper()
	head := max / 2
	if !bytes.HasPrefix(got, stream[:head]) {
		t.Errorf("head: %s", diffAt(got[:min(int64(len(got)), head)], stream[:head]))
		return
	}
	rest := got[head:]
	var dropped int64
	if _, err := fmt.Sscanf(string(rest), "\n[drover: %d bytes of output dropped here]\n", &dropped); err != nil {
		t.Errorf("no marker after the head: %q", rest[:min(len(rest), 60)])
		return
	}
	tail := rest[len(marker(dropped)):]
	if short := max - head - int64(len(tail)); short < 0 || short > (max-head)/2 {
		t.Errorf("tail is %d bytes, want %d less at most a segment", len(tail), max-head)
	}
	if int64(len(stream)) != head+dropped+int64(len(tail)) || !bytes.HasSuffix(stream, tail) {
		t.Errorf("tail of %d bytes after %d dropped is not the end of the %d-byte stream", len(tail), dropped, len(stream))
	}
}

// TestReadsNeverRepair reads a torn live log that the Dir does not hold —
// as after a restart, before the master has taken the build over, or
// when it cannot tell whose the log is — and checks that no read changes
// its files, that writes are refused until Recover, and that Recover then
// repairs it and hands it over.
func TestReadsNeverRepair(t *testing.T) {
	root := t.TempDir()
	opts := Options{ChunkSize: 1000}
	data := testData(5500, 8)
	d := openAt(t, root, opts)
	appendPieces(t, d, 1, data, 500, 1)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	p := d.pathsOf(1)
	appendBytes(t, p.data(), []byte("a frame torn by the crash"))
	appendBytes(t, p.index(), []byte("half a record"))
	before := snapshotFiles(t, root)

	d = openAt(t, root, opts)
	if got := mustStat(t, d, 1); got.Bytes != int64(len(data)) || got.Complete {
		t.Errorf("Stat = %+v, want %d bytes, live", got, len(data))
	}
	if got := readAll(t, d, 1, 0); !bytes.Equal(got, data) {
		t.Errorf("Copy: %s", diffAt(got, data))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	var followed bytes.Buffer
	err := d.Follow(ctx, 1, 0, func(b []byte) error { followed.Write(b); return nil })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !bytes.Equal(followed.Bytes(), data) {
		t.Errorf("Follow = %v with %d bytes, want deadline exceeded with %d", err, followed.Len(), len(data))
	}
	for name, err := range map[string]error{
		"Append": d.Append(1, []byte("x")),
		"Flush":  d.Flush(1),
		"Finish": d.Finish(1),
	} {
		if drover.KindOf(err) != drover.Conflict {
			t.Errorf("%s of a log not held = %v, want Conflict", name, err)
		}
	}
	if after := snapshotFiles(t, root); !equalFiles(before, after) {
		t.Fatalf("reads changed the files:\nbefore %v\nafter  %v", sizes(before), sizes(after))
	}

	if got := mustRecover(t, d, 1); got.Bytes != int64(len(data)) || got.Complete {
		t.Errorf("Recover = %+v, want %d bytes, live", got, len(data))
	}
	if after := snapshotFiles(t, root); equalFiles(before, after) {
		t.Error("Recover left the torn frame and record in place")
	}
	if err := d.Append(1, []byte("on")); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, d, 1, 0), append(bytes.Clone(data), "on"...); !bytes.Equal(got, want) {
		t.Errorf("after Recover: %s", diffAt(got, want))
	}
	if _, err := d.Recover(2); drover.KindOf(err) != drover.NotFound {
		t.Errorf("Recover of a log with no files = %v, want NotFound", err)
	}
}
