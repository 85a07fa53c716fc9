package master

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
)

// batch collects the changes one scheduler has seen on one branch while it
// waits for the tree to be stable.
type batch struct {
	sched   string
	branch  string
	changes []*drover.Change
	due     time.Time
}

// schedulerLoop turns changes into build requests: each scheduler whose
// source and branch match a change waits tree_stable after the last one,
// then requests one build per builder of the newest revision.
func (m *Master) schedulerLoop(ctx context.Context) {
	pending := map[string]*batch{} // by scheduler + branch
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var next time.Time
		for _, b := range pending {
			if next.IsZero() || b.due.Before(next) {
				next = b.due
			}
		}
		if !next.IsZero() {
			timer.Reset(max(0, next.Sub(m.now())))
		}
		select {
		case <-ctx.Done():
			return
		case cs := <-m.changes:
			cfg := m.config()
			for i := range cfg.Schedulers {
				sch := &cfg.Schedulers[i]
				for _, c := range cs {
					if !matches(sch, c) {
						continue
					}
					key := sch.Name + "\x00" + c.Branch
					b := pending[key]
					if b == nil {
						b = &batch{sched: sch.Name, branch: c.Branch}
						pending[key] = b
					}
					b.changes = append(b.changes, c)
					b.due = m.now().Add(sch.TreeStable)
				}
			}
		case <-timer.C:
		}
		timer.Stop()
		now := m.now()
		for key, b := range pending {
			if b.due.After(now) {
				continue
			}
			delete(pending, key)
			if err := m.requestBuilds(ctx, b); err != nil && ctx.Err() == nil {
				m.logger.Error("scheduler", "scheduler", b.sched, "err", err)
			}
		}
	}
}

func matches(sch *config.Scheduler, c *drover.Change) bool {
	if c.Repository != sch.Repository && c.Repository != sch.Source {
		return false
	}
	return sch.Branch == "" || sch.Branch == c.Branch
}

func (m *Master) requestBuilds(ctx context.Context, b *batch) error {
	cfg := m.config()
	var sch *config.Scheduler
	for i := range cfg.Schedulers {
		if cfg.Schedulers[i].Name == b.sched {
			sch = &cfg.Schedulers[i]
		}
	}
	if sch == nil {
		return nil // removed by a reload meanwhile
	}
	sort.Slice(b.changes, func(i, j int) bool { return b.changes[i].ID < b.changes[j].ID })
	newest := b.changes[len(b.changes)-1]
	ids := make([]int64, len(b.changes))
	authors := map[string]bool{}
	var who []string
	for i, c := range b.changes {
		ids[i] = c.ID
		if c.Author != "" && !authors[c.Author] {
			authors[c.Author] = true
			who = append(who, c.Author)
		}
	}
	reason := fmt.Sprintf("scheduler %s: %d change(s) on %s", sch.Name, len(b.changes), b.branch)
	if len(who) > 0 {
		reason += " by " + strings.Join(who, ", ")
	}
	var reqs []*drover.BuildRequest
	for _, name := range sch.Builders {
		builder, ok := m.Builder(name)
		if !ok {
			continue
		}
		reqs = append(reqs, &drover.BuildRequest{
			Builder:    name,
			Source:     drover.SourceStamp{Repository: sch.Repository, Branch: newest.Branch, Revision: newest.Revision},
			Properties: drover.Properties{"scheduler": sch.Name},
			Priority:   builder.Priority,
			Reason:     reason,
			ChangeIDs:  ids,
		})
	}
	if len(reqs) == 0 {
		return nil
	}
	if err := m.store.AddRequests(ctx, reqs); err != nil {
		return fmt.Errorf("add requests: %w", err)
	}
	for _, r := range reqs {
		m.bus.Publish(events.Event{Type: events.RequestAdded, Builder: r.Builder, Request: r.ID})
	}
	m.logger.Info("builds requested", "scheduler", sch.Name, "branch", b.branch, "revision", newest.Revision, "builders", len(reqs))
	m.kick()
	return nil
}
