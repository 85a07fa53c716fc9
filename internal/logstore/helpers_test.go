package logstore

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// openDir opens a Dir in a fresh temporary directory, closed at cleanup.
func openDir(t testing.TB, opts Options) (*Dir, string) {
	t.Helper()
	root := t.TempDir()
	return openAt(t, root, opts), root
}

func openAt(t testing.TB, root string, opts Options) *Dir {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Poll == 0 {
		opts.Poll = testPoll
	}
	d, err := Open(root, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", root, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// testWriter sends log output to t.Log, so warnings show with the test.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// testData makes n bytes that look like build output: text lines that
// compress a few times over but never repeat.
func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := []string{"compile", "link", "test", "ok", "FAIL", "warning:", "github.com/drover-ci/drover", "internal/store", "--- PASS", "(cached)", "0.012s", "error"}
	var b bytes.Buffer
	b.Grow(n + 128)
	for line := 0; b.Len() < n; line++ {
		fmt.Fprintf(&b, "%06d", line)
		for range 3 + rng.IntN(8) {
			b.WriteByte(' ')
			b.WriteString(words[rng.IntN(len(words))])
		}
		fmt.Fprintf(&b, " %x\n", rng.Uint32())
	}
	return b.Bytes()[:n]
}

// appendPieces appends data to log id in pieces of random size up to max.
func appendPieces(t testing.TB, d *Dir, id int64, data []byte, maxPiece int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(maxPiece))
		if err := d.Append(id, data[:n]); err != nil {
			t.Fatalf("Append(%d, %d bytes): %v", id, n, err)
		}
		data = data[n:]
	}
}

func readAll(t testing.TB, d *Dir, id, offset int64) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := d.Copy(context.Background(), id, offset, &b)
	if err != nil {
		t.Fatalf("Copy(%d, %d): %v", id, offset, err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("Copy(%d, %d) = %d, wrote %d", id, offset, n, b.Len())
	}
	return b.Bytes()
}

func mustStat(t testing.TB, d *Dir, id int64) Info {
	t.Helper()
	info, err := d.Stat(id)
	if err != nil {
		t.Fatalf("Stat(%d): %v", id, err)
	}
	return info
}

// mustRecover takes log id over, as a master taking over its build does.
func mustRecover(t testing.TB, d *Dir, id int64) Info {
	t.Helper()
	info, err := d.Recover(id)
	if err != nil {
		t.Fatalf("Recover(%d): %v", id, err)
	}
	return info
}

// truncated is what a reader sees of data under limit max.
func truncated(data []byte, max int64) []byte {
	if max == 0 || int64(len(data)) <= max {
		return data
	}
	head, tail := max/2, max-max/2
	dropped := int64(len(data)) - head - tail
	out := append([]byte(nil), data[:head]...)
	out = append(out, marker(dropped)...)
	return append(out, data[int64(len(data))-tail:]...)
}

func dirSize(t testing.TB, root string) (size int64, files int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		size += fi.Size()
		files++
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return size, files
}

func fileSize(t testing.TB, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func diffAt(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d of %d (want %d bytes)", i, len(got), len(want))
		}
	}
	return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
}
