package logstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-ci/drover"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		chunkSize int
		size      int
		maxPiece  int
	}{
		{"one byte", 100, 1, 1},
		{"under a chunk", 100, 99, 7},
		{"exactly a chunk", 100, 100, 100},
		{"a chunk and a byte", 100, 101, 30},
		{"many small chunks", 100, 10_007, 250},
		{"pieces bigger than chunks", 1000, 50_000, 5000},
		{"default chunk size", 0, 3 << 20, 100_000},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := openDir(t, Options{ChunkSize: tt.chunkSize})
			id := int64(i + 1)
			data := testData(tt.size, uint64(i))
			appendPieces(t, d, id, data, tt.maxPiece, uint64(i))
			if err := d.Finish(id); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			chunk := tt.chunkSize
			if chunk == 0 {
				chunk = DefaultChunkSize
			}
			want := Info{Bytes: int64(tt.size), Complete: true, Chunks: (tt.size + chunk - 1) / chunk}
			if got := mustStat(t, d, id); got != want {
				t.Errorf("Stat = %+v, want %+v", got, want)
			}
			if got := readAll(t, d, id, 0); !bytes.Equal(got, data) {
				t.Errorf("Copy: %s", diffAt(got, data))
			}
		})
	}
}

func TestEmptyFinish(t *testing.T) {
	d, root := openDir(t, Options{})
	if err := d.Finish(7); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if got, want := mustStat(t, d, 7), (Info{Complete: true}); got != want {
		t.Errorf("Stat = %+v, want %+v", got, want)
	}
	if got := readAll(t, d, 7, 0); len(got) != 0 {
		t.Errorf("Copy gave %q, want nothing", got)
	}
	// The same after a restart, when the log is read from disk.
	d.Close()
	d = openAt(t, root, Options{})
	if got, want := mustStat(t, d, 7), (Info{Complete: true}); got != want {
		t.Errorf("after reopen: Stat = %+v, want %+v", got, want)
	}
}

func TestCopyOffsets(t *testing.T) {
	d, _ := openDir(t, Options{ChunkSize: 100})
	data := testData(1050, 3)
	appendPieces(t, d, 1, data, 33, 3)
	check := func(t *testing.T, visible []byte) {
		t.Helper()
		for _, off := range []int64{0, 1, 50, 99, 100, 101, 199, 200, 550, 999, 1000, 1049, 1050, 1051, 1 << 40} {
			var want []byte
			if off < int64(len(visible)) {
				want = visible[off:]
			}
			if got := readAll(t, d, 1, off); !bytes.Equal(got, want) {
				t.Errorf("Copy from %d: %s", off, diffAt(got, want))
			}
		}
	}
	t.Run("live, unflushed tail hidden", func(t *testing.T) {
		if got := mustStat(t, d, 1); got.Bytes != 1000 || got.Chunks != 10 || got.Complete {
			t.Errorf("Stat = %+v, want 1000 bytes in 10 chunks, live", got)
		}
		check(t, data[:1000])
	})
	t.Run("flushed", func(t *testing.T) {
		if err := d.Flush(1); err != nil {
			t.Fatal(err)
		}
		check(t, data)
	})
	t.Run("finished", func(t *testing.T) {
		if err := d.Finish(1); err != nil {
			t.Fatal(err)
		}
		check(t, data)
	})
	t.Run("negative offset", func(t *testing.T) {
		if _, err := d.Copy(context.Background(), 1, -1, &bytes.Buffer{}); drover.KindOf(err) != drover.Invalid {
			t.Errorf("Copy(-1) = %v, want Invalid", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := d.Copy(ctx, 1, 0, &bytes.Buffer{}); !errors.Is(err, context.Canceled) {
			t.Errorf("Copy with cancelled ctx = %v, want context.Canceled", err)
		}
	})
}

func TestErrors(t *testing.T) {
	d, _ := openDir(t, Options{})
	if err := d.Append(1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		kind drover.Kind
	}{
		{"append after finish", d.Append(1, []byte("y")), drover.Conflict},
		{"finish twice", d.Finish(1), -1},
		{"flush finished", d.Flush(1), -1},
		{"stat missing", func() error { _, err := d.Stat(2); return err }(), drover.NotFound},
		{"copy missing", func() error { _, err := d.Copy(context.Background(), 2, 0, &bytes.Buffer{}); return err }(), drover.NotFound},
		{"flush missing", d.Flush(2), drover.NotFound},
		{"delete missing", d.Delete(2, 3), -1},
		{"zero id", d.Append(0, []byte("x")), drover.Invalid},
		{"negative id", func() error { _, err := d.Stat(-5); return err }(), drover.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.kind < 0 {
				if tt.err != nil {
					t.Errorf("err = %v, want nil", tt.err)
				}
				return
			}
			if got := drover.KindOf(tt.err); got != tt.kind {
				t.Errorf("err = %v (%v), want kind %v", tt.err, got, tt.kind)
			}
		})
	}
	if got := readAll(t, d, 1, 0); string(got) != "x" {
		t.Errorf("log after refused append = %q, want %q", got, "x")
	}
}

func TestOpenOptions(t *testing.T) {
	for _, opts := range []Options{{MaxBytes: -1}, {ChunkSize: -1}, {ChunkSize: maxChunkSize + 1}} {
		if _, err := Open(t.TempDir(), opts); drover.KindOf(err) != drover.Invalid {
			t.Errorf("Open(%+v) = %v, want Invalid", opts, err)
		}
	}
}

func TestClose(t *testing.T) {
	d, root := openDir(t, Options{})
	if err := d.Append(1, []byte("buffered")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := d.Append(1, []byte("x")); drover.KindOf(err) != drover.Unavailable {
		t.Errorf("Append after Close = %v, want Unavailable", err)
	}
	if _, err := d.Stat(1); drover.KindOf(err) != drover.Unavailable {
		t.Errorf("Stat after Close = %v, want Unavailable", err)
	}
	// Close wrote the buffered bytes.
	d2 := openAt(t, root, Options{})
	if got := readAll(t, d2, 1, 0); string(got) != "buffered" {
		t.Errorf("after reopen: %q, want %q", got, "buffered")
	}
}

func TestReopenAppend(t *testing.T) {
	root := t.TempDir()
	data := testData(25_000, 5)
	d := openAt(t, root, Options{ChunkSize: 1000})
	appendPieces(t, d, 1, data[:10_500], 700, 1)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openAt(t, root, Options{ChunkSize: 1000})
	if got := mustStat(t, d, 1); got.Bytes != 10_500 || got.Complete {
		t.Errorf("after reopen: Stat = %+v, want 10500 bytes, live", got)
	}
	mustRecover(t, d, 1)
	appendPieces(t, d, 1, data[10_500:], 700, 2)
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d, 1, 0); !bytes.Equal(got, data) {
		t.Errorf("Copy: %s", diffAt(got, data))
	}
	d.Close()
	d = openAt(t, root, Options{ChunkSize: 1000})
	if got := readAll(t, d, 1, 0); !bytes.Equal(got, data) {
		t.Errorf("after second reopen: %s", diffAt(got, data))
	}
	if err := d.Append(1, []byte("late")); drover.KindOf(err) != drover.Conflict {
		t.Errorf("Append to finished log after reopen = %v, want Conflict", err)
	}
}

func TestDelete(t *testing.T) {
	d, root := openDir(t, Options{ChunkSize: 100, MaxBytes: 1000})
	// 1 finished, 2 live, 3 live and truncated (tail segments on disk),
	// 1001 in another bucket.
	for _, id := range []int64{1, 2, 3, 1001} {
		if err := d.Append(id, testData(500, uint64(id))); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Append(3, testData(5000, 9)); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(1, 2, 3, 4); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, id := range []int64{1, 2, 3} {
		if _, err := d.Stat(id); drover.KindOf(err) != drover.NotFound {
			t.Errorf("Stat(%d) after Delete = %v, want NotFound", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "0")); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(filepath.Join(root, "0"))
		t.Errorf("bucket 0 still there after its logs were deleted: %v %v", err, entries)
	}
	if got := mustStat(t, d, 1001); got.Bytes != 500 {
		t.Errorf("log 1001 hurt by deleting others: %+v", got)
	}
	// A deleted id can be used afresh.
	if err := d.Append(2, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(2); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d, 2, 0); string(got) != "again" {
		t.Errorf("reused id: %q", got)
	}
	if err := d.Delete(1001, 2); err != nil {
		t.Fatal(err)
	}
	if size, files := dirSize(t, root); files != 0 {
		t.Errorf("after deleting everything: %d files, %d bytes left", files, size)
	}
}

func TestConcurrentAppendSameLog(t *testing.T) {
	d, _ := openDir(t, Options{ChunkSize: 512})
	const writers, pieces = 4, 200
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			line := bytes.Repeat([]byte{'a' + byte(w)}, 63)
			line = append(line, '\n')
			for range pieces {
				if err := d.Append(1, line); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range writers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, d, 1, 0)
	if len(got) != writers*pieces*64 {
		t.Fatalf("got %d bytes, want %d", len(got), writers*pieces*64)
	}
	// Appends are atomic: every line is whole.
	for i, line := range bytes.SplitAfter(got, []byte("\n")) {
		if len(line) > 0 && (len(line) != 64 || bytes.Count(line, line[:1]) != 63) {
			t.Fatalf("line %d torn: %q", i, line)
		}
	}
}
