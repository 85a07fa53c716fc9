package workerhub

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// recorder is a Handler that remembers what it was told.
type recorder struct {
	mu           sync.Mutex
	connected    []string
	disconnected []string
}

func (r *recorder) WorkerConnected(ctx context.Context, s *Session, held []*pb.RunningCommand) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected = append(r.connected, s.Name)
	return nil
}

func (r *recorder) WorkerDisconnected(ctx context.Context, s *Session, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disconnected = append(r.disconnected, s.Name)
}

func (r *recorder) FactsChanged(ctx context.Context, s *Session) {}

type fixture struct {
	hub    *Hub
	rec    *recorder
	store  store.Store
	logs   *logstore.Dir
	bus    *events.Bus
	client pb.WorkerClient
	enroll string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with the hub's options changed by opt.
func newFixtureWith(t *testing.T, opt func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "state.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	secret, tok, err := tokens.Hasher{Cost: tokens.FastCost}.New(drover.TokenEnroll, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, &tok); err != nil {
		t.Fatal(err)
	}
	logs, err := logstore.Open(filepath.Join(t.TempDir(), "logs"), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	rec := &recorder{}
	bus := &events.Bus{}
	o := Options{Store: testStore{Store: st, BuildWriter: st.Builds("")}, Handler: rec, Logs: logs, Events: bus, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", HelloTimeout: 2 * time.Second, Tokens: tokens.Hasher{Cost: tokens.FastCost}}
	if opt != nil {
		opt(&o)
	}
	hub := New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterWorkerServer(gs, hub)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{hub: hub, rec: rec, store: st, logs: logs, bus: bus, client: pb.NewWorkerClient(conn), enroll: secret}
}

// testStore is the store as the master hands it to the hub: build
// writes carry the driver's ID (here that of builds claimed with none).
type testStore struct {
	store.Store
	store.BuildWriter
}

func (f *fixture) enrollWorker(t *testing.T, name string) string {
	t.Helper()
	resp, err := f.client.Enroll(context.Background(), &pb.EnrollRequest{Name: name, EnrollmentToken: f.enroll})
	if err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	return resp.GetToken()
}

// connect opens a stream and says hello; it returns the stream after the
// welcome.
func (f *fixture) connect(t *testing.T, name, token string) pb.Worker_ConnectClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := f.client.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.Hello{Name: name, Token: token, ProtocolVersion: pb.ProtocolVersion, Os: "linux",
		Facts: map[string]*pb.FactValues{"os": {Values: []string{"linux"}}}, Labels: map[string]string{"pool": "blue"}}
	if err := st.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	if m.GetWelcome() == nil {
		t.Fatalf("first message = %v, want welcome", m)
	}
	return st
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
}

func TestEnroll(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok := f.enrollWorker(t, "w1")
	if k, _, _, err := tokens.Parse(tok); err != nil || k != drover.TokenWorker {
		t.Fatalf("enrolled token %q: kind %s, %v", tokens.Redact(tok), k, err)
	}
	if _, err := f.store.GetWorker(ctx, "w1"); err != nil {
		t.Errorf("worker not stored: %v", err)
	}
	_, err := f.client.Enroll(ctx, &pb.EnrollRequest{Name: "w1", EnrollmentToken: f.enroll})
	wantCode(t, err, codes.AlreadyExists)
	_, err = f.client.Enroll(ctx, &pb.EnrollRequest{Name: "../etc", EnrollmentToken: f.enroll})
	wantCode(t, err, codes.InvalidArgument)
	_, err = f.client.Enroll(ctx, &pb.EnrollRequest{Name: "w2", EnrollmentToken: f.enroll + "x"})
	wantCode(t, err, codes.Unauthenticated)
	_, err = f.client.Enroll(ctx, &pb.EnrollRequest{Name: "w2", EnrollmentToken: tok})
	wantCode(t, err, codes.Unauthenticated)
	if _, err := f.store.GetWorker(ctx, "w2"); drover.KindOf(err) != drover.NotFound {
		t.Errorf("refused enrollment stored a worker: %v", err)
	}
}

func TestConnectRefusals(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	other := f.enrollWorker(t, "w2")
	tests := []struct {
		name string
		msg  *pb.WorkerMessage
		code codes.Code
	}{
		{"not a hello first", &pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: "x", Seq: 1}}}, codes.InvalidArgument},
		{"empty message", &pb.WorkerMessage{}, codes.InvalidArgument},
		{"wrong secret", hello("w1", tok+"x"), codes.Unauthenticated},
		{"another worker's token", hello("w1", other), codes.Unauthenticated},
		{"enrollment token", hello("w1", f.enroll), codes.Unauthenticated},
		{"garbage token", hello("w1", "hunter2"), codes.Unauthenticated},
		{"bad name", hello("a/b", tok), codes.InvalidArgument},
		{"old protocol", &pb.WorkerMessage{Msg: &pb.WorkerMessage_Hello{Hello: &pb.Hello{Name: "w1", Token: tok}}}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := f.client.Connect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tt.msg); err != nil {
				t.Fatal(err)
			}
			_, err = st.Recv()
			wantCode(t, err, tt.code)
		})
	}
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	if len(f.rec.connected) != 0 {
		t.Errorf("refused streams reached the handler: %v", f.rec.connected)
	}
}

// A worker secret checked once is not checked by bcrypt again for a
// while, but revoking its token still refuses the next connection at once.
func TestVerifiedTokenRevoked(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	st := f.connect(t, "w1", tok)
	_ = st.CloseSend()
	if _, ok := f.hub.verified.Get(tok, time.Now()); !ok {
		t.Fatal("a verified secret was not remembered")
	}
	_, id, _, err := tokens.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.RevokeToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	st2, err := f.client.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Send(hello("w1", tok)); err != nil {
		t.Fatal(err)
	}
	_, err = st2.Recv()
	wantCode(t, err, codes.Unauthenticated)
}

func hello(name, token string) *pb.WorkerMessage {
	return &pb.WorkerMessage{Msg: &pb.WorkerMessage_Hello{Hello: &pb.Hello{Name: name, Token: token, ProtocolVersion: pb.ProtocolVersion}}}
}

func TestSessionLifecycle(t *testing.T) {
	f := newFixture(t)
	tok1 := f.enrollWorker(t, "w1")
	tok2 := f.enrollWorker(t, "w2")
	s1 := f.connect(t, "w1", tok1)
	s2 := f.connect(t, "w2", tok2)

	sess, ok := f.hub.Session("w1")
	if !ok {
		t.Fatal("no session for w1")
	}
	if got := sess.Facts(); got.Get("os") != "linux" || got.Get("pool") != "blue" {
		t.Errorf("facts with labels = %v", got)
	}
	if sess.Protocol != pb.ProtocolVersion {
		t.Errorf("session protocol = %d, want %d", sess.Protocol, pb.ProtocolVersion)
	}
	// The master sends a command; the worker answers with output and finish.
	c := f.hub.Track(&pb.RunCommand{CommandId: "c1", Argv: []string{"true"}}, "w1", 1, 1, 0)
	if err := sess.Run(c.Run); err != nil {
		t.Fatal(err)
	}
	m, err := s1.Recv()
	if err != nil || m.GetRun().GetCommandId() != "c1" {
		t.Fatalf("recv run = %v, %v", m, err)
	}
	send := func(st pb.Worker_ConnectClient, m *pb.WorkerMessage) {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	send(s1, &pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: "c1", Seq: 1, Data: []byte("hi")}}})
	send(s1, &pb.WorkerMessage{Msg: &pb.WorkerMessage_Finished{Finished: &pb.Finished{CommandId: "c1", LastSeq: 1}}})
	select {
	case fin := <-c.Done():
		if fin.GetLastSeq() != 1 {
			t.Errorf("finished = %v", fin)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command's end never came")
	}
	if got := readLog(t, f.logs, 1); got != "hi" {
		t.Errorf("log = %q, want the output", got)
	}

	// A malformed message ends that stream only.
	send(s1, &pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: "c1"}}})
	if _, err := s1.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("after malformed output: %v", err)
	}
	// A refused message (a sequence gap) ends the stream too.
	f.hub.Track(&pb.RunCommand{CommandId: "c2"}, "w2", 2, 1, 0)
	send(s2, &pb.WorkerMessage{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: "c2", Seq: 7}}})
	if _, err := s2.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("after refused output: %v", err)
	}
	// The hub still serves: w1 reconnects, and a second connection of the
	// same worker replaces the first.
	a := f.connect(t, "w1", tok1)
	b := f.connect(t, "w1", tok1)
	if _, err := a.Recv(); err == nil {
		t.Error("replaced stream still open")
	}
	if sess, _ := f.hub.Session("w1"); sess == nil {
		t.Fatal("no session after reconnect")
	}
	_ = b
}

// readLog is the stored text of log id.
func readLog(t *testing.T, logs *logstore.Dir, id int64) string {
	t.Helper()
	if err := logs.Flush(id); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := logs.Copy(context.Background(), id, 0, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestHelloTimeout(t *testing.T) {
	f := newFixture(t)
	st, err := f.client.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantCode(t, err, codes.DeadlineExceeded)
}

// FuzzHandle feeds arbitrary bytes, decoded as a worker message, to an
// established session: the hub may refuse, never panic.
func FuzzHandle(f *testing.F) {
	for _, m := range []*pb.WorkerMessage{
		{Msg: &pb.WorkerMessage_Output{Output: &pb.Output{CommandId: "c", Seq: 1, Data: []byte("x")}}},
		{Msg: &pb.WorkerMessage_Finished{Finished: &pb.Finished{CommandId: "c", LastSeq: 3}}},
		{Msg: &pb.WorkerMessage_StepUpdate{StepUpdate: &pb.StepUpdate{CommandId: "c", Properties: map[string]string{"v": "1"}}}},
		{Msg: &pb.WorkerMessage_Facts{Facts: &pb.FactsUpdate{Availability: "draining", Facts: map[string]*pb.FactValues{"os": {Values: []string{"linux"}}}}}},
		hello("w", "t"),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	hub := New(Options{Handler: &recorder{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s := newSession(ctx, cancel, &pb.Hello{Name: "w"}, "test", time.Now())
	f.Fuzz(func(t *testing.T, data []byte) {
		var m pb.WorkerMessage
		if err := proto.Unmarshal(data, &m); err != nil {
			return // gRPC refuses undecodable messages before the hub sees them
		}
		if err := hub.handle(s, &m); err != nil && status.Code(err) == codes.Unknown {
			t.Errorf("error without a status code: %v", err)
		}
	})
}
