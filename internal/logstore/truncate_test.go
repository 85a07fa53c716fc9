package logstore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestTruncation(t *testing.T) {
	tests := []struct {
		name      string
		maxBytes  int64
		chunkSize int
		size      int
		maxPiece  int
		flushes   bool // flush after every append: many tiny tail chunks
	}{
		{"under half", 1000, 100, 400, 50, false},
		{"exactly half", 1000, 100, 500, 50, false},
		{"between half and limit", 1000, 100, 900, 50, false},
		{"exactly the limit", 1000, 100, 1000, 50, false},
		{"one over", 1000, 100, 1001, 50, false},
		{"far over", 1000, 100, 100_000, 700, false},
		{"odd limit", 1001, 64, 20_000, 300, false},
		{"limit smaller than a chunk", 100, 4096, 10_000, 500, false},
		{"limit of one byte", 1, 100, 5000, 100, false},
		{"slow output flushed often", 2000, 256, 30_000, 40, true},
		{"big", 1 << 20, 0, 5 << 20, 70_000, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{MaxBytes: tt.maxBytes, ChunkSize: tt.chunkSize}
			d, root := openDir(t, opts)
			id := int64(i + 1)
			data := testData(tt.size, uint64(i))
			want := truncated(data, tt.maxBytes)
			head := tt.maxBytes / 2
			wantDropped := max(0, int64(tt.size)-tt.maxBytes)

			if tt.flushes {
				for p := 0; p < len(data); p += tt.maxPiece {
					if err := d.Append(id, data[p:min(p+tt.maxPiece, len(data))]); err != nil {
						t.Fatal(err)
					}
					if err := d.Flush(id); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				appendPieces(t, d, id, data, tt.maxPiece, uint64(i))
			}
			if err := d.Flush(id); err != nil {
				t.Fatal(err)
			}

			// Live: readers see at most the head.
			live := data[:min(int64(len(data)), head)]
			if int64(len(data)) < head {
				live = data
			}
			if got := readAll(t, d, id, 0); !bytes.Equal(got, live) {
				t.Errorf("live: %s", diffAt(got, live))
			}
			if got := mustStat(t, d, id); got.Bytes != int64(len(live)) || got.Dropped != wantDropped || got.Complete {
				t.Errorf("live Stat = %+v, want %d bytes, %d dropped, live", got, len(live), wantDropped)
			}

			if err := d.Finish(id); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, d, id, 0)
			if !bytes.Equal(got, want) {
				t.Errorf("finished: %s", diffAt(got, want))
			}
			if wantDropped > 0 && !bytes.Contains(got, fmt.Appendf(nil, "\n[drover: %d bytes of output dropped here]\n", wantDropped)) {
				t.Errorf("finished log has no marker for %d bytes", wantDropped)
			}
			info := mustStat(t, d, id)
			if info.Bytes != int64(len(want)) || info.Dropped != wantDropped || !info.Complete {
				t.Errorf("Stat = %+v, want %d bytes, %d dropped, complete", info, len(want), wantDropped)
			}
			// Re-chunking keeps the finished log's chunk count near
			// the minimum, however the tail was flushed.
			chunk := int64(tt.chunkSize)
			if chunk == 0 {
				chunk = DefaultChunkSize
			}
			if limit := int64(len(want))/chunk + 3; tt.flushes && int64(info.Chunks) > int64(len(live))/int64(tt.maxPiece)+limit {
				t.Errorf("finished log has %d chunks", info.Chunks)
			}
			// Reading from inside the tail and the marker.
			for _, off := range []int64{head - 1, head, head + 5, int64(len(want)) - 10} {
				if off < 0 || off > int64(len(want)) {
					continue
				}
				if got := readAll(t, d, id, off); !bytes.Equal(got, want[off:]) {
					t.Errorf("from %d: %s", off, diffAt(got, want[off:]))
				}
			}
			if segs, _ := filepath.Glob(filepath.Join(root, "*", "*.t*")); len(segs) != 0 {
				t.Errorf("tail segments left after Finish: %v", segs)
			}
		})
	}
}

// TestTruncatedReopen restarts the master while a truncated log is in its
// tail, twice, then finishes it.
func TestTruncatedReopen(t *testing.T) {
	root := t.TempDir()
	opts := Options{MaxBytes: 10_000, ChunkSize: 500}
	data := testData(80_000, 11)
	cuts := []int{0, 3000, 30_000, 55_555, len(data)}
	for i := 0; i+1 < len(cuts); i++ {
		d := openAt(t, root, opts)
		if i > 0 {
			mustRecover(t, d, 1)
		}
		appendPieces(t, d, 1, data[cuts[i]:cuts[i+1]], 900, uint64(i))
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A master restarted with another limit keeps the log's own.
	d := openAt(t, root, Options{MaxBytes: 1 << 30})
	mustRecover(t, d, 1)
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	want := truncated(data, opts.MaxBytes)
	if got := readAll(t, d, 1, 0); !bytes.Equal(got, want) {
		t.Errorf("%s", diffAt(got, want))
	}
}

// TestBoundedMemoryAndDisk appends far more than the limit and checks that
// neither the heap nor the files grow with the output.
func TestBoundedMemoryAndDisk(t *testing.T) {
	total := 200 << 20
	if raceEnabled || testing.Short() {
		total = 24 << 20
	}
	const maxBytes = 1 << 20
	d, root := openDir(t, Options{MaxBytes: maxBytes})
	block := testData(1<<20+17, 1) // odd size: pieces do not line up with chunks
	stream := func(from, to int) []byte {
		out := make([]byte, 0, to-from)
		for p := from; p < to; {
			i := p % len(block)
			n := min(len(block)-i, to-p)
			out = append(out, block[i:i+n]...)
			p += n
		}
		return out
	}

	runtime.GC()
	var ms runtime.MemStats
	var peakHeap uint64
	var peakDisk int64
	const piece = 32 << 10
	nextSample := 0
	for p := 0; p < total; {
		i := p % len(block)
		n := min(piece, len(block)-i, total-p) // pieces end at block boundaries
		if err := d.Append(1, block[i:i+n]); err != nil {
			t.Fatal(err)
		}
		p += n
		if p >= nextSample {
			nextSample += 4 << 20
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			size, _ := dirSize(t, root)
			peakDisk = max(peakDisk, size)
		}
	}
	if peakHeap > 32<<20 {
		t.Errorf("heap in use reached %d MiB appending %d MiB", peakHeap>>20, total>>20)
	}
	// Compressed, the head and up to 1.25 tails, plus a chunk: well under
	// the limit itself. Allow the limit, in case data compresses poorly.
	if peakDisk > maxBytes {
		t.Errorf("files reached %d bytes, limit %d", peakDisk, maxBytes)
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	info := mustStat(t, d, 1)
	if want := int64(total - maxBytes); info.Dropped != want {
		t.Errorf("Dropped = %d, want %d", info.Dropped, want)
	}
	got := readAll(t, d, 1, 0)
	want := append(stream(0, maxBytes/2), marker(int64(total-maxBytes))...)
	want = append(want, stream(total-maxBytes/2, total)...)
	if !bytes.Equal(got, want) {
		t.Errorf("%s", diffAt(got, want))
	}
	t.Logf("appended %d MiB: peak heap %d MiB, peak disk %d KiB, final data file %d KiB",
		total>>20, peakHeap>>20, peakDisk>>10, fileSize(t, d.pathsOf(1).data())>>10)
	if _, err := os.Stat(d.pathsOf(1).segment(0)); !os.IsNotExist(err) {
		t.Errorf("tail segment 0 still there: %v", err)
	}
}
