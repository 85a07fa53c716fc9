//go:build unix

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

func shell(id, script string) *workerproto.RunCommand {
	return &workerproto.RunCommand{CommandId: id, Builder: "b", Argv: []string{"sh", "-c", script}, KillGraceMs: 500}
}

// output concatenates chunks, checking that they are numbered 1, 2, … and
// none is larger than maxChunk.
func output(t *testing.T, chunks []*workerproto.Output, f *workerproto.Finished) (stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	for i, c := range chunks {
		if c.GetSeq() != uint64(i+1) {
			t.Fatalf("chunk %d has seq %d, want %d", i, c.GetSeq(), i+1)
		}
		if len(c.GetData()) == 0 || len(c.GetData()) > maxChunk {
			t.Errorf("chunk %d has %d bytes", c.GetSeq(), len(c.GetData()))
		}
		switch c.GetStream() {
		case workerproto.Stream_STREAM_STDOUT:
			out.Write(c.GetData())
		case workerproto.Stream_STREAM_STDERR:
			errb.Write(c.GetData())
		default:
			t.Errorf("chunk %d: stream %v", c.GetSeq(), c.GetStream())
		}
	}
	if f.GetLastSeq() != uint64(len(chunks)) {
		t.Errorf("last_seq = %d, want %d", f.GetLastSeq(), len(chunks))
	}
	return out.String(), errb.String()
}

// readPIDs reads n lines of PIDs that command id prints first.
func readPIDs(t *testing.T, s *fakeSession, id string, n int) []int {
	t.Helper()
	var buf strings.Builder
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(buf.String(), "\n") < n {
		m := s.Next(t, time.Until(deadline))
		if o := m.GetOutput(); o != nil && o.GetCommandId() == id {
			buf.Write(o.GetData())
		}
		if f := m.GetFinished(); f != nil {
			t.Fatalf("command finished early: %v", f)
		}
	}
	var pids []int
	for _, line := range strings.Fields(buf.String())[:n] {
		pid, err := strconv.Atoi(line)
		if err != nil {
			t.Fatalf("not a pid: %q", line)
		}
		pids = append(pids, pid)
	}
	return pids
}

// alive reports whether pid is a live process. A zombie is dead: it waits
// only for its reaper, which in a container may be a PID 1 that never
// reaps.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // not Linux: trust kill
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 {
		return b[i+2] != 'Z'
	}
	return true
}

// assertGone fails unless every pid has gone, waiting briefly for reapers.
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Errorf("process %d outlived its command", pid)
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestCommandOutputAndExitCode(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s := m.Session(t)
	req := shell("c1", `echo hello; sleep 0.2; echo err >&2; sleep 0.2; echo "$FOO"; exit 3`)
	req.Env = map[string]string{"FOO": "from master"}
	s.Run(req)
	chunks, f := s.Collect(t, "c1", 10*time.Second)
	stdout, stderr := output(t, chunks, f)
	if stdout != "hello\nfrom master\n" || stderr != "err\n" {
		t.Errorf("stdout %q, stderr %q", stdout, stderr)
	}
	if len(chunks) != 3 {
		t.Errorf("%d chunks, want 3 (one per burst)", len(chunks))
	}
	if f.GetExitCode() != 3 || f.GetReason() != workerproto.FinishReason_FINISH_REASON_EXITED || f.GetError() != "" {
		t.Errorf("finished = %v", f)
	}
	if f.GetDurationMs() < 400 {
		t.Errorf("duration = %d ms", f.GetDurationMs())
	}
}

func TestCommandLargeOutputIsChunked(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(shell("big", `head -c 1000000 /dev/zero | tr '\0' x`))
	chunks, f := s.Collect(t, "big", 10*time.Second)
	stdout, _ := output(t, chunks, f)
	if len(stdout) != 1000000 || strings.Trim(stdout, "x") != "" {
		t.Errorf("got %d bytes of output", len(stdout))
	}
	if len(chunks) < 1000000/maxChunk {
		t.Errorf("%d chunks for 1 MB: not cut at %d bytes", len(chunks), maxChunk)
	}
}

func TestCommandTimeoutsAndCancel(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), func(c *Config) { c.MaxBuilds = 4 })
	runAgent(t, a)
	s := m.Session(t)

	// All four run at once on one stream, as a master would drive them.
	noOutput := shell("no-output", `sleep 300 & echo $!; sleep 300 & echo $!; echo $$; echo started; sleep 300`)
	noOutput.NoOutputTimeoutMs = 300
	s.Run(noOutput)
	maxTime := shell("max-time", `trap '' TERM; echo $$; while true; do echo tick; sleep 0.05; done`)
	maxTime.MaxTimeMs = 400
	maxTime.NoOutputTimeoutMs = 300 // never reached: it prints all the time
	s.Run(maxTime)
	orphan := shell("orphan", `sleep 300 & echo $!; exit 0`)
	s.Run(orphan)
	cancel := shell("cancel", `echo $$; sleep 300`)
	s.Run(cancel)

	type result struct {
		out  string
		fin  *workerproto.Finished
		when time.Time
	}
	results := map[string]*result{}
	start := time.Now()
	cancelled := false
	allFinished := func() bool {
		if len(results) < 4 {
			return false
		}
		for _, r := range results {
			if r.fin == nil {
				return false
			}
		}
		return true
	}
	for !allFinished() {
		m := s.Next(t, 10*time.Second)
		if o := m.GetOutput(); o != nil {
			r := results[o.GetCommandId()]
			if r == nil {
				r = &result{}
				results[o.GetCommandId()] = r
			}
			r.out += string(o.GetData())
			if o.GetCommandId() == "cancel" && !cancelled {
				cancelled = true
				s.Send(&workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Cancel{Cancel: &workerproto.Cancel{CommandId: "cancel", Reason: "by test"}}})
			}
		}
		if f := m.GetFinished(); f != nil {
			r := results[f.GetCommandId()]
			if r == nil {
				r = &result{}
				results[f.GetCommandId()] = r
			}
			r.fin, r.when = f, time.Now()
		}
	}
	tests := []struct {
		id     string
		reason workerproto.FinishReason
		code   int32
		errSub string
		within time.Duration
	}{
		{"no-output", workerproto.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT, -1, "no output for 300ms: killed", 3 * time.Second},
		// It ignores SIGTERM, so SIGKILL after the 500 ms grace ends it.
		{"max-time", workerproto.FinishReason_FINISH_REASON_MAX_TIME, -1, "max time 400ms: killed", 3 * time.Second},
		{"orphan", workerproto.FinishReason_FINISH_REASON_EXITED, 0, "", 2 * time.Second},
		{"cancel", workerproto.FinishReason_FINISH_REASON_CANCELLED, -1, "cancelled (by test)", 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			r := results[tt.id]
			f := r.fin
			if f.GetReason() != tt.reason || f.GetExitCode() != tt.code || !strings.Contains(f.GetError(), tt.errSub) {
				t.Errorf("finished = %v; want reason %v, exit %d, error containing %q", f, tt.reason, tt.code, tt.errSub)
			}
			if d := r.when.Sub(start); d > tt.within {
				t.Errorf("finished after %s, want within %s", d, tt.within)
			}
			var pids []int
			for _, line := range strings.Fields(r.out) {
				if pid, err := strconv.Atoi(line); err == nil {
					pids = append(pids, pid)
				}
			}
			if len(pids) == 0 {
				t.Fatalf("no pids in output %q", r.out)
			}
			assertGone(t, pids)
		})
	}
}

func TestCommandStartFailures(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	tests := []struct {
		name    string
		builder string
		workdir string
		argv    []string
		errSub  string
	}{
		{"builder escapes", "..", "", []string{"true"}, "bad builder name"},
		{"builder with a separator", "a/b", "", []string{"true"}, "bad builder name"},
		{"empty builder", "", "", []string{"true"}, "bad builder name"},
		{"absolute builder", "/etc", "", []string{"true"}, "bad builder name"},
		{"absolute workdir", "b", "/etc", []string{"true"}, "bad workdir"},
		{"workdir escapes", "b", "../../x", []string{"true"}, "bad workdir"},
		{"workdir escapes inside", "b", "src/../../x", []string{"true"}, "bad workdir"},
		{"command not found", "b", "", []string{"no-such-command-drover-test"}, "no-such-command-drover-test"},
		{"no argv", "b", "", nil, "empty argv"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("sf%d", i)
			s.Run(&workerproto.RunCommand{CommandId: id, Builder: tt.builder, Workdir: tt.workdir, Argv: tt.argv})
			chunks, f := s.Collect(t, id, 5*time.Second)
			if len(chunks) != 0 || f.GetReason() != workerproto.FinishReason_FINISH_REASON_START_FAILED || f.GetExitCode() != -1 || !strings.Contains(f.GetError(), tt.errSub) {
				t.Errorf("finished = %v, chunks %d; want START_FAILED with %q", f, len(chunks), tt.errSub)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
		t.Error("a directory was created outside the worker directory")
	}

	t.Run("workdir is created", func(t *testing.T) {
		s.Run(&workerproto.RunCommand{CommandId: "pwd", Builder: "linux-gcc", Workdir: "build/sub", Argv: []string{"pwd", "-P"}})
		chunks, f := s.Collect(t, "pwd", 5*time.Second)
		stdout, _ := output(t, chunks, f)
		want, _ := filepath.EvalSymlinks(filepath.Join(dir, "linux-gcc", "build", "sub"))
		if strings.TrimSpace(stdout) != want || f.GetExitCode() != 0 {
			t.Errorf("pwd = %q (exit %d), want %q", stdout, f.GetExitCode(), want)
		}
	})
	t.Run("duplicate id is ignored", func(t *testing.T) {
		s.Run(shell("dup", `echo once`))
		s.Run(shell("dup", `echo twice`))
		chunks, f := s.Collect(t, "dup", 5*time.Second)
		stdout, _ := output(t, chunks, f)
		if stdout != "once\n" {
			t.Errorf("stdout = %q", stdout)
		}
		s.Run(shell("after", `true`))
		for {
			m := s.Next(t, 5*time.Second)
			if m.GetFinished().GetCommandId() == "dup" || m.GetOutput().GetCommandId() == "dup" {
				t.Fatalf("duplicate ran: %v", m)
			}
			if m.GetFinished().GetCommandId() == "after" {
				break
			}
		}
	})
}

func TestRunStopsPromptly(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	cancel, done := runAgent(t, a)
	s := m.Session(t)
	s.Run(shell("c1", `sleep 300 & echo $!; echo $$; sleep 300`))
	pids := readPIDs(t, s, "c1", 2)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %s to return", d)
	}
	assertGone(t, pids)
}

// A command runs with PWD set to its own directory, not the worker's, and
// with no DROVER_* variable of the worker's environment: only those of
// the master and the worker. The rest of the worker's environment is
// passed on.
func TestCommandEnvironment(t *testing.T) {
	t.Setenv("PWD", "/the/worker/started/here")
	t.Setenv("OLDPWD", "/before/that")
	t.Setenv("DROVER_TOKEN", "drover_api_operator-secret")
	t.Setenv("DROVER_BUILDER", "a-builder-of-another-worker")
	t.Setenv("WORKER_ONLY", "passed on")
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	// env, not a shell: a shell mends a stale PWD by itself, a program
	// run as argv does not.
	req := &workerproto.RunCommand{CommandId: "env1", Builder: "b", Argv: []string{"env"}, KillGraceMs: 500}
	req.Workdir = "build/sub"
	req.Env = map[string]string{"DROVER_BUILDER": "b", "STEP_VAR": "x"}
	s.Run(req)
	chunks, f := s.Collect(t, "env1", 10*time.Second)
	stdout, stderr := output(t, chunks, f)
	if f.GetExitCode() != 0 {
		t.Fatalf("finished %v\n%s%s", f, stdout, stderr)
	}
	got := map[string][]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = append(got[k], v)
	}
	for k, want := range map[string]string{
		"PWD":               filepath.Join(dir, "b", "build", "sub"),
		"DROVER_BUILDER":    "b",
		"WORKER_ONLY":       "passed on",
		"DROVER_COMMAND_ID": "env1",
		"STEP_VAR":          "x",
	} {
		if len(got[k]) != 1 || got[k][0] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	for _, k := range []string{"OLDPWD", "DROVER_TOKEN"} {
		if v, ok := got[k]; ok {
			t.Errorf("the worker's %s reached the command: %q", k, v)
		}
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("PWD", "/elsewhere")
	t.Setenv("DROVER_MASTER", "http://ci.example.org")
	env := environ(map[string]string{"B": "2", "A": "1", "PWD": "/set/by/step"}, "/work/b/build")
	var pwds, drover []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "PWD=") {
			pwds = append(pwds, kv)
		}
		if strings.HasPrefix(kv, "DROVER_") {
			drover = append(drover, kv)
		}
	}
	// The step's own PWD, if it sets one, comes last and wins.
	if len(pwds) != 2 || pwds[0] != "PWD=/work/b/build" || pwds[1] != "PWD=/set/by/step" {
		t.Errorf("PWD entries = %q", pwds)
	}
	if len(drover) != 0 {
		t.Errorf("inherited DROVER_* variables: %q", drover)
	}
	if n := len(env); env[n-3] != "A=1" || env[n-2] != "B=2" {
		t.Errorf("the command's variables are not last and sorted: %q", env[n-3:])
	}
}
