package mastertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Behavior is what every simulated worker of a Fleet does with a
// RunCommand.
type Behavior struct {
	// OutputBytes is the output each command sends before Finished;
	// zero sends one short line.
	OutputBytes int64
	// Chunk is the size of each Output message (default 64 KiB, the real
	// worker's largest chunk).
	Chunk int
	// Hold keeps every command running until Fleet.release.
	Hold bool
	// Ticks, when set, replaces the output: that many lines
	// "tick <unix nanoseconds>\n", TickEvery apart, for live-tail latency.
	Ticks     int
	TickEvery time.Duration
	// OnRun is called as a RunCommand arrives, with its arrival time; it
	// must not block.
	OnRun func(worker string, run *pb.RunCommand, at time.Time)
	// OnDone is called when the master acknowledges a command's Finished,
	// i.e. has stored its output and result; it must not block.
	OnDone func(worker, commandID string)
}

// Backoff of a simulated worker between connection attempts: the real
// agent's (uniform in [0, min(max, min·2^failures)) ), so that a connect
// storm is spread as a real Fleet's is.
const (
	simBackoffMin = time.Second
	simBackoffMax = 60 * time.Second
)

// Fleet is many simulated workers in one process, each with its own gRPC
// connection and Connect stream to the master: they speak the real
// protocol (enroll, hello, welcome, output, finished) without running
// anything, so that a test or a benchmark measures the master, not the
// commands.
type Fleet struct {
	addr    string
	creds   []Cred
	beh     Behavior
	log     *slog.Logger
	payload []byte // shared, read-only output bytes

	connected atomic.Int64
	changed   chan struct{} // signalled when connected changes; coalesced (Changed)
	release   chan struct{} // closed by ReleaseHeld
	relOnce   sync.Once

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// StartFleet connects a simulated worker per credential to addr. Close
// stops them.
func StartFleet(ctx context.Context, addr string, cs []Cred, beh Behavior, log *slog.Logger) *Fleet {
	if beh.Chunk <= 0 {
		beh.Chunk = 64 << 10
	}
	f := &Fleet{
		addr: addr, creds: slices.Clone(cs), beh: beh, log: log,
		changed: make(chan struct{}, 1), release: make(chan struct{}),
	}
	f.payload = makePayload(beh.Chunk)
	ctx, f.cancel = context.WithCancel(ctx)
	for i := range f.creds {
		f.wg.Go(func() { f.runWorker(ctx, &f.creds[i]) })
	}
	return f
}

// makePayload is n bytes of log-like text: compressible as real build
// output is, not as zeros are.
func makePayload(n int) []byte {
	b := make([]byte, 0, n+128)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "cc -O2 -c src/module%04d.c -o obj/module%04d.o  # drover-bench line %d\n", i%997, i%997, i)
	}
	return b[:n]
}

// Close disconnects every worker and waits for them. It is idempotent.
func (f *Fleet) Close() {
	f.closeOnce.Do(func() {
		f.cancel()
		f.wg.Wait()
	})
}

// ReleaseHeld lets held commands finish.
func (f *Fleet) ReleaseHeld() { f.relOnce.Do(func() { close(f.release) }) }

// Changed is signalled, coalesced, when Connected changes.
func (f *Fleet) Changed() <-chan struct{} { return f.changed }

// Creds are the workers' credentials, with the tokens enrolling gave
// them once they have connected.
func (f *Fleet) Creds() []Cred { return f.creds }

// Connected is how many workers have a welcomed session now.
func (f *Fleet) Connected() int { return int(f.connected.Load()) }

func (f *Fleet) setConnected(delta int64) {
	f.connected.Add(delta)
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// WaitConnected waits until exactly n workers are connected.
func (f *Fleet) WaitConnected(ctx context.Context, n int) error {
	for f.Connected() != n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d workers (have %d): %w", n, f.Connected(), ctx.Err())
		case <-f.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// runWorker keeps one simulated worker connected until ctx ends, with the
// real agent's backoff between attempts. It owns *c, and records there the
// token enrolling gave it.
func (f *Fleet) runWorker(ctx context.Context, c *Cred) {
	failures := 0
	for {
		up, err := f.session(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unauthenticated {
			f.log.Error("simulated worker refused", "worker", c.Name, "err", err)
			return
		}
		if up > time.Minute {
			failures = 0
		}
		bound := simBackoffMax
		if failures < 30 && simBackoffMin<<failures < simBackoffMax {
			bound = simBackoffMin << failures
		}
		failures++
		f.log.Debug("simulated worker reconnecting", "worker", c.Name, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(rand.N(bound) + time.Millisecond):
		}
	}
}

// session is one connection: enroll if needed, hello, welcome, then serve
// commands until the stream breaks. It reports how long it was up.
func (f *Fleet) session(ctx context.Context, c *Cred) (time.Duration, error) {
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", f.addr, err)
	}
	defer conn.Close()
	client := pb.NewWorkerClient(conn)
	if c.Token == "" {
		resp, err := client.Enroll(ctx, &pb.EnrollRequest{Name: c.Name, EnrollmentToken: c.Enroll, ProgramVersion: "bench", Os: runtime.GOOS, Arch: runtime.GOARCH})
		if err != nil {
			return 0, fmt.Errorf("enroll %s: %w", c.Name, err)
		}
		c.Token = resp.GetToken()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(sctx)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	hello := &pb.Hello{
		Name: c.Name, Token: c.Token, ProtocolVersion: pb.ProtocolVersion, ProgramVersion: "bench",
		Os: runtime.GOOS, Arch: runtime.GOARCH, Availability: "eager", MaxBuilds: 1,
		Facts: map[string]*pb.FactValues{"os": {Values: []string{runtime.GOOS}}, "arch": {Values: []string{runtime.GOARCH}}},
	}
	if err := stream.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Hello{Hello: hello}}); err != nil {
		return 0, fmt.Errorf("send hello: %w", err)
	}
	m, err := stream.Recv()
	if err != nil {
		return 0, fmt.Errorf("await welcome: %w", err)
	}
	if m.GetWelcome() == nil {
		return 0, errors.New("first message is not a welcome")
	}
	since := time.Now()
	f.setConnected(1)
	defer f.setConnected(-1)

	// One writer at a time on the stream; commands send from their own
	// goroutines, which this session owns and waits for.
	var sendMu sync.Mutex
	send := func(m *pb.WorkerMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	var cmds sync.WaitGroup
	defer cmds.Wait()
	defer cancel()
	var cancelMu sync.Mutex
	cancels := map[string]chan struct{}{}
	for {
		m, err := stream.Recv()
		if err != nil {
			return time.Since(since), err
		}
		switch msg := m.GetMsg().(type) {
		case *pb.MasterMessage_Run:
			run := msg.Run
			if f.beh.OnRun != nil {
				f.beh.OnRun(c.Name, run, time.Now())
			}
			stop := make(chan struct{})
			cancelMu.Lock()
			cancels[run.GetCommandId()] = stop
			cancelMu.Unlock()
			cmds.Go(func() {
				f.execute(sctx, run, stop, send)
				cancelMu.Lock()
				delete(cancels, run.GetCommandId())
				cancelMu.Unlock()
			})
		case *pb.MasterMessage_Cancel:
			cancelMu.Lock()
			if ch, ok := cancels[msg.Cancel.GetCommandId()]; ok {
				close(ch)
				delete(cancels, msg.Cancel.GetCommandId())
			}
			cancelMu.Unlock()
		case *pb.MasterMessage_Ack:
			if msg.Ack.GetFinished() && f.beh.OnDone != nil {
				f.beh.OnDone(c.Name, msg.Ack.GetCommandId())
			}
		}
	}
}

// execute answers one command: output, then Finished. A held command
// waits for release or a cancel first.
func (f *Fleet) execute(ctx context.Context, run *pb.RunCommand, stop <-chan struct{}, send func(*pb.WorkerMessage) error) {
	start := time.Now()
	id := run.GetCommandId()
	fin := &pb.Finished{CommandId: id, Reason: pb.FinishReason_FINISH_REASON_EXITED}
	if f.beh.Hold {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			fin.Reason, fin.ExitCode, fin.Error = pb.FinishReason_FINISH_REASON_CANCELLED, -1, "cancelled"
		case <-f.release:
		}
	}
	var seq uint64
	for i := 0; i < f.beh.Ticks; i++ {
		seq++
		line := fmt.Appendf(nil, "tick %d\n", time.Now().UnixNano())
		out := &pb.Output{CommandId: id, Seq: seq, Stream: pb.Stream_STREAM_STDOUT, Data: line}
		if err := send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: out}}); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(f.beh.TickEvery):
		}
	}
	remaining := f.beh.OutputBytes
	if f.beh.Ticks > 0 {
		remaining = 0
		fin.LastSeq = seq
		fin.DurationMs = time.Since(start).Milliseconds()
		_ = send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Finished{Finished: fin}})
		return
	}
	if remaining <= 0 {
		remaining = 3
	}
	for remaining > 0 && fin.Reason == pb.FinishReason_FINISH_REASON_EXITED {
		n := int(min(int64(len(f.payload)), remaining))
		seq++
		out := &pb.Output{CommandId: id, Seq: seq, Stream: pb.Stream_STREAM_STDOUT, Data: f.payload[:n]}
		if err := send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: out}}); err != nil {
			return // the session is gone; the master's grace period decides
		}
		remaining -= int64(n)
	}
	fin.LastSeq = seq
	fin.DurationMs = time.Since(start).Milliseconds()
	_ = send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Finished{Finished: fin}})
}
