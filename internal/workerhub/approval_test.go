package workerhub

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// syncBuffer is a log destination the hub's goroutines may share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// approvalFixture is a hub whose approval requirement the test switches,
// with its log captured.
func approvalFixture(t *testing.T, required bool) (*fixture, *atomic.Bool, *syncBuffer) {
	t.Helper()
	var req atomic.Bool
	req.Store(required)
	logs := &syncBuffer{}
	f := newFixtureWith(t, func(o *Options) {
		o.RequireApproval = req.Load
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	return f, &req, logs
}

// dial says hello as worker name and returns the status of the master's
// first answer: OK for a welcome.
func (f *fixture) dial(t *testing.T, name, token string) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.client.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(hello(name, token)); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		return status.Convert(err)
	}
	if m.GetWelcome() == nil {
		t.Fatalf("first message = %v, want welcome", m)
	}
	return status.New(codes.OK, "")
}

func (f *fixture) approval(t *testing.T, name string) string {
	t.Helper()
	w, err := f.store.GetWorker(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return w.Approval
}

func TestApprovalRequired(t *testing.T) {
	t.Parallel()
	f, _, logs := approvalFixture(t, true)
	ctx := context.Background()
	tok := f.enrollWorker(t, "w1")
	if got := f.approval(t, "w1"); got != drover.ApprovalPending {
		t.Fatalf("worker enrolled under approval is %q, want pending", got)
	}

	st := f.dial(t, "w1", tok)
	if st.Code() != codes.FailedPrecondition || st.Message() != "worker w1 is awaiting approval by an admin" {
		t.Fatalf("pending worker's connect: %v, want FailedPrecondition awaiting approval", st.Err())
	}
	if n := strings.Count(logs.String(), "awaiting approval"); n != 1 {
		t.Errorf("one refused connection logged %d times:\n%s", n, logs)
	}
	// The name stays taken while the worker waits.
	_, err := f.client.Enroll(ctx, &pb.EnrollRequest{Name: "w1", EnrollmentToken: f.enroll})
	wantCode(t, err, codes.AlreadyExists)

	if err := f.store.SetApproval(ctx, "w1", drover.ApprovalApproved, "admin", time.Now()); err != nil {
		t.Fatal(err)
	}
	if st := f.dial(t, "w1", tok); st.Code() != codes.OK {
		t.Fatalf("approved worker's connect: %v", st.Err())
	}
	waitFor(t, func() bool { _, ok := f.hub.Session("w1"); return ok }, "approved worker's session")
	f.rec.mu.Lock()
	connected := append([]string(nil), f.rec.connected...)
	f.rec.mu.Unlock()
	if len(connected) != 1 || connected[0] != "w1" {
		t.Fatalf("handler saw connections %v, want only the approved one", connected)
	}
}

func TestApprovalRejected(t *testing.T) {
	t.Parallel()
	f, _, logs := approvalFixture(t, true)
	tok := f.enrollWorker(t, "w1")
	if err := f.store.SetApproval(context.Background(), "w1", drover.ApprovalRejected, "admin", time.Now()); err != nil {
		t.Fatal(err)
	}
	st := f.dial(t, "w1", tok)
	if st.Code() != codes.PermissionDenied || st.Message() != "worker w1 was rejected" {
		t.Fatalf("rejected worker's connect: %v, want PermissionDenied", st.Err())
	}
	if !strings.Contains(logs.String(), "rejected by an admin") {
		t.Errorf("refusal of a rejected worker not logged:\n%s", logs)
	}
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	if len(f.rec.connected) != 0 {
		t.Fatalf("a rejected worker reached the handler: %v", f.rec.connected)
	}
}

// TestApprovalNotRequired shows that without approval, and for workers
// enrolled before approval was switched on, nothing changes; and that a
// worker enrolled while it was on stays pending when it is switched off:
// nobody vetted that machine.
func TestApprovalNotRequired(t *testing.T) {
	t.Parallel()
	f, required, _ := approvalFixture(t, false)
	tok := f.enrollWorker(t, "open-1")
	if got := f.approval(t, "open-1"); got != drover.ApprovalApproved {
		t.Fatalf("worker enrolled without approval is %q, want approved", got)
	}
	if st := f.dial(t, "open-1", tok); st.Code() != codes.OK {
		t.Fatalf("connect: %v", st.Err())
	}

	required.Store(true)
	held := f.enrollWorker(t, "held-1")
	required.Store(false)
	if st := f.dial(t, "held-1", held); st.Code() != codes.FailedPrecondition {
		t.Fatalf("worker enrolled under approval, after it was switched off: %v, want still pending", st.Err())
	}
}

// TestApprovalPolicyFromHandler shows that a Handler implementing
// ApprovalPolicy decides when no RequireApproval option is given.
func TestApprovalPolicyFromHandler(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(o *Options) { o.Handler = &approvingRecorder{} })
	f.enrollWorker(t, "w1")
	if got := f.approval(t, "w1"); got != drover.ApprovalPending {
		t.Fatalf("worker enrolled with a handler requiring approval is %q, want pending", got)
	}
}

type approvingRecorder struct{ recorder }

func (*approvingRecorder) RequireApproval() bool { return true }

func TestDisconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	stream := f.connect(t, "w1", tok)
	if !f.hub.Disconnect("w1", status.Error(codes.PermissionDenied, "worker w1 was rejected")) {
		t.Fatal("Disconnect found no session")
	}
	for {
		_, err := stream.Recv()
		if err != nil {
			wantCode(t, err, codes.PermissionDenied)
			break
		}
	}
	waitFor(t, func() bool { _, ok := f.hub.Session("w1"); return !ok }, "session removed")
	if f.hub.Disconnect("w1", nil) {
		t.Fatal("Disconnect of a gone worker reported a session")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
