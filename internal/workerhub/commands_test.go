package workerhub

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

func out(id string, seq uint64, data string) *pb.WorkerMessage {
	return &pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: id, Seq: seq, Data: []byte(data), Stream: pb.Stream_STREAM_STDOUT}}}
}

// runningBuild claims a build with one running step and its log, as a
// master does before it sends the step's command.
func (f *fixture) runningBuild(t *testing.T) (*drover.Build, *drover.Log) {
	t.Helper()
	ctx := context.Background()
	req := &drover.BuildRequest{Builder: "b", Reason: "test", Submitted: time.Now()}
	if err := f.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Worker: "w1", Started: time.Now()}
	if err := f.store.ClaimRequest(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}
	l := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	st := []drover.Step{{BuildID: b.ID, Index: 0, Name: "test", State: drover.StepRunning, Started: time.Now()}}
	if err := f.store.Builds("").StartBuild(ctx, b.ID, nil, st, l); err != nil {
		t.Fatal(err)
	}
	return b, l
}

// recvAck reads the worker's stream up to the next ack.
func recvAck(t *testing.T, st pb.Worker_ConnectClient) *pb.Ack {
	t.Helper()
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if a := m.GetAck(); a != nil {
			return a
		}
	}
}

// Output is appended in sequence: a replay is dropped, the bytes a
// re-attached command's log already holds are skipped, and the flush
// records the log's progress before it acks.
func TestIngestSequence(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	w := f.connect(t, "w1", tok)
	b, l := f.runningBuild(t)
	// A re-attached command: the log holds "ab" of its first chunk.
	if err := f.logs.Append(l.ID, []byte("ab")); err != nil {
		t.Fatal(err)
	}
	c := f.hub.Track(&pb.RunCommand{CommandId: "c1", BuildId: b.ID}, "w1", l.ID, 1, 2)
	for _, m := range []*pb.WorkerMessage{out("c1", 1, "abc"), out("c1", 2, "de"), out("c1", 1, "abc"), out("c1", 3, "f")} {
		if err := w.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Finished{Finished: &pb.Finished{CommandId: "c1", LastSeq: 3}}}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if got := readLog(t, f.logs, l.ID); got != "abcdef" {
		t.Errorf("log = %q, want the replay dropped and the held bytes skipped", got)
	}
	if got := string(c.Stdout()); got != "abcdef" {
		t.Errorf("stdout = %q", got)
	}
	if f.hub.OutputBytes() != 6 {
		t.Errorf("output bytes = %d, want 6", f.hub.OutputBytes())
	}

	if err := f.hub.Flush(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if a := recvAck(t, w); a.GetCommandId() != "c1" || a.GetSeq() != 3 || a.GetFinished() {
		t.Fatalf("ack = %v, want c1 up to 3", a)
	}
	got, err := f.store.GetLog(context.Background(), l.ID)
	if err != nil || got.Seq != 3 || got.SeqBytes != 6 {
		t.Fatalf("log progress = %+v, %v; want seq 3 at 6 bytes", got, err)
	}
	// Nothing new: no second ack, no write.
	if err := f.hub.Flush(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := f.hub.Complete(c, &pb.Finished{CommandId: "c1", LastSeq: 3}); err != nil {
		t.Fatal(err)
	}
	if a := recvAck(t, w); !a.GetFinished() || a.GetSeq() != 3 {
		t.Fatalf("ack after the end = %v, want finished at 3", a)
	}
}

// A worker that breaks the sequence loses its stream; nothing it sent
// out of order is stored.
func TestIngestRefusals(t *testing.T) {
	tests := []struct {
		name string
		msgs []*pb.WorkerMessage
	}{
		{"a gap", []*pb.WorkerMessage{out("c1", 2, "x")}},
		{"output after the end", []*pb.WorkerMessage{
			{Msg: &pb.WorkerMessage_Finished{Finished: &pb.Finished{CommandId: "c1", LastSeq: 0}}}, out("c1", 1, "x")}},
		{"an end before the output", []*pb.WorkerMessage{
			{Msg: &pb.WorkerMessage_Finished{Finished: &pb.Finished{CommandId: "c1", LastSeq: 4}}}}},
		{"another worker's command", []*pb.WorkerMessage{out("theirs", 1, "x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.enrollWorker(t, "w1")
			w := f.connect(t, "w1", tok)
			f.hub.Track(&pb.RunCommand{CommandId: "c1"}, "w1", 1, 1, 0)
			f.hub.Track(&pb.RunCommand{CommandId: "theirs"}, "w2", 2, 1, 0)
			for _, m := range tt.msgs {
				if err := w.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := w.Recv(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("stream after %s: %v, want InvalidArgument", tt.name, err)
			}
			if _, err := f.logs.Stat(1); drover.KindOf(err) != drover.NotFound {
				t.Errorf("a log was written: %v", err)
			}
		})
	}
}

// refusingProgress is a store whose log progress writes fail.
type refusingProgress struct {
	Store
	err   error
	calls atomic.Int32
}

func (r *refusingProgress) SetLogProgress(ctx context.Context, p []drover.Log) error {
	r.calls.Add(1)
	return r.err
}

// Output whose progress could not be recorded is not acked — a database
// down, or a build another master took over (its writes are fenced): the
// worker keeps it, to replay to whoever drives the build.
func TestNoAckWithoutProgress(t *testing.T) {
	for _, cause := range []error{errors.New("connection refused"), drover.Errorf(drover.Conflict, "fenced: %w", store.ErrNotDriver)} {
		t.Run(cause.Error(), func(t *testing.T) {
			rp := &refusingProgress{err: cause}
			f := newFixtureWith(t, func(o *Options) { rp.Store = o.Store; o.Store = rp })
			tok := f.enrollWorker(t, "w1")
			w := f.connect(t, "w1", tok)
			c := f.hub.Track(&pb.RunCommand{CommandId: "c1"}, "w1", 1, 1, 0)
			if err := w.Send(out("c1", 1, "x")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return f.hub.OutputBytes() == 1 }, "the output")
			if err := f.hub.Flush(context.Background(), c); !errors.Is(err, cause) && err == nil {
				t.Fatalf("flush = %v, want the store's error", err)
			}
			if rp.calls.Load() != 1 {
				t.Fatalf("progress written %d times", rp.calls.Load())
			}
			// A probe through the stream: the next message the worker gets
			// is the run below, not an ack.
			s, _ := f.hub.Session("w1")
			if err := s.Run(&pb.RunCommand{CommandId: "probe"}); err != nil {
				t.Fatal(err)
			}
			m, err := w.Recv()
			if err != nil || m.GetRun().GetCommandId() != "probe" {
				t.Fatalf("the worker got %v, %v before the probe: an ack without progress?", m, err)
			}
		})
	}
}

// A worker that comes back holding a command gets to keep it and its
// command is told; one that comes back without it loses it.
func TestAttach(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	kept := f.hub.Track(&pb.RunCommand{CommandId: "kept"}, "w1", 1, 1, 0)
	gone := f.hub.Track(&pb.RunCommand{CommandId: "gone"}, "w1", 2, 1, 0)
	other := f.hub.Track(&pb.RunCommand{CommandId: "other"}, "w2", 3, 1, 0)
	st, err := f.client.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.Hello{Name: "w1", Token: tok, ProtocolVersion: pb.ProtocolVersion,
		Running: []*pb.RunningCommand{{CommandId: "kept"}, {CommandId: "stranger"}}}
	if err := st.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if k := m.GetWelcome().GetKeep(); len(k) != 1 || k[0] != "kept" {
		t.Fatalf("keep = %v, want only the command the master tracks", k)
	}
	select {
	case <-kept.Reattached():
	default:
		t.Error("the kept command was not told its worker is back")
	}
	select {
	case <-gone.Lost():
	default:
		t.Error("the command its worker came back without is not lost")
	}
	select {
	case <-other.Lost():
		t.Error("another worker's command was lost")
	default:
	}
}

// A link a running command publishes is stored on its step at once and
// the build page told; a bad one is dropped and the stream stays up. Its
// properties wait for the step's end.
func TestStepUpdateStored(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	w := f.connect(t, "w1", tok)
	b, l := f.runningBuild(t)
	sub := f.bus.Subscribe()
	defer sub.Close()
	c := f.hub.Track(&pb.RunCommand{CommandId: "c1", BuildId: b.ID, Step: 0}, "w1", l.ID, 1, 0)
	u := &pb.StepUpdate{CommandId: "c1", Urls: map[string]string{"report": "https://example.org/r", "bad": "has spaces in it"},
		Properties: map[string]string{"version": "1.2.3"}}
	for range 2 { // a resend after a reconnect changes nothing
		if err := w.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_StepUpdate{StepUpdate: u}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case e := <-sub.C:
		if e.Type != events.StepUpdated || e.BuildID != b.ID {
			t.Errorf("event = %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no step.updated event")
	}
	waitFor(t, func() bool { _, p := c.Published(); return p["version"] == "1.2.3" }, "the property")
	steps, err := f.store.ListSteps(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := steps[0].URLs; len(got) != 1 || got["report"] != "https://example.org/r" {
		t.Errorf("step links = %v", got)
	}
	if urls, _ := c.Published(); len(urls) != 1 {
		t.Errorf("published links = %v", urls)
	}
	// The stream is still up.
	if err := w.Send(out("c1", 1, "x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.hub.OutputBytes() == 1 }, "output after the update")
}
