//go:build unix

package agent

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Two masters of one site (one CA), reached by two different names, each
// verified against the pinned CA. The first dies in the middle of a
// command; the worker fails over to the second at once, holds the command
// in its hello there, and replays the output the first did not
// acknowledge.
func TestFailoverToAnotherMaster(t *testing.T) {
	ms := startFakeSite(t, 2)
	_, port1, _ := net.SplitHostPort(ms[0].addr)
	masters := []string{net.JoinHostPort("localhost", port1), ms[1].addr}
	ms[0].autoAck.Store(false)
	a := newTestAgent(t, ms[0], t.TempDir(), func(c *Config) {
		c.Masters = masters
		c.Token = testEnrollToken
	})
	slowBackoff(a)
	runAgent(t, a)

	s1 := ms[0].Session(t)
	s1.Run(shell("c1", `echo first; while [ ! -e go ]; do sleep 0.02; done; echo second`))
	d := &dedupe{t: t, seen: map[uint64][]byte{}}
	for len(d.seen) < 1 {
		d.add(s1.Next(t, 10*time.Second))
	}
	ms[0].stop() // as a master killed with SIGKILL: every connection closes

	// ms[1].Session waits 10 s, far less than the 30 s minimum backoff
	// the worker would wait between two rounds.
	s2 := ms[1].Session(t)
	run := s2.hello.GetRunning()
	if len(run) != 1 || run[0].GetCommandId() != "c1" {
		t.Fatalf("hello to the second master: running = %v, want c1", run)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "b", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for d.fin == nil {
		d.add(s2.Next(t, 10*time.Second))
	}
	if got := d.text(); got != "first\nsecond\n" {
		t.Errorf("output across both masters = %q", got)
	}
	if d.fin.GetExitCode() != 0 {
		t.Errorf("finished = %v", d.fin)
	}
	enrolls := 0
	for _, m := range ms {
		m.mu.Lock()
		enrolls += len(m.enrolls)
		m.mu.Unlock()
	}
	if enrolls != 1 {
		t.Errorf("enrolled %d times, want once", enrolls)
	}

}
