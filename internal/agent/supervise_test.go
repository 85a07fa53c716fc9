//go:build unix

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

func TestSpoolRoundTrip(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, spoolFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	w := &spoolWriter{f: f}
	// Records: "abc" (out), "defgh" (out), "XY" (err), "ij" (out).
	for _, r := range []struct {
		s    workerproto.Stream
		data string
	}{
		{workerproto.Stream_STREAM_STDOUT, "abc"},
		{workerproto.Stream_STREAM_STDOUT, "defgh"},
		{workerproto.Stream_STREAM_STDERR, "XY"},
		{workerproto.Stream_STREAM_STDOUT, "ij"},
	} {
		if err := w.write(r.s, []byte(r.data)); err != nil {
			t.Fatal(err)
		}
	}
	rec2 := int64(spoolHeaderSize + 3)
	rec3 := rec2 + spoolHeaderSize + 5
	rec4 := rec3 + spoolHeaderSize + 2
	end := rec4 + spoolHeaderSize + 2
	tests := []struct {
		name    string
		loc     spoolLoc
		n       int
		want    string
		wantEnd spoolLoc
	}{
		{"whole first record", spoolLoc{}, 3, "abc", spoolLoc{rec: rec2}},
		{"across records", spoolLoc{skip: 1}, 5, "bcdef", spoolLoc{rec: rec2, skip: 3}},
		{"inside one record", spoolLoc{rec: rec2, skip: 1}, 2, "ef", spoolLoc{rec: rec2, skip: 3}},
		{"to the end of a record", spoolLoc{rec: rec2, skip: 3}, 2, "gh", spoolLoc{rec: rec3}},
		{"last record", spoolLoc{rec: rec4}, 2, "ij", spoolLoc{rec: end}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSpoolChunk(f, tt.loc, tt.n)
			if err != nil || string(got) != tt.want {
				t.Errorf("readSpoolChunk = %q, %v; want %q", got, err, tt.want)
			}
			gotEnd, err := advanceSpool(f, tt.loc, tt.n)
			if err != nil || gotEnd != tt.wantEnd {
				t.Errorf("advanceSpool = %+v, %v; want %+v", gotEnd, err, tt.wantEnd)
			}
		})
	}
	if _, err := readSpoolRecord(f, end, nil); !errors.Is(err, io.EOF) {
		t.Errorf("record past the end: %v, want EOF", err)
	}
	// A record still being written reads as not there yet.
	if _, err := f.Write([]byte{1, 0, 0, 0, 9, 'p'}); err != nil {
		t.Fatal(err)
	}
	if _, err := readSpoolRecord(f, end, nil); !errors.Is(err, io.EOF) {
		t.Errorf("partial record: %v, want EOF", err)
	}
}

func TestChunkIndexDropsTornEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), chunksFileName)
	e1 := chunkEntry{seq: 1, loc: spoolLoc{rec: 0, skip: 0}, n: 10, stream: workerproto.Stream_STREAM_STDOUT}
	e2 := chunkEntry{seq: 2, loc: spoolLoc{rec: 15, skip: 3}, n: 7, stream: workerproto.Stream_STREAM_STDERR}
	b := append(e1.marshal(), e2.marshal()...)
	b = append(b, e2.marshal()[:9]...) // a crash mid-write
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readChunkIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != e1 || got[1] != e2 {
		t.Errorf("entries = %+v", got)
	}
	if fi, _ := os.Stat(path); fi.Size() != 2*chunkEntrySize {
		t.Errorf("index not truncated to whole entries: %d bytes", fi.Size())
	}
}

// TestSupervisorAlone runs the supervisor as `__supervise DIR`, as the
// agent does, and reads what it leaves.
func TestSupervisorAlone(t *testing.T) {
	dir := t.TempDir()
	spec := commandSpec{
		CommandID: "s1",
		Argv:      []string{"sh", "-c", `echo out1; echo err1 >&2; echo "$X"; exit 5`},
		Env:       append(os.Environ(), "X=from spec"),
		Workdir:   dir,
	}
	if err := writeJSONFile(filepath.Join(dir, specFileName), spec); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "__supervise", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("supervisor: %v\n%s", err, out)
	}
	st, ok, err := readExit(dir)
	if err != nil || !ok {
		t.Fatalf("exit.json: %v, %v", ok, err)
	}
	if st.ExitCode != 5 || st.reason() != workerproto.FinishReason_FINISH_REASON_EXITED || st.Error != "" {
		t.Errorf("exit status = %+v", st)
	}
	f, err := os.Open(filepath.Join(dir, spoolFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stdout, stderr strings.Builder
	for off := int64(0); ; {
		r, err := readSpoolRecord(f, off, nil)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.stream == workerproto.Stream_STREAM_STDERR {
			stderr.Write(r.data)
		} else {
			stdout.Write(r.data)
		}
		off += spoolHeaderSize + int64(len(r.data))
	}
	if stdout.String() != "out1\nfrom spec\n" || stderr.String() != "err1\n" {
		t.Errorf("spool: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if pid := readPID(filepath.Join(dir, pidFileName)); pid != cmd.Process.Pid {
		t.Errorf("pid file says %d, supervisor was %d", pid, cmd.Process.Pid)
	}
}

// crash ends a's Run as a worker process that dies would: the commands
// keep running under their supervisors.
func crash(t *testing.T, a *Agent, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	a.detachOnStop = true
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestRestartReplaysUnacknowledgedOutput(t *testing.T) {
	m := startFakeMaster(t, false)
	m.autoAck.Store(false)
	dir := t.TempDir()
	a1 := newTestAgent(t, m, dir, nil)
	cancel1, done1 := runAgent(t, a1)
	s1 := m.Session(t)
	s1.Run(shell("c1", `for i in $(seq 1 40); do echo line $i; sleep 0.03; done; exit 7`))

	d := &dedupe{t: t, seen: map[uint64][]byte{}}
	for len(d.seen) < 4 {
		msg := s1.Next(t, 5*time.Second)
		if msg.GetFinished() != nil {
			t.Fatal("command finished before the worker died")
		}
		d.add(msg)
	}
	s1.Ack("c1", 2)
	waitFor(t, "ack recorded", func() bool { return readAcked(filepath.Join(dir, runDirName, "c1")) == 2 })
	crash(t, a1, cancel1, done1)
	time.Sleep(200 * time.Millisecond) // output goes on while no worker runs

	m.autoAck.Store(true)
	a2 := newTestAgent(t, m, dir, nil)
	runAgent(t, a2)
	s2 := m.Session(t)
	r := s2.hello.GetRunning()
	if len(r) != 1 || r[0].GetCommandId() != "c1" || r[0].GetNextSeq() < 5 {
		t.Fatalf("hello running = %v, want c1 with next_seq >= 5", r)
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
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got := d.text(); got != want.String() {
		t.Errorf("output after dedupe:\n%s\nwant:\n%s", got, want.String())
	}
	if d.fin.GetExitCode() != 7 || d.fin.GetReason() != workerproto.FinishReason_FINISH_REASON_EXITED {
		t.Errorf("finished = %v", d.fin)
	}

	// The master stored the Finished: the command's directory goes.
	s2.Send(&workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Ack{Ack: &workerproto.Ack{CommandId: "c1", Seq: d.fin.GetLastSeq(), Finished: true}}})
	waitFor(t, "command directory removed", func() bool {
		_, err := os.Stat(filepath.Join(dir, runDirName, "c1"))
		return errors.Is(err, fs.ErrNotExist)
	})
}

func TestRestartAfterCommandEndedReportsFinished(t *testing.T) {
	m := startFakeMaster(t, false)
	m.autoAck.Store(false)
	dir := t.TempDir()
	a1 := newTestAgent(t, m, dir, nil)
	cancel1, done1 := runAgent(t, a1)
	s1 := m.Session(t)
	s1.Run(shell("c1", `echo begin; sleep 0.5; echo end; exit 3`))
	if o := s1.Next(t, 5*time.Second).GetOutput(); o.GetSeq() != 1 || string(o.GetData()) != "begin\n" {
		t.Fatalf("first output = %v", o)
	}
	crash(t, a1, cancel1, done1)
	waitFor(t, "command ended", func() bool {
		_, ok, _ := readExit(filepath.Join(dir, runDirName, "c1"))
		return ok
	})

	m.autoAck.Store(true)
	a2 := newTestAgent(t, m, dir, nil)
	runAgent(t, a2)
	s2 := m.Session(t)
	if r := s2.hello.GetRunning(); len(r) != 1 || r[0].GetCommandId() != "c1" {
		t.Fatalf("hello running = %v", r)
	}
	chunks, f := s2.Collect(t, "c1", 5*time.Second)
	stdout, _ := output(t, chunks, f)
	if stdout != "begin\nend\n" || f.GetExitCode() != 3 {
		t.Errorf("stdout %q, finished %v", stdout, f)
	}
	if f.GetDurationMs() < 500 {
		t.Errorf("duration %d ms: not the command's own", f.GetDurationMs())
	}
}

func TestRestartKillsCommandsNotKept(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a1 := newTestAgent(t, m, dir, nil)
	cancel1, done1 := runAgent(t, a1)
	s1 := m.Session(t)
	s1.Run(shell("c1", `sleep 300 & echo $!; echo $$; sleep 300`))
	pids := readPIDs(t, s1, "c1", 2)
	rd := filepath.Join(dir, runDirName, "c1")
	super := readPID(filepath.Join(rd, pidFileName))
	if super == 0 {
		t.Fatal("no supervisor pid")
	}
	crash(t, a1, cancel1, done1)
	for _, pid := range append(pids, super) {
		if !alive(pid) {
			t.Fatalf("process %d died with the worker", pid)
		}
	}

	keepNone := func(*workerproto.Hello) []string { return nil }
	m.keep.Store(&keepNone)
	a2 := newTestAgent(t, m, dir, nil)
	runAgent(t, a2)
	s2 := m.Session(t)
	if r := s2.hello.GetRunning(); len(r) != 1 || r[0].GetCommandId() != "c1" || r[0].GetFinished() {
		t.Fatalf("hello running = %v, want c1 running", r)
	}
	assertGone(t, append(pids, super))
	waitFor(t, "command directory removed", func() bool {
		_, err := os.Stat(rd)
		return errors.Is(err, fs.ErrNotExist)
	})
}

func TestSupervisorDeathKillsCommand(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(shell("c1", `sleep 300 & echo $!; echo $$; sleep 300`))
	pids := readPIDs(t, s, "c1", 2)
	super := readPID(filepath.Join(dir, runDirName, "c1", pidFileName))
	if err := syscall.Kill(super, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, f := s.Collect(t, "c1", 5*time.Second)
	if f.GetReason() != workerproto.FinishReason_FINISH_REASON_CANCELLED || !strings.Contains(f.GetError(), "supervisor died") {
		t.Errorf("finished = %v", f)
	}
	assertGone(t, pids)
}

func TestStartFailureLeavesNoDirectory(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(&workerproto.RunCommand{CommandId: "../c1", Builder: "b", Argv: []string{"true"}})
	_, f := s.Collect(t, "../c1", 5*time.Second)
	if f.GetReason() != workerproto.FinishReason_FINISH_REASON_START_FAILED || !strings.Contains(f.GetError(), "bad command id") {
		t.Errorf("finished = %v", f)
	}
	s.Run(shell("c2", `exit 0`))
	s.Collect(t, "c2", 5*time.Second)
	if _, err := os.Stat(filepath.Join(dir, "c1")); err == nil {
		t.Error("a command directory was made outside DIR/run")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
