package logstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// TestFollowConcurrent runs an appender and several followers that join at
// different moments and offsets; each must see exactly its part of the
// final log, once.
func TestFollowConcurrent(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		size     int
		maxPiece int
	}{
		{"unlimited", Options{ChunkSize: 4096}, 600_000, 3000},
		{"truncated", Options{ChunkSize: 4096, MaxBytes: 100_000}, 600_000, 3000},
		{"tiny chunks", Options{ChunkSize: 64}, 50_000, 200},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := openDir(t, tt.opts)
			const id = 42
			data := testData(tt.size, uint64(ti))
			final := truncated(data, tt.opts.MaxBytes)

			// Followers start before the first byte, at points of
			// progress, and after the end.
			marks := []int{0, len(data) / 10, len(data) / 2, len(data) * 9 / 10, len(data)}
			reached := make([]chan struct{}, len(marks))
			for i := range reached {
				reached[i] = make(chan struct{})
			}
			type follower struct {
				mark   int
				offset int64
			}
			var followers []follower
			for m := range marks {
				for _, off := range []int64{0, 1, int64(len(final) / 3), int64(len(final) - 1), int64(len(final))} {
					followers = append(followers, follower{m, off})
				}
			}

			var wg sync.WaitGroup
			for _, f := range followers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-reached[f.mark]
					h := sha256.New()
					var n int64
					err := d.Follow(context.Background(), id, f.offset, func(p []byte) error {
						n += int64(len(p))
						h.Write(p)
						return nil
					})
					if err != nil {
						t.Errorf("follower from %d (mark %d): %v", f.offset, f.mark, err)
						return
					}
					want := final[min(f.offset, int64(len(final))):]
					if n != int64(len(want)) || !bytes.Equal(h.Sum(nil), sha256Of(want)) {
						t.Errorf("follower from %d (mark %d): got %d bytes, want %d, digest differs", f.offset, f.mark, n, len(want))
					}
				}()
			}

			rng := rand.New(rand.NewPCG(uint64(ti), 2))
			close(reached[0])
			next := 1
			for pos := 0; pos < len(data); {
				n := min(len(data)-pos, 1+rng.IntN(tt.maxPiece))
				if err := d.Append(id, data[pos:pos+n]); err != nil {
					t.Fatal(err)
				}
				pos += n
				if rng.IntN(4) == 0 {
					if err := d.Flush(id); err != nil {
						t.Fatal(err)
					}
				}
				for next < len(marks)-1 && pos >= marks[next] {
					close(reached[next])
					next++
				}
			}
			if err := d.Finish(id); err != nil {
				t.Fatal(err)
			}
			for ; next < len(marks); next++ {
				close(reached[next])
			}
			wg.Wait()
		})
	}
}

func sha256Of(p []byte) []byte {
	s := sha256.Sum256(p)
	return s[:]
}

// TestFollowLive checks that flushed bytes reach a follower before the log
// is finished, and that Follow ends for each reason it can.
func TestFollowLive(t *testing.T) {
	d, _ := openDir(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 10)
	errc := make(chan error, 1)
	go func() {
		errc <- d.Follow(ctx, 1, 0, func(p []byte) error {
			got <- string(p)
			return nil
		})
	}()
	for _, s := range []string{"first ", "second"} {
		if err := d.Append(1, []byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(1); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if p != s {
				t.Errorf("follower got %q, want %q", p, s)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("follower did not get %q after Flush", s)
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Follow after cancel = %v, want context.Canceled", err)
	}

	t.Run("fn error", func(t *testing.T) {
		boom := errors.New("boom")
		if err := d.Follow(context.Background(), 1, 0, func([]byte) error { return boom }); !errors.Is(err, boom) {
			t.Errorf("Follow = %v, want %v", err, boom)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		errc := make(chan error, 1)
		started := make(chan struct{})
		var once sync.Once
		go func() {
			errc <- d.Follow(context.Background(), 1, 0, func([]byte) error {
				once.Do(func() { close(started) })
				return nil
			})
		}()
		<-started // stored bytes delivered: it is waiting now, or about to
		if err := d.Delete(1); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; drover.KindOf(err) != drover.NotFound {
			t.Errorf("Follow of deleted log = %v, want NotFound", err)
		}
	})
	t.Run("waiting for output that never comes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := d.Follow(ctx, 99, 0, func([]byte) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Follow = %v, want deadline exceeded", err)
		}
		// The placeholder is gone with its follower.
		if _, err := d.Stat(99); drover.KindOf(err) != drover.NotFound {
			t.Errorf("Stat after abandoned Follow = %v, want NotFound", err)
		}
		d.mu.Lock()
		_, held := d.logs[99]
		d.mu.Unlock()
		if held {
			t.Error("abandoned placeholder still held in memory")
		}
	})
	t.Run("finished with no output", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() { errc <- d.Follow(context.Background(), 5, 0, func([]byte) error { return nil }) }()
		time.Sleep(10 * time.Millisecond) // let it wait, though it must work either way
		if err := d.Finish(5); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Follow = %v, want nil", err)
		}
	})
}

func TestFollowClose(t *testing.T) {
	d, _ := openDir(t, Options{})
	if err := d.Append(1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		errc <- d.Follow(context.Background(), 1, 0, func([]byte) error {
			close(started)
			return nil
		})
	}()
	if err := d.Flush(1); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; drover.KindOf(err) != drover.Unavailable {
		t.Errorf("Follow across Close = %v, want Unavailable", err)
	}
}
