package master

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/workerhub"
)

// The master tells the workerhub whether enrolling workers need approval.
var _ workerhub.ApprovalPolicy = (*Master)(nil)

// RequireApproval implements workerhub.ApprovalPolicy from the config in
// force, so that a reload switching approve_workers applies to the next
// enrollment.
func (m *Master) RequireApproval() bool { return m.config().Master.ApproveWorkers }

// SetApproval implements api.Backend. Approving needs nothing more: the
// worker retries its connection with backoff and is let in at its next
// attempt. A worker that is no longer approved loses its live session, so
// that it takes no new build; it is refused when it dials again.
func (m *Master) SetApproval(ctx context.Context, worker, approval, by string) error {
	if err := m.store.SetApproval(ctx, worker, approval, by, m.now()); err != nil {
		return fmt.Errorf("set approval of worker %s: %w", worker, err)
	}
	m.logger.Info("worker approval set", "worker", worker, "approval", approval, "by", by)
	var refusal error
	switch approval {
	case drover.ApprovalRejected:
		refusal = status.Errorf(codes.PermissionDenied, "worker %s was rejected", worker)
	case drover.ApprovalPending:
		refusal = status.Errorf(codes.FailedPrecondition, "worker %s is awaiting approval by an admin", worker)
	}
	if refusal != nil && m.hub.Disconnect(worker, refusal) {
		m.logger.Info("worker disconnected: no longer approved", "worker", worker, "approval", approval)
	}
	m.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	return nil
}
