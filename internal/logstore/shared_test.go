package logstore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// In these tests, two or three Dirs on one directory stand for the masters
// of a site sharing it: one writes a log, another reads and follows it.

// testPoll is the poll interval of Follow in tests (openAt's default): short, so that
// the tests run fast; the master uses a few hundred milliseconds.
const testPoll = 2 * time.Millisecond

// TestSharedTwoDirs writes logs chunk by chunk in one Dir and checks, after
// every flush, that another Dir reads exactly what the writer's own reads
// show, and that followers in it get every byte once, in order.
func TestSharedTwoDirs(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		size     int
		maxPiece int
	}{
		{"unlimited", Options{ChunkSize: 1000}, 30_000, 700},
		{"tiny chunks", Options{ChunkSize: 64}, 5000, 150},
		{"truncated", Options{ChunkSize: 500, MaxBytes: 8000}, 40_000, 900},
		{"limit smaller than a chunk", Options{ChunkSize: 4096, MaxBytes: 300}, 9000, 400},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			w := openAt(t, root, tt.opts)
			// The reader's own options do not matter: a log keeps the
			// limit it was created with.
			r := openAt(t, root, Options{ChunkSize: 128, MaxBytes: 1 << 30})
			const id = 7
			data := testData(tt.size, uint64(ti))
			final := truncated(data, tt.opts.MaxBytes)

			if _, err := r.Stat(id); drover.KindOf(err) != drover.NotFound {
				t.Errorf("Stat before the first append = %v, want NotFound", err)
			}
			offsets := []int64{0, 1, int64(len(final) / 2), int64(len(final))}
			var followers []*sharedFollower
			for _, off := range offsets {
				followers = append(followers, followShared(t, r, id, off))
			}

			rng := rand.New(rand.NewPCG(uint64(ti), 3))
			for pos := 0; pos < len(data); {
				n := min(len(data)-pos, 1+rng.IntN(tt.maxPiece))
				if err := w.Append(id, data[pos:pos+n]); err != nil {
					t.Fatal(err)
				}
				pos += n
				if rng.IntN(3) > 0 {
					if err := w.Flush(id); err != nil {
						t.Fatal(err)
					}
				}
				// Both Dirs see the chunks written so far, and
				// nothing of what is still buffered.
				want := readAll(t, w, id, 0)
				if got := readShared(t, r, id, 0); !bytes.Equal(got, want) {
					t.Fatalf("at %d: Copy: %s", pos, diffAt(got, want))
				}
				if off := int64(len(want)) / 3; off > 0 {
					if got := readShared(t, r, id, off); !bytes.Equal(got, want[off:]) {
						t.Fatalf("at %d: Copy from %d: %s", pos, off, diffAt(got, want[off:]))
					}
				}
				if got, want := mustStat(t, r, id), mustStat(t, w, id); got != want {
					t.Fatalf("at %d: Stat = %+v, writer's Stat = %+v", pos, got, want)
				}
			}
			if err := w.Finish(id); err != nil {
				t.Fatal(err)
			}
			for i, f := range followers {
				f.check(t, final[offsets[i]:])
			}
			if got := readShared(t, r, id, 0); !bytes.Equal(got, final) {
				t.Errorf("finished: Copy: %s", diffAt(got, final))
			}
			if got, want := mustStat(t, r, id), mustStat(t, w, id); got != want || !got.Complete {
				t.Errorf("finished: Stat = %+v, writer's Stat = %+v", got, want)
			}
			checkNothingHeld(t, r)
		})
	}
}

// TestSharedTornTail damages the end of a live log as a writer caught in
// the middle of a chunk, or killed there, leaves it. Another Dir must see
// only the whole chunks, leave every file as it is, and so must opening and
// closing yet another Dir on the directory.
func TestSharedTornTail(t *testing.T) {
	const chunk = 500
	data := testData(5250, 31)
	garbage := []byte("the start of a frame whose writer was cut short")
	tests := []struct {
		name   string
		damage func(t *testing.T, p paths, last record)
	}{
		{"clean", func(*testing.T, paths, record) {}},
		{"frame without a record", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.data(), garbage)
		}},
		{"half a record", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.data(), garbage)
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: uint32(len(garbage)), rawLen: 400, dataCRC: checksum(garbage)})[:recordSize/2])
		}},
		{"record ahead of its frame", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: 300, rawLen: 400, dataCRC: 1}))
		}},
		{"record over a frame cut short", func(t *testing.T, p paths, last record) {
			frame := testFrame(t, []byte("a chunk of output"))
			appendBytes(t, p.data(), frame[:len(frame)-3])
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: uint32(len(frame)), rawLen: 17, dataCRC: checksum(frame)}))
		}},
		{"record over a wrong frame", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.data(), garbage)
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: uint32(len(garbage)), rawLen: 400, dataCRC: checksum(garbage) ^ 1}))
		}},
		{"record not following on", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.data(), garbage)
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd() + 1, compOff: last.compEnd(),
				compLen: uint32(len(garbage)), rawLen: 400, dataCRC: checksum(garbage)}))
		}},
		{"corrupted record", func(t *testing.T, p paths, last record) {
			appendBytes(t, p.data(), garbage)
			b := marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: uint32(len(garbage)), rawLen: 400, dataCRC: checksum(garbage)})
			b[3] ^= 0xff
			appendBytes(t, p.index(), b)
		}},
		{"index header torn", func(t *testing.T, p paths, last record) {
			truncateTo(t, p.index(), headerSize-5)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			w := openAt(t, root, Options{ChunkSize: chunk})
			r := openAt(t, root, Options{})
			const id = 3
			appendPieces(t, w, id, data, 333, 4)
			if err := w.Flush(id); err != nil {
				t.Fatal(err)
			}
			p := w.pathsOf(id)
			tt.damage(t, p, lastRecord(t, p))
			visible := data
			if fileSize(t, p.index()) < headerSize {
				visible = nil
			}
			before := snapshotFiles(t, root)

			info := mustStat(t, r, id)
			if want := (Info{Bytes: int64(len(visible)), Chunks: (len(visible) + chunk - 1) / chunk}); info != want {
				t.Errorf("Stat = %+v, want %+v", info, want)
			}
			if got := readShared(t, r, id, 0); !bytes.Equal(got, visible) {
				t.Errorf("Copy: %s", diffAt(got, visible))
			}
			if got := readShared(t, r, id, int64(len(visible))); len(got) != 0 {
				t.Errorf("Copy from the end gave %d bytes", len(got))
			}
			f := followShared(t, r, id, 0)
			f.waitFor(t, len(visible))
			time.Sleep(10 * testPoll) // polling over the torn tail
			f.cancel()
			if err := f.wait(t); !errors.Is(err, context.Canceled) {
				t.Errorf("Follow of a live log = %v, want context.Canceled", err)
			}
			if got := f.bytes(); !bytes.Equal(got, visible) {
				t.Errorf("Follow: %s", diffAt(got, visible))
			}
			// Opening and closing a Dir leaves other Dirs' logs alone.
			other := openAt(t, root, Options{ChunkSize: 100})
			if err := other.Close(); err != nil {
				t.Fatal(err)
			}
			checkNothingHeld(t, r)
			if after := snapshotFiles(t, root); !equalFiles(before, after) {
				t.Errorf("reading changed the files:\nbefore %v\nafter  %v", sizes(before), sizes(after))
			}
		})
	}
}

// TestSharedInterruptedFinish reads a truncated log whose writer died while
// finishing it: marker and tail chunks are in the log file and index, valid,
// but the complete record is not. Readers see the head only, as the writer
// would after a restart, until another Dir finishes the log.
func TestSharedInterruptedFinish(t *testing.T) {
	root := t.TempDir()
	opts := Options{ChunkSize: 500, MaxBytes: 8000}
	data := testData(40_000, 33)
	w := openAt(t, root, opts)
	appendPieces(t, w, 1, data, 700, 3)
	if err := w.Flush(1); err != nil {
		t.Fatal(err)
	}
	p := w.pathsOf(1)
	seqs, err := p.segments()
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string][]byte{}
	for _, seq := range seqs {
		saved[p.segment(seq)] = readFile(t, p.segment(seq))
	}
	if err := w.Finish(1); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, w, 1, 0)
	wantInfo := mustStat(t, w, 1)
	crash(w)
	truncateBy(t, p.index(), recordSize) // the complete record never made it
	for name, b := range saved {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	r := openAt(t, root, Options{})
	before := snapshotFiles(t, root)
	if got := mustStat(t, r, 1); got.Bytes != 4000 || got.Dropped != wantInfo.Dropped || got.Complete {
		t.Errorf("Stat = %+v, want the 4000-byte head, %d dropped, live", got, wantInfo.Dropped)
	}
	if got := readShared(t, r, 1, 0); !bytes.Equal(got, data[:4000]) {
		t.Errorf("Copy: %s", diffAt(got, data[:4000]))
	}
	if after := snapshotFiles(t, root); !equalFiles(before, after) {
		t.Errorf("reading changed the files:\nbefore %v\nafter  %v", sizes(before), sizes(after))
	}
	f := followShared(t, r, 1, 100)
	f.waitFor(t, 3900)

	w2 := openAt(t, root, opts)
	mustRecover(t, w2, 1)
	if err := w2.Finish(1); err != nil {
		t.Fatal(err)
	}
	f.check(t, want[100:])
	if got := readShared(t, r, 1, 0); !bytes.Equal(got, want) {
		t.Errorf("finished: Copy: %s", diffAt(got, want))
	}
	if got := mustStat(t, r, 1); got != wantInfo {
		t.Errorf("finished: Stat = %+v, want %+v", got, wantInfo)
	}
}

// TestSharedTakeover kills the writer of a live log, leaving a torn tail,
// and lets a third Dir take the log over, as a master does with the builds
// of one that died. A follower in a second Dir keeps receiving the log
// throughout, without gap or duplicate.
func TestSharedTakeover(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		// flush before the crash; otherwise the bytes still buffered
		// are lost with the writer.
		flush bool
	}{
		{"unlimited, buffered bytes lost", Options{ChunkSize: 1000}, false},
		{"unlimited, flushed", Options{ChunkSize: 1000}, true},
		{"truncated, in the tail", Options{ChunkSize: 500, MaxBytes: 10_000}, true},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			w1 := openAt(t, root, tt.opts)
			r := openAt(t, root, Options{})
			const id = 1001 // not in bucket 0
			first, second := testData(20_000, uint64(ti)), testData(15_000, uint64(ti)+100)

			f0 := followShared(t, r, id, 0)
			appendPieces(t, w1, id, first, 900, 1)
			if tt.flush {
				if err := w1.Flush(id); err != nil {
					t.Fatal(err)
				}
			}
			seen := mustStat(t, w1, id).Bytes // what readers can see
			survive := len(first)
			if !tt.flush {
				survive = int(seen)
			}
			f0.waitFor(t, int(seen))
			f1 := followShared(t, r, id, seen/2)

			crash(w1)
			p := r.pathsOf(id)
			last := lastRecord(t, p)
			garbage := []byte("half a frame, torn by the crash")
			appendBytes(t, p.data(), garbage)
			appendBytes(t, p.index(), marshalRecord(record{rawOff: last.rawEnd(), compOff: last.compEnd(),
				compLen: uint32(len(garbage)) + 20, rawLen: 300, dataCRC: 99}))
			appendBytes(t, p.index(), []byte("and half a record"))
			time.Sleep(5 * testPoll) // the followers look at the torn tail

			w2 := openAt(t, root, tt.opts)
			mustRecover(t, w2, id)
			appendPieces(t, w2, id, second, 700, 2)
			if err := w2.Finish(id); err != nil {
				t.Fatal(err)
			}
			stream := append(append([]byte(nil), first[:survive]...), second...)
			final := truncated(stream, tt.opts.MaxBytes)
			f0.check(t, final)
			f1.check(t, final[seen/2:])
			if got := readAll(t, w2, id, 0); !bytes.Equal(got, final) {
				t.Errorf("new writer's Copy: %s", diffAt(got, final))
			}
			if got := readShared(t, r, id, 0); !bytes.Equal(got, final) {
				t.Errorf("Copy: %s", diffAt(got, final))
			}
			if got, want := mustStat(t, r, id), mustStat(t, w2, id); got != want {
				t.Errorf("Stat = %+v, new writer's Stat = %+v", got, want)
			}
		})
	}
}

// TestSharedDelete deletes a log from the writer's Dir while another Dir
// follows it.
func TestSharedDelete(t *testing.T) {
	tests := []struct {
		name string
		// again recreates the log under the same id at once, which the
		// follower, polling slowly, sees as a new file rather than none.
		again bool
		poll  time.Duration
	}{
		{"deleted", false, testPoll},
		{"deleted and created again", true, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			w := openAt(t, root, Options{ChunkSize: 100})
			r := openAt(t, root, Options{Poll: tt.poll})
			data := testData(1000, 5)
			if err := w.Append(1, data); err != nil {
				t.Fatal(err)
			}
			f := followShared(t, r, 1, 0)
			f.waitFor(t, len(data))
			if err := w.Delete(1); err != nil {
				t.Fatal(err)
			}
			if tt.again {
				// Longer than the first: only the file's identity
				// tells them apart.
				if err := w.Append(1, testData(2500, 6)); err != nil {
					t.Fatal(err)
				}
				if err := w.Flush(1); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.wait(t); drover.KindOf(err) != drover.NotFound {
				t.Errorf("Follow of a deleted log = %v, want NotFound", err)
			}
			if got := f.bytes(); !bytes.Equal(got, data) {
				t.Errorf("follower got %s", diffAt(got, data))
			}
			if tt.again {
				return
			}
			if _, err := r.Stat(1); drover.KindOf(err) != drover.NotFound {
				t.Errorf("Stat after Delete = %v, want NotFound", err)
			}
			if _, err := r.Copy(context.Background(), 1, 0, &bytes.Buffer{}); drover.KindOf(err) != drover.NotFound {
				t.Errorf("Copy after Delete = %v, want NotFound", err)
			}
		})
	}
}

// TestSharedFollowEnds checks each way Follow returns, and that it
// waits for a log that has no files yet.
func TestSharedFollowEnds(t *testing.T) {
	root := t.TempDir()
	w := openAt(t, root, Options{})
	r := openAt(t, root, Options{})
	nop := func([]byte) error { return nil }

	t.Run("waits for the log, ends at Finish", func(t *testing.T) {
		f := followShared(t, r, 1, 0)
		time.Sleep(5 * testPoll)
		if err := w.Append(1, []byte("late output")); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(1); err != nil {
			t.Fatal(err)
		}
		f.check(t, []byte("late output"))
	})
	t.Run("finished with no output", func(t *testing.T) {
		f := followShared(t, r, 2, 0)
		if err := w.Finish(2); err != nil {
			t.Fatal(err)
		}
		f.check(t, nil)
		if got, want := mustStat(t, r, 2), (Info{Complete: true}); got != want {
			t.Errorf("Stat = %+v, want %+v", got, want)
		}
	})
	t.Run("offset past the end of a finished log", func(t *testing.T) {
		if err := r.Follow(context.Background(), 1, 1<<40, nop); err != nil {
			t.Errorf("Follow = %v, want nil", err)
		}
	})
	t.Run("fn error", func(t *testing.T) {
		boom := errors.New("boom")
		if err := r.Follow(context.Background(), 1, 0, func([]byte) error { return boom }); !errors.Is(err, boom) {
			t.Errorf("Follow = %v, want %v", err, boom)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		if err := w.Append(3, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(3); err != nil {
			t.Fatal(err)
		}
		for _, id := range []int64{3, 4} { // live, and without files
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			if err := r.Follow(ctx, id, 0, nop); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Follow(%d) = %v, want deadline exceeded", id, err)
			}
			cancel()
		}
		checkNothingHeld(t, r)
	})
	t.Run("invalid", func(t *testing.T) {
		ctx := context.Background()
		for _, err := range []error{
			r.Follow(ctx, 0, 0, nop),
			r.Follow(ctx, 1, -1, nop),
			func() error { _, err := Open(root, Options{Poll: -1}); return err }(),
			func() error { _, err := r.Stat(-1); return err }(),
			func() error { _, err := r.Copy(ctx, 1, -1, &bytes.Buffer{}); return err }(),
		} {
			if drover.KindOf(err) != drover.Invalid {
				t.Errorf("err = %v, want Invalid", err)
			}
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := r.Stat(99); drover.KindOf(err) != drover.NotFound {
			t.Errorf("Stat = %v, want NotFound", err)
		}
		if _, err := r.Copy(context.Background(), 99, 0, &bytes.Buffer{}); drover.KindOf(err) != drover.NotFound {
			t.Errorf("Copy = %v, want NotFound", err)
		}
	})
	t.Run("Dir closed", func(t *testing.T) {
		r2 := openAt(t, root, Options{})
		f := followShared(t, r2, 3, 0)
		f.waitFor(t, 1)
		if err := r2.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.wait(t); drover.KindOf(err) != drover.Unavailable {
			t.Errorf("Follow across Close = %v, want Unavailable", err)
		}
		if _, err := r2.Stat(3); drover.KindOf(err) != drover.Unavailable {
			t.Errorf("Stat after Close = %v, want Unavailable", err)
		}
	})
}

// TestSharedOwnLog reads logs of the reader's own Dir: one it writes
// (Follow's wake-ups, no polling), and one a follower waits for before this
// Dir creates it, which switches to the wake-ups at once.
func TestSharedOwnLog(t *testing.T) {
	root := t.TempDir()
	d := openAt(t, root, Options{Poll: time.Hour}) // would never poll

	if err := d.Append(1, []byte("own ")); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(1); err != nil {
		t.Fatal(err)
	}
	f := followShared(t, d, 1, 0)
	if err := d.Append(1, []byte("log")); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(1); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, len("own log"))
	if err := d.Finish(1); err != nil {
		t.Fatal(err)
	}
	f.check(t, []byte("own log"))

	f = followShared(t, d, 2, 0)
	// The follower has looked at the files (none) and waits; give it the
	// chance to, without which the test still passes, less sharply.
	for range 3 {
		runtime.Gosched()
	}
	if err := d.Append(2, []byte("created after the follower")); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(2); err != nil {
		t.Fatal(err)
	}
	f.check(t, []byte("created after the follower"))
}

// TestSharedBucketRace creates and deletes logs of one bucket from two Dirs
// at once. A Delete in one that empties the bucket must not make creating a
// log in the other fail.
func TestSharedBucketRace(t *testing.T) {
	root := t.TempDir()
	rounds := 1000
	if raceEnabled || testing.Short() {
		rounds = 500
	}
	var wg sync.WaitGroup
	for w := range 2 {
		d := openAt(t, root, Options{ChunkSize: 100})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				id := int64(1 + w + 2*(i%50))
				if err := d.Append(id, []byte("x")); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if err := d.Delete(id); err != nil {
					t.Errorf("Delete: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// sharedFollower runs Follow in the background.
type sharedFollower struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	buf    bytes.Buffer
}

func followShared(t *testing.T, d *Dir, id, offset int64) *sharedFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &sharedFollower{cancel: cancel, done: make(chan error, 1)}
	go func() {
		f.done <- d.Follow(ctx, id, offset, func(p []byte) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.buf.Write(p)
			return nil
		})
	}()
	return f
}

func (f *sharedFollower) bytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.buf.Bytes())
}

// waitFor waits until the follower has received at least n bytes.
func (f *sharedFollower) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.bytes()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("follower has %d bytes after 10s, want %d", len(f.bytes()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *sharedFollower) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not return within 10s")
		return nil
	}
}

// check waits for the follower to return nil and compares what it received.
func (f *sharedFollower) check(t *testing.T, want []byte) {
	t.Helper()
	if err := f.wait(t); err != nil {
		t.Errorf("Follow = %v, want nil", err)
	}
	if got := f.bytes(); !bytes.Equal(got, want) {
		t.Errorf("follower: %s", diffAt(got, want))
	}
}

// crash stops d as SIGKILL would stop its process: buffered bytes are lost,
// files are closed as they are, nothing is flushed or synced. Close then
// does nothing.
func crash(d *Dir) {
	d.mu.Lock()
	d.closed = true
	close(d.done)
	logs := d.logs
	d.logs = nil
	d.mu.Unlock()
	d.ops.Wait()
	for _, l := range logs {
		l.mu.Lock()
		l.releaseLocked()
		l.mu.Unlock()
	}
	d.enc.Close()
	d.dec.Close()
}

func readShared(t *testing.T, d *Dir, id, offset int64) []byte {
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

// holds reports whether d has log id in memory.
func (d *Dir) holds(id int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.logs[id]
	return ok
}

func checkNothingHeld(t *testing.T, d *Dir) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.logs) != 0 {
		t.Errorf("reader holds %d logs in memory", len(d.logs))
	}
}

func marshalRecord(r record) []byte {
	b := make([]byte, recordSize)
	r.marshal(b)
	return b
}

// testFrame compresses raw as a chunk's frame.
func testFrame(t *testing.T, raw []byte) []byte {
	t.Helper()
	d, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return d.enc.EncodeAll(raw, nil)
}

// snapshotFiles reads every file under root.
func snapshotFiles(t *testing.T, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		if y, ok := b[name]; !ok || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

func sizes(files map[string][]byte) map[string]int {
	out := map[string]int{}
	for name, b := range files {
		out[filepath.Base(name)] = len(b)
	}
	return out
}
