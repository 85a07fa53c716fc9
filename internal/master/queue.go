package master

import (
	"context"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// Queue implements api.Backend: the pending requests in the order the
// dispatcher serves them, each with the reason it gave at its last round.
func (m *Master) Queue(ctx context.Context) ([]drover.QueueEntry, error) {
	pending, err := m.store.ListRequests(ctx, store.RequestFilter{State: drover.RequestPending})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]drover.QueueEntry, len(pending))
	for i, r := range pending {
		why, ok := m.waiting[r.ID]
		if !ok {
			why = "about to be dispatched"
		}
		since := m.noWorker[r.ID]
		if !since.IsZero() {
			why += fmt.Sprintf(" (for %s)", m.now().Sub(since).Round(time.Second))
		}
		out[i] = drover.QueueEntry{Request: r, Waiting: why, NoWorkerSince: since}
	}
	return out, nil
}

// Locks implements api.Backend.
func (m *Master) Locks() []drover.LockState { return m.locks.states() }
