package workerhub

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/drover-ci/drover/internal/workerproto"
)

// TestStepUpdateWithoutCommand shows that a step update naming no command
// is a protocol violation: the stream is closed and the handler never
// sees it.
func TestStepUpdateWithoutCommand(t *testing.T) {
	f := newFixture(t)
	tok := f.enrollWorker(t, "w1")
	st := f.connect(t, "w1", tok)
	if err := st.Send(&pb.WorkerMessage{Msg: &pb.WorkerMessage_StepUpdate{StepUpdate: &pb.StepUpdate{Urls: map[string]string{"a": "https://example.org/"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("after a step update without command id: %v, want InvalidArgument", err)
	}
}
