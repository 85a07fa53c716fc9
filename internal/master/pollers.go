package master

import (
	"context"
	"fmt"
	"log/slog"
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
	dir    string // the pollers' mirrors
	logger *slog.Logger
	report func(ctx context.Context, cs []*drover.Change)
	ctx    context.Context

	mu      sync.Mutex
	sources []drover.GitSource
	leader  bool
	running map[string]*runningPoller // by pollerKey
	wg      sync.WaitGroup
}

type runningPoller struct {
	src    drover.GitSource
	cancel context.CancelFunc
	done   chan struct{} // closed when the poller has stopped
}

// mirrorKey names the mirror a poller of src works in: two pollers of one
// mirror must never run at once (a reload that changes a source's
// branches replaces its poller with one on the same mirror).
func mirrorKey(src drover.GitSource) string { return src.Name + "\x00" + src.URL }

// pollerKey identifies a poller's definition: any change restarts it.
func pollerKey(src drover.GitSource) string {
	branches := slices.Clone(src.Branches)
	slices.Sort(branches)
	return fmt.Sprintf("%s\x00%s\x00%v\x00%s", src.Name, src.URL, branches, src.Poll)
}

// newPollers makes the pollers part; start runs it.
func newPollers(dir string, logger *slog.Logger, leader bool) *pollers {
	return &pollers{dir: dir, logger: logger, leader: leader, running: map[string]*runningPoller{}}
}

// run starts the pollers for sources under ctx and, once ctx ends, waits
// for every one to stop.
func (ps *pollers) run(ctx context.Context, sources []drover.GitSource) {
	ps.mu.Lock()
	ps.ctx = ctx
	ps.mu.Unlock()
	ps.apply(sources)
	<-ctx.Done()
	// An apply that saw ctx alive has added its pollers by the time it
	// lets go of mu: they are all counted before the wait.
	ps.mu.Lock()
	ps.mu.Unlock()
	ps.wg.Wait()
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
		ps.logger.Info("site lead changed", "polling", leader)
	}
	ps.leader = leader
	ps.syncLocked()
}

func (ps *pollers) syncLocked() {
	if ps.ctx == nil || ps.ctx.Err() != nil {
		return // not running yet (run applies the sources), or stopped
	}
	want := map[string]drover.GitSource{}
	for _, src := range ps.sources {
		if src.Poll > 0 && ps.leader {
			want[pollerKey(src)] = src
		}
	}
	stopping := map[string]chan struct{}{} // by mirror
	for key, p := range ps.running {
		if _, ok := want[key]; !ok {
			p.cancel()
			stopping[mirrorKey(p.src)] = p.done
			delete(ps.running, key)
		}
	}
	for key, src := range want {
		if _, ok := ps.running[key]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(ps.ctx)
		p := &runningPoller{cancel: cancel, done: make(chan struct{}), src: src}
		ps.running[key] = p
		prev := stopping[mirrorKey(src)]
		gp := changes.NewGitPoller(src, ps.dir, ps.logger)
		ps.wg.Add(1)
		go func() { // owned: run waits for it
			defer ps.wg.Done()
			defer close(p.done)
			if prev != nil {
				<-prev // the poller it replaces lets go of the mirror first
			}
			gp.Run(ctx, func(cs []*drover.Change) { ps.report(ctx, cs) })
		}()
	}
}
