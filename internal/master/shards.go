package master

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// Properties that make a build request one part of a sharded step.
const (
	propShardParent = "shard_parent" // the build whose step is sharded
	propShardStep   = "shard_step"   // that step's index
	propShardIndex  = "shard_index"  // this part, from 0
	propShardCount  = "shard_count"
	propShardName   = "shard_name" // the battery, for named shards
)

// shardSafetyPoll bounds how long a sharded step can miss a part's end if
// an event was lost (a lagging subscription is told, so this is a backstop).
const shardSafetyPoll = 10 * time.Second

// shardGroup names the parts of one sharded step, for dispatch: a worker
// runs at most one part of a group at a time.
func shardGroup(parent int64, step int) string { return fmt.Sprintf("b%d-s%d", parent, step) }

// requestGroup is the shard group of a request, or "".
func requestGroup(props drover.Properties) string {
	parent, err1 := strconv.ParseInt(props[propShardParent], 10, 64)
	step, err2 := strconv.Atoi(props[propShardStep])
	if err1 != nil || err2 != nil {
		return ""
	}
	return shardGroup(parent, step)
}

// shardEnv is what a part's command is told.
func shardEnv(index, count int, name string) map[string]string {
	env := map[string]string{"DROVER_SHARD_INDEX": strconv.Itoa(index), "DROVER_SHARD_COUNT": strconv.Itoa(count)}
	if name != "" {
		env["DROVER_SHARD_NAME"] = name
	}
	return env
}

// initShard recognises a build that is a part of another's sharded step.
func (br *buildRun) initShard(props drover.Properties) {
	parent, step, ok := shardOf(props, len(br.builder.Steps))
	if !ok {
		if props[propShardParent] != "" && parent != 0 {
			br.r.logger.Warn("ignoring malformed shard properties", "build", br.build.ID)
		}
		return
	}
	index, _ := strconv.Atoi(props[propShardIndex])
	count, _ := strconv.Atoi(props[propShardCount])
	br.shardOf, br.shardStep = parent, step
	br.shardEnv = shardEnv(index, count, props[propShardName])
	br.setGroup(shardGroup(parent, step))
}

// shardOf reads the shard properties of a build of a builder with steps
// steps: the parent build and the step it runs a part of, and whether they
// are well formed (false, with parent 0, for a build that is no part).
func shardOf(props drover.Properties, steps int) (parent int64, step int, ok bool) {
	parent, err := strconv.ParseInt(props[propShardParent], 10, 64)
	if err != nil || parent == 0 {
		return 0, 0, false
	}
	step, err1 := strconv.Atoi(props[propShardStep])
	_, err2 := strconv.Atoi(props[propShardIndex])
	_, err3 := strconv.Atoi(props[propShardCount])
	if err1 != nil || err2 != nil || err3 != nil || step < 0 || step >= steps {
		return parent, 0, false
	}
	return parent, step, true
}

// runShardedStep runs a step as parallel parts: part 0 on this build's
// worker, the others as builds of their own, queued for other workers (at
// most one part of the step per worker at a time; with fewer workers,
// parts wait). The step's result is the worst of the parts'.
func (br *buildRun) runShardedStep(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts) (drover.Result, string, drover.Properties) {
	r := br.r
	b := &br.build
	n := spec.ShardCount()
	name := func(i int) string {
		if i < len(spec.ShardNames) {
			return spec.ShardNames[i]
		}
		return ""
	}
	group := shardGroup(b.ID, st.Index)
	br.setGroup(group)
	defer br.setGroup("")

	st.Parts = make([]drover.StepPart, n)
	st.Parts[0] = drover.StepPart{Index: 0, Name: name(0), BuildID: b.ID, Worker: b.Worker}

	// The parts build what this build checked out, not a newer head.
	rev := props["got_revision"]
	if rev == "" {
		rev = b.Source.Revision
	}
	priority := 0
	var base drover.Properties
	if err := br.read(func(ctx context.Context) error {
		req, err := r.store.GetRequest(ctx, b.RequestID)
		if err == nil {
			priority, base = req.Priority, req.Properties
		}
		return err
	}); err != nil {
		r.logger.Warn("read the request of a sharded build; its parts get no priority of it", "build", b.ID, "err", err)
	}
	var reqs []*drover.BuildRequest
	for i := 1; i < n; i++ {
		p := base.Clone()
		if p == nil {
			p = drover.Properties{}
		}
		p[propShardParent] = strconv.FormatInt(b.ID, 10)
		p[propShardStep] = strconv.Itoa(st.Index)
		p[propShardIndex] = strconv.Itoa(i)
		p[propShardCount] = strconv.Itoa(n)
		if name(i) != "" {
			p[propShardName] = name(i)
		}
		reqs = append(reqs, &drover.BuildRequest{
			Builder: b.Builder, Source: drover.SourceStamp{Repository: b.Source.Repository, Branch: b.Source.Branch, Revision: rev},
			Properties: p, Priority: priority + 1, // parts of a started build go before new work
			Reason: fmt.Sprintf("part %d of %d of %s #%d, step %s", i+1, n, b.Builder, b.Number, spec.Name),
		})
	}
	if err := br.read(func(ctx context.Context) error { return r.store.AddRequests(ctx, reqs) }); err != nil {
		r.logger.Error("queue the parts of a sharded step; running it whole here", "build", b.ID, "step", spec.Name, "err", err)
		st.Parts = nil
		return br.runCommandStep(st, spec, props, facts, nil, false)
	}
	for i, req := range reqs {
		st.Parts[i+1] = drover.StepPart{Index: i + 1, Name: name(i + 1), Request: req.ID}
		r.bus.Publish(events.Event{Type: events.RequestAdded, Builder: req.Builder, Request: req.ID})
	}
	r.logger.Info("sharded step", "build", b.ID, "step", spec.Name, "parts", n)
	r.kick()

	// Part 0, here.
	res0, sum0, newProps := br.runCommandStep(st, spec, props, facts, shardEnv(0, n, name(0)), true)
	if br.letGo() {
		return drover.Retry, "this master let go of the build", nil
	}
	st.Parts[0].Result = res0
	br.storeStep(st)

	// The others, as they end.
	sub := r.bus.Subscribe()
	defer sub.Close()
	tick := time.NewTicker(shardSafetyPoll)
	defer tick.Stop()
	stop := br.ctx.Done()
	var giveUp <-chan time.Time
	for !br.partsDone(st) {
		select {
		case <-sub.C:
		case <-tick.C:
		case <-stop:
			if errors.Is(context.Cause(br.ctx), errLetGo) {
				// The parts are left running like this build; the next
				// driver gives the step up and runs the build anew.
				br.abandoned = true
				return drover.Retry, "this master let go of the build", nil
			}
			// Stopped: stop the parts too, and wait a little for them to
			// say so.
			stop = nil
			br.cancelParts(st, context.Cause(br.ctx).Error())
			t := time.NewTimer(cancelWait)
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			for i := range st.Parts {
				if st.Parts[i].Result == "" {
					st.Parts[i].Result = drover.Cancelled
				}
			}
		}
	}

	result := drover.Success
	var bad []string
	for _, p := range st.Parts {
		result = drover.Worst(result, p.Result)
		if !p.Result.IsGood() {
			label := fmt.Sprintf("part %d", p.Index+1)
			if p.Name != "" {
				label = p.Name
			}
			bad = append(bad, fmt.Sprintf("%s %s on %s", label, p.Result, p.Worker))
		}
	}
	summary := fmt.Sprintf("%d parts passed", n)
	if len(bad) > 0 {
		summary = fmt.Sprintf("%d of %d parts passed; %s", n-len(bad), n, strings.Join(bad, ", "))
	}
	if res0 == drover.Cancelled || res0 == drover.Retry {
		summary = sum0
	}
	st.State, st.Result, st.Summary, st.Finished = drover.StepFinished, result, summary, r.now()
	br.storeStep(st)
	r.bus.Publish(events.Event{Type: events.StepFinished, Builder: b.Builder, BuildID: b.ID, Step: st.Index, Result: string(result)})
	return result, summary, newProps
}

// read runs a store read (or a queue write) for the build, bounded by
// storeTimeout and detached from the build's cancellation.
func (br *buildRun) read(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(br.ctx), storeTimeout)
	defer cancel()
	return f(ctx)
}

func (br *buildRun) storeStep(st *drover.Step) {
	_ = br.write("step", func(ctx context.Context) error { return br.r.writes.UpdateStep(ctx, st) })
	br.r.bus.Publish(events.Event{Type: events.StepStarted, Builder: br.build.Builder, BuildID: br.build.ID, Step: st.Index})
}

// partsDone reads the other parts' state and reports whether all ended.
// A part whose build ended retry is queued again and still counts as
// running; a part that cannot be read is looked at again at the next
// wake-up.
func (br *buildRun) partsDone(st *drover.Step) bool {
	r := br.r
	done, changed := true, false
	for i := 1; i < len(st.Parts); i++ {
		p := &st.Parts[i]
		if p.Result != "" {
			continue
		}
		var req *drover.BuildRequest
		var builds []drover.Build
		err := br.read(func(ctx context.Context) error {
			var err error
			if req, err = r.store.GetRequest(ctx, p.Request); err != nil {
				return err
			}
			builds, err = r.store.ListBuilds(ctx, drover.BuildFilter{RequestID: p.Request, Limit: 1})
			return err
		})
		switch {
		case drover.KindOf(err) == drover.NotFound:
			r.logger.Error("a shard part's request is gone", "request", p.Request, "err", err)
			p.Result, changed = drover.Exception, true
			continue
		case err != nil:
			r.logger.Warn("read shard part", "request", p.Request, "err", err)
			done = false
			continue
		}
		if len(builds) > 0 && (p.BuildID != builds[0].ID || p.Worker != builds[0].Worker) {
			p.BuildID, p.Worker, changed = builds[0].ID, builds[0].Worker, true
		}
		switch req.State {
		case drover.RequestFinished, drover.RequestCancelled:
			p.Result = req.Result
			if p.Result == "" {
				p.Result = drover.Cancelled
			}
			changed = true
		default:
			done = false
		}
	}
	if changed {
		br.storeStep(st)
	}
	return done
}

// cancelParts stops every part still queued or running.
func (br *buildRun) cancelParts(st *drover.Step, reason string) {
	for _, p := range st.Parts[1:] {
		if p.Result != "" {
			continue
		}
		err := br.read(func(ctx context.Context) error {
			return br.r.cancelRequest(ctx, p.Request, "the sharded build stopped: "+reason)
		})
		if err != nil && drover.KindOf(err) != drover.Conflict {
			br.r.logger.Warn("cancel shard part", "request", p.Request, "err", err)
		}
	}
}
