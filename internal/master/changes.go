package master

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
)

// changesStore is what the changes part keeps in the store.
type changesStore interface {
	AddChange(ctx context.Context, c *drover.Change) error
	AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error
}

// changesIn turns changes into build requests: it stores the changes that
// pollers and `drover sendchange` report, and runs the schedulers over
// them. It also queues forced builds.
type changesIn struct {
	store   changesStore
	cfg     func() *config.Config
	bus     *events.Bus
	kick    func()
	now     func() time.Time
	logger  *slog.Logger
	changes chan []*drover.Change // to the scheduler loop
}

// changesBuffer bounds the batches of changes waiting for the scheduler
// loop; a poller or a sendchange beyond it waits its turn.
const changesBuffer = 64

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
func (ci *changesIn) loop(ctx context.Context) {
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
			timer.Reset(max(0, next.Sub(ci.now())))
		}
		select {
		case <-ctx.Done():
			return
		case cs := <-ci.changes:
			cfg := ci.cfg()
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
					b.due = ci.now().Add(sch.TreeStable)
				}
			}
		case <-timer.C:
		}
		timer.Stop()
		now := ci.now()
		for key, b := range pending {
			if b.due.After(now) {
				continue
			}
			delete(pending, key)
			if err := ci.requestBuilds(ctx, b); err != nil && ctx.Err() == nil {
				ci.logger.Error("scheduler", "scheduler", b.sched, "err", err)
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

func (ci *changesIn) requestBuilds(ctx context.Context, b *batch) error {
	cfg := ci.cfg()
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
		builder, ok := cfg.Builder(name)
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
	if err := ci.store.AddRequests(ctx, reqs); err != nil {
		return fmt.Errorf("add requests: %w", err)
	}
	for _, r := range reqs {
		ci.bus.Publish(events.Event{Type: events.RequestAdded, Builder: r.Builder, Request: r.ID})
	}
	ci.logger.Info("builds requested", "scheduler", sch.Name, "branch", b.branch, "revision", newest.Revision, "builders", len(reqs))
	ci.kick()
	return nil
}

// addChange stores a change from `drover sendchange` (or the API) and
// hands it to the schedulers.
func (ci *changesIn) addChange(ctx context.Context, c *drover.Change) error {
	if c.Repository == "" || c.Branch == "" || c.Revision == "" {
		return drover.Errorf(drover.Invalid, "a change needs a repository, a branch and a revision")
	}
	if c.When.IsZero() {
		c.When = ci.now()
	}
	if err := ci.store.AddChange(ctx, c); err != nil {
		return fmt.Errorf("add change: %w", err)
	}
	ci.bus.Publish(events.Event{Type: events.ChangeAdded})
	select {
	case ci.changes <- []*drover.Change{c}:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// polled stores changes from a poller and hands them to the schedulers.
func (ci *changesIn) polled(ctx context.Context, cs []*drover.Change) {
	var stored []*drover.Change
	for _, c := range cs {
		if err := ci.store.AddChange(ctx, c); err != nil {
			ci.logger.Error("store change", "repository", c.Repository, "revision", c.Revision, "err", err)
			continue
		}
		stored = append(stored, c)
	}
	if len(stored) == 0 {
		return
	}
	ci.bus.Publish(events.Event{Type: events.ChangeAdded})
	select {
	case ci.changes <- stored:
	case <-ctx.Done():
	}
}

// force queues a build request for a builder.
func (ci *changesIn) force(ctx context.Context, req *drover.BuildRequest) error {
	b, ok := ci.cfg().Builder(req.Builder)
	if !ok {
		return drover.Errorf(drover.NotFound, "no builder named %q", req.Builder)
	}
	if req.Source.Repository == "" {
		if src := firstSource(b); src != nil {
			req.Source.Repository = src.URL
			if req.Source.Branch == "" && req.Source.Revision == "" && len(src.Branches) > 0 {
				req.Source.Branch = src.Branches[0]
			}
		}
	}
	if req.Priority == 0 {
		req.Priority = b.Priority
	}
	if req.Reason == "" {
		req.Reason = "forced"
	}
	if err := ci.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		return fmt.Errorf("force %s: %w", req.Builder, err)
	}
	ci.logger.Info("build forced", "builder", req.Builder, "request", req.ID, "reason", req.Reason)
	ci.bus.Publish(events.Event{Type: events.RequestAdded, Builder: req.Builder, Request: req.ID})
	ci.kick()
	return nil
}

func firstSource(b *drover.Builder) *drover.GitSource {
	for _, s := range b.Steps {
		if s.Kind == drover.StepCheckout && s.Source != nil {
			return s.Source
		}
	}
	return nil
}
