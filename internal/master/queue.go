package master

import (
	"context"

	"github.com/drover-ci/drover"
)

// Queue implements api.Backend.
func (m *Master) Queue(ctx context.Context) ([]drover.QueueEntry, error) {
	return nil, drover.Errorf(drover.Unavailable, "queue explanations are being built")
}

// Locks implements api.Backend.
func (m *Master) Locks() []drover.LockState { return nil }
