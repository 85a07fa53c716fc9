package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// TestStepUpdatesThroughControlSocket shows that a command finds the
// control socket and its id in its environment, that POST /step checks
// what it is given, and that the worker sends what a command published
// to the master before the command's Finished, and again after a
// reconnect.
func TestStepUpdatesThroughControlSocket(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	ctx := context.Background()
	socket := controlPath(waitDir(t, dir))

	s.Run(shell("c1", `echo "env:$DROVER_CONTROL|$DROVER_COMMAND_ID"; sleep 2; echo done`))
	o := s.Next(t, 10*time.Second).GetOutput()
	want := "env:" + filepath.Join(a.dir, controlSocketName) + "|c1"
	if o == nil || !strings.Contains(string(o.GetData()), want) {
		t.Fatalf("first message %v, want output holding %q", o, want)
	}
	s.Ack("c1", o.GetSeq())

	for _, tc := range []struct {
		req  StepRequest
		kind drover.Kind
	}{
		{StepRequest{CommandID: "nope", Kind: StepURL, Name: "r", Value: "https://example.org/"}, drover.NotFound},
		{StepRequest{CommandID: "c1", Kind: "colour", Name: "r", Value: "red"}, drover.Invalid},
		{StepRequest{CommandID: "c1", Kind: StepURL, Name: "", Value: "https://example.org/"}, drover.Invalid},
		{StepRequest{CommandID: "c1", Kind: StepProperty, Name: "bad name", Value: "1"}, drover.Invalid},
	} {
		if err := PublishStep(ctx, socket, tc.req); drover.KindOf(err) != tc.kind {
			t.Errorf("PublishStep(%+v) = %v, want kind %v", tc.req, err, tc.kind)
		}
	}
	for _, req := range []StepRequest{
		{CommandID: "c1", Kind: StepURL, Name: "report", Value: "https://example.org/r/1"},
		{CommandID: "c1", Kind: StepProperty, Name: "version", Value: "1.2.3"},
	} {
		if err := PublishStep(ctx, socket, req); err != nil {
			t.Fatalf("PublishStep(%+v): %v", req, err)
		}
	}
	check := func(u *workerproto.StepUpdate) {
		t.Helper()
		if u.GetCommandId() != "c1" || u.GetUrls()["report"] != "https://example.org/r/1" || u.GetProperties()["version"] != "1.2.3" {
			t.Errorf("step update = %v", u)
		}
	}
	// The first session sees the update (in one message or two: the
	// worker may send after each request).
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := s.Next(t, time.Until(deadline))
		if msg.GetFinished() != nil {
			t.Fatal("command finished before its step update was sent")
		}
		if u := msg.GetStepUpdate(); u != nil && u.GetProperties()["version"] != "" {
			check(u)
			break
		}
	}
	// A new stream gets it again, before the command's Finished.
	s.Drop()
	s2 := m.Session(t)
	var got *workerproto.StepUpdate
	for {
		msg := s2.Next(t, time.Until(deadline))
		if u := msg.GetStepUpdate(); u != nil {
			got = u
		}
		if f := msg.GetFinished(); f != nil {
			if f.GetExitCode() != 0 {
				t.Errorf("command finished %v", f)
			}
			break
		}
	}
	if got == nil {
		t.Fatal("no step update resent after reconnect")
	}
	check(got)
}

// TestStepUpdatesSurviveWorkerRestart shows that what a command published
// is kept in its directory and sent by the next worker process, which
// re-adopts the command, before the command's Finished.
func TestStepUpdatesSurviveWorkerRestart(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	a1 := newTestAgent(t, m, dir, nil)
	cancel1, done1 := runAgent(t, a1)
	s1 := m.Session(t)
	s1.Run(shell("c1", `echo started; sleep 2; echo done`))
	if o := s1.Next(t, 10*time.Second).GetOutput(); o == nil {
		t.Fatal("no output from the command")
	}
	req := StepRequest{CommandID: "c1", Kind: StepURL, Name: "report", Value: "https://example.org/r"}
	if err := PublishStep(context.Background(), controlPath(waitDir(t, dir)), req); err != nil {
		t.Fatal(err)
	}
	crash(t, a1, cancel1, done1)

	a2 := newTestAgent(t, m, dir, nil)
	runAgent(t, a2)
	s2 := m.Session(t)
	var got *workerproto.StepUpdate
	for {
		msg := s2.Next(t, 10*time.Second)
		if u := msg.GetStepUpdate(); u != nil {
			got = u
		}
		if msg.GetFinished() != nil {
			break
		}
	}
	if got.GetCommandId() != "c1" || got.GetUrls()["report"] != "https://example.org/r" {
		t.Errorf("step update after restart = %v", got)
	}
}
