//go:build unix

package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

// dedupe is what a master does with output that may be replayed: it keeps
// the first copy of each seq.
type dedupe struct {
	t    *testing.T
	seen map[uint64][]byte
	fin  *workerproto.Finished
}

func (d *dedupe) add(m *workerproto.WorkerMessage) {
	if o := m.GetOutput(); o != nil {
		if prev, ok := d.seen[o.GetSeq()]; ok && string(prev) != string(o.GetData()) {
			d.t.Errorf("seq %d replayed with different data", o.GetSeq())
		}
		if _, ok := d.seen[o.GetSeq()]; !ok {
			d.seen[o.GetSeq()] = o.GetData()
		}
	}
	if f := m.GetFinished(); f != nil {
		d.fin = f
	}
}

// text checks that seqs 1..last_seq are all there and joins them.
func (d *dedupe) text() string {
	var b strings.Builder
	for seq := uint64(1); seq <= d.fin.GetLastSeq(); seq++ {
		data, ok := d.seen[seq]
		if !ok {
			d.t.Fatalf("gap: seq %d missing (last_seq %d)", seq, d.fin.GetLastSeq())
		}
		b.Write(data)
	}
	if uint64(len(d.seen)) != d.fin.GetLastSeq() {
		d.t.Errorf("%d distinct seqs, last_seq %d", len(d.seen), d.fin.GetLastSeq())
	}
	return b.String()
}

func TestOutputIsReplayedAfterReconnect(t *testing.T) {
	m := startFakeMaster(t, false)
	m.autoAck.Store(false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s1 := m.Session(t)
	s1.Run(shell("c1", `for i in $(seq 1 30); do echo line $i; sleep 0.03; done; exit 7`))

	d := &dedupe{t: t, seen: map[uint64][]byte{}}
	// Take four chunks, acknowledge the first two, then break the stream.
	for len(d.seen) < 4 {
		msg := s1.Next(t, 5*time.Second)
		if msg.GetFinished() != nil {
			t.Fatal("command finished before the stream was dropped")
		}
		d.add(msg)
	}
	s1.Ack("c1", 2)
	time.Sleep(50 * time.Millisecond) // let the ack arrive before the drop
	m.autoAck.Store(true)
	s1.Drop()

	s2 := m.Session(t)
	if len(s2.hello.GetRunning()) != 1 || s2.hello.GetRunning()[0].GetCommandId() != "c1" || s2.hello.GetRunning()[0].GetNextSeq() < 5 {
		t.Fatalf("hello running = %v, want c1 with next_seq >= 5", s2.hello.GetRunning())
	}
	first := true
	for d.fin == nil {
		msg := s2.Next(t, 10*time.Second)
		if o := msg.GetOutput(); o != nil && first {
			first = false
			if o.GetSeq() != 3 {
				t.Errorf("replay starts at seq %d, want 3 (1 and 2 were acknowledged)", o.GetSeq())
			}
		}
		d.add(msg)
	}
	var want strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got := d.text(); got != want.String() {
		t.Errorf("output after dedupe:\n%s\nwant:\n%s", got, want.String())
	}
	if d.fin.GetExitCode() != 7 {
		t.Errorf("finished = %v", d.fin)
	}
}

func TestFinishedIsReplayedAfterReconnect(t *testing.T) {
	m := startFakeMaster(t, false)
	m.autoAck.Store(false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s1 := m.Session(t)
	s1.Run(shell("c1", `echo done`))
	s1.Collect(t, "c1", 5*time.Second) // received, never acknowledged
	s1.Drop()

	s2 := m.Session(t)
	r := s2.hello.GetRunning()
	if len(r) != 1 || !r[0].GetFinished() || r[0].GetNextSeq() != 2 {
		t.Fatalf("hello running = %v, want c1 finished with next_seq 2", r)
	}
	chunks, f := s2.Collect(t, "c1", 5*time.Second)
	if stdout, _ := output(t, chunks, f); stdout != "done\n" {
		t.Errorf("replayed stdout = %q", stdout)
	}
}

func TestCommandNotKeptIsKilled(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s1 := m.Session(t)
	s1.Run(shell("c1", `sleep 300 & echo $!; echo $$; sleep 300`))
	pids := readPIDs(t, s1, "c1", 2)
	keepNone := func(*workerproto.Hello) []string { return nil }
	m.keep.Store(&keepNone)
	s1.Drop()

	s2 := m.Session(t)
	if len(s2.hello.GetRunning()) != 1 {
		t.Errorf("hello running = %v, want c1", s2.hello.GetRunning())
	}
	assertGone(t, pids)
	s2.Run(shell("c2", `true`))
	for {
		msg := s2.Next(t, 5*time.Second)
		if msg.GetOutput().GetCommandId() == "c1" || msg.GetFinished().GetCommandId() == "c1" {
			t.Fatalf("forgotten command still reports: %v", msg)
		}
		if msg.GetFinished().GetCommandId() == "c2" {
			break
		}
	}
}

func TestFullBufferBlocksInsteadOfDropping(t *testing.T) {
	const total = 3_000_000
	m := startFakeMaster(t, false)
	m.autoAck.Store(false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	a.maxBuffered = 256 << 10
	runAgent(t, a)
	s := m.Session(t)
	s.Run(shell("big", fmt.Sprintf(`head -c %d /dev/zero`, total)))

	// Without acks the worker stops at its bound.
	d := &dedupe{t: t, seen: map[uint64][]byte{}}
	var got, last uint64
	deadline := time.After(500 * time.Millisecond)
wait:
	for {
		select {
		case msg := <-s.in:
			if msg.GetFinished() != nil {
				t.Fatal("finished without acks: output was dropped")
			}
			d.add(msg)
			got += uint64(len(msg.GetOutput().GetData()))
			last = msg.GetOutput().GetSeq()
		case <-deadline:
			break wait
		}
	}
	if bound := uint64(a.maxBuffered + maxChunk); got > bound || got == 0 {
		t.Fatalf("sent %d bytes unacknowledged, want (0, %d]", got, bound)
	}
	// Acknowledging lets the rest through.
	s.Ack("big", last)
	m.autoAck.Store(true)
	for d.fin == nil {
		msg := s.Next(t, 10*time.Second)
		if o := msg.GetOutput(); o != nil && !m.autoAck.Load() {
			s.Ack("big", o.GetSeq())
		}
		d.add(msg)
	}
	if n := len(d.text()); n != total {
		t.Errorf("received %d bytes, want %d", n, total)
	}
}
