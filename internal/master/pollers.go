package master

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/changes"
)

// pollers runs one git poller per polled source and follows reloads: a
// source whose definition did not change keeps its poller (and so its
// memory of what it has seen); new ones start, removed ones stop.
//
// In a site only one master polls, its leader (the live master with the
// lowest ID), or every change would be reported once per master. The
// pollers' mirrors live in the shared directory, so a new leader goes on
// from what the previous one had seen.
type pollers struct {
	m   *Master
	ctx context.Context

	mu      sync.Mutex
	sources []drover.GitSource
	leader  bool
	running map[string]*runningPoller // by pollerKey
	wg      sync.WaitGroup
}

type runningPoller struct {
	cancel context.CancelFunc
}

// pollerKey identifies a poller's definition: any change restarts it.
func pollerKey(src drover.GitSource) string {
	branches := slices.Clone(src.Branches)
	slices.Sort(branches)
	return fmt.Sprintf("%s\x00%s\x00%v\x00%s", src.Name, src.URL, branches, src.Poll)
}

func newPollers(ctx context.Context, m *Master, leader bool) *pollers {
	return &pollers{m: m, ctx: ctx, leader: leader, running: map[string]*runningPoller{}}
}

// apply makes the running pollers match sources (while this master leads).
func (ps *pollers) apply(sources []drover.GitSource) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.sources = sources
	ps.syncLocked()
}

// setLeader starts or stops polling as this master gains or loses the
// site's lead.
func (ps *pollers) setLeader(leader bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if leader != ps.leader {
		ps.m.logger.Info("site lead changed", "polling", leader)
	}
	ps.leader = leader
	ps.syncLocked()
}

func (ps *pollers) syncLocked() {
	if ps.ctx.Err() != nil {
		return
	}
	want := map[string]drover.GitSource{}
	for _, src := range ps.sources {
		if src.Poll > 0 && ps.leader {
			want[pollerKey(src)] = src
		}
	}
	for key, p := range ps.running {
		if _, ok := want[key]; !ok {
			p.cancel()
			delete(ps.running, key)
		}
	}
	for key, src := range want {
		if _, ok := ps.running[key]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(ps.ctx)
		ps.running[key] = &runningPoller{cancel: cancel}
		gp := changes.NewGitPoller(src, filepath.Join(ps.m.data, "pollers"), ps.m.base)
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			gp.Run(ctx, func(cs []*drover.Change) { ps.m.addChanges(ctx, cs) })
		}()
	}
}

// wait waits for every poller to stop (after the context ends).
func (ps *pollers) wait() { ps.wg.Wait() }
