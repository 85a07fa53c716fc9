package master

import (
	"context"
	"fmt"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// collapsible picks, among pending requests, those a newer one replaces:
// requests made by a scheduler (they carry changes) for a builder that
// collapses, with the same repository and branch; the newest wins. It
// returns the requests to drop and, for each, the one that replaces it.
func collapsible(pending []drover.BuildRequest, builders map[string]*drover.Builder) map[int64]int64 {
	type key struct{ builder, repo, branch string }
	newest := map[key]drover.BuildRequest{}
	isNewer := func(a, b drover.BuildRequest) bool {
		if !a.Submitted.Equal(b.Submitted) {
			return a.Submitted.After(b.Submitted)
		}
		return a.ID > b.ID
	}
	eligible := func(r drover.BuildRequest) bool {
		b, ok := builders[r.Builder]
		return ok && b.Collapse && len(r.ChangeIDs) > 0 && r.Tries == 0
	}
	for _, r := range pending {
		if !eligible(r) {
			continue
		}
		k := key{r.Builder, r.Source.Repository, r.Source.Branch}
		if cur, ok := newest[k]; !ok || isNewer(r, cur) {
			newest[k] = r
		}
	}
	out := map[int64]int64{}
	for _, r := range pending {
		if !eligible(r) {
			continue
		}
		if n := newest[key{r.Builder, r.Source.Repository, r.Source.Branch}]; n.ID != r.ID {
			out[r.ID] = n.ID
		}
	}
	return out
}

// collapse cancels the requests a newer one replaces and returns the
// pending list without them.
func (m *Master) collapse(ctx context.Context, pending []drover.BuildRequest, builders map[string]*drover.Builder) []drover.BuildRequest {
	drop := collapsible(pending, builders)
	if len(drop) == 0 {
		return pending
	}
	kept := pending[:0:0]
	for _, r := range pending {
		into, ok := drop[r.ID]
		if !ok {
			kept = append(kept, r)
			continue
		}
		err := m.store.CancelRequest(ctx, r.ID, fmt.Sprintf("collapsed into request %d, which builds newer changes", into))
		if err != nil {
			if drover.KindOf(err) != drover.Conflict {
				m.logger.Error("collapse request", "request", r.ID, "err", err)
			}
			continue
		}
		m.logger.Info("request collapsed", "request", r.ID, "into", into, "builder", r.Builder)
		m.bus.Publish(events.Event{Type: events.RequestChanged, Builder: r.Builder, Request: r.ID})
	}
	return kept
}
