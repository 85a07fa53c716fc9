package master

import (
	"context"
	"fmt"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// A build this master takes over — one its previous life left running, or
// one a dead master of the site drove — goes on from where it stopped:
// its running step's command runs on in its worker, which comes back on
// its own; or, when that cannot be, the build ends as retry, its request
// queued again.

// resumePoint is where a re-attached build goes on: step step, whose
// command, if cmd is set, still runs on the worker.
type resumePoint struct {
	step  int
	cmd   *workerhub.Command
	log   *drover.Log
	steps []drover.Step
}

// takeOver re-attaches build b, which this master now drives, or gives it
// up.
func (r *runner) takeOver(ctx context.Context, b drover.Build) error {
	if r.has(b.ID) {
		return nil
	}
	br, why, err := r.resumable(ctx, b)
	if err != nil {
		return fmt.Errorf("take over build %d: %w", b.ID, err)
	}
	if br == nil {
		return r.giveUp(ctx, b, why)
	}
	r.logger.Info("re-attaching a build left running", "build", b.ID, "builder", b.Builder,
		"worker", b.Worker, "step", br.resume.step, "command_running", br.resume.cmd != nil)
	// The build's own locks are its again (capacity is not checked: it held
	// them before).
	r.locks.restore(br.builder.Locks, b.Worker, drover.LockHolder{BuildID: b.ID, RequestID: b.RequestID, Builder: b.Builder, Number: b.Number, Step: -1, Since: b.Started})
	r.launch(br, br.resumeRun)
	return nil
}

// resumable prepares build b to go on here, or says why it cannot. An
// error is a store that could not be read: nothing is decided.
func (r *runner) resumable(ctx context.Context, b drover.Build) (*buildRun, string, error) {
	builder, ok := r.cfg().Builder(b.Builder)
	if !ok {
		return nil, "its builder is no longer in the config", nil
	}
	if requestGroup(b.Properties) != "" {
		return nil, "it was a part of a sharded step", nil
	}
	steps, err := r.store.ListSteps(ctx, b.ID)
	if err != nil {
		return nil, "", fmt.Errorf("list steps: %w", err)
	}
	if len(steps) != len(builder.Steps) {
		return nil, "its builder's steps changed", nil
	}
	k := -1
	for i, st := range steps {
		if st.State != drover.StepFinished {
			k = i
			break
		}
		if st.Name != builder.Steps[i].Name {
			return nil, "its builder's steps changed", nil
		}
	}
	if k < 0 || steps[k].Name != builder.Steps[k].Name || len(steps[k].Parts) > 0 || builder.Steps[k].ShardCount() > 1 {
		return nil, "it cannot be followed from where it stopped", nil
	}
	rp := &resumePoint{step: k, steps: steps}
	if steps[k].State == drover.StepRunning {
		logs, err := r.store.ListLogs(ctx, b.ID)
		if err != nil {
			return nil, "", fmt.Errorf("list logs: %w", err)
		}
		for i := range logs {
			if logs[i].StepIndex == k {
				rp.log = &logs[i]
			}
		}
		if rp.log == nil {
			return nil, "its running step has no log", nil
		}
		// This master writes the log from now on: what a crash left torn
		// is cut off, and the hub appends after what is kept.
		info, err := r.logs.Recover(rp.log.ID)
		switch {
		case drover.KindOf(err) == drover.NotFound:
			return nil, "its running step's log is gone", nil
		case err != nil:
			return nil, "", fmt.Errorf("recover the log of step %d: %w", k, err)
		}
		spec := &builder.Steps[k]
		grace := spec.KillGrace
		if grace == 0 {
			grace = defaultKillGrace
		}
		id := commandID(b.ID, k)
		run := &pb.RunCommand{CommandId: id, Builder: b.Builder, KillGraceMs: grace.Milliseconds(), BuildId: b.ID, Step: int32(k)}
		// A transfer in flight goes on: the master must know what it may touch.
		run.Transfer = recoveredTransfer(spec, b.Properties)
		// Tracked before any worker can connect, so that the worker's
		// hello finds it and the hub keeps the command.
		rp.cmd = r.hub.Track(run, b.Worker, rp.log.ID, rp.log.Seq+1, max(0, info.Bytes-rp.log.SeqBytes))
	}
	ctx2, cancel := context.WithCancelCause(r.base)
	return &buildRun{r: r, build: b, builder: *builder, ctx: ctx2, cancel: cancel, resume: rp}, "", nil
}

// resumeRun goes on with a re-attached build from its resume point.
func (br *buildRun) resumeRun() {
	r := br.r
	b := &br.build
	rp := br.resume
	props := b.Properties.Clone()
	if props == nil {
		props = drover.Properties{}
	}
	var o outcome
	for i := 0; i < rp.step; i++ {
		o.add(&br.builder.Steps[i], rp.steps[i].Result, rp.steps[i].Summary)
	}
	r.bus.Publish(events.Event{Type: events.BuildStarted, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker})
	from := rp.step
	if rp.cmd != nil {
		st, spec := &rp.steps[rp.step], &br.builder.Steps[rp.step]
		sr, ssum, newProps := br.completeCommand(st, spec, rp.cmd, rp.log, false, false)
		if br.letGo() {
			return
		}
		br.setProperties(props, newProps)
		o.add(spec, sr, ssum)
		from++
	}
	br.runSteps(rp.steps, from, props, nil, &o)
	if br.letGo() {
		return
	}
	br.end(&o)
}

// giveUp ends build b, which this master drives but cannot follow, in one
// transaction: retry (an infra result), its request queued again — or,
// for a part of a sharded step, cancelled, since its parent runs anew.
// The logs it left unfinished are completed first; whatever fails is
// returned and nothing is recorded, so the next look tries again.
func (r *runner) giveUp(ctx context.Context, b drover.Build, why string) error {
	logs, err := r.store.ListLogs(ctx, b.ID)
	if err != nil {
		return fmt.Errorf("give up build %d: %w", b.ID, err)
	}
	var open []drover.Log
	for _, l := range logs {
		if l.Complete {
			continue
		}
		if _, err := r.logs.Recover(l.ID); err != nil && drover.KindOf(err) != drover.NotFound {
			return fmt.Errorf("give up build %d: %w", b.ID, err)
		}
		if err := r.finishLogFile(&l); err != nil {
			return fmt.Errorf("give up build %d: %w", b.ID, err)
		}
		open = append(open, l)
	}
	a := store.Abandon{Result: drover.Retry, Requeue: true, Summary: "master restarted during the build: " + why,
		StepSummary: "master restarted", Logs: open, Finished: r.now()}
	if requestGroup(b.Properties) != "" {
		a.Result, a.Requeue = drover.Cancelled, false
	}
	if err := r.writes.AbandonBuild(ctx, b.ID, a); err != nil {
		return fmt.Errorf("give up build %d: %w", b.ID, err)
	}
	r.logger.Warn("a build left running could not be re-attached", "build", b.ID, "builder", b.Builder, "why", why, "requeued", a.Requeue)
	r.bus.Publish(events.Event{Type: events.BuildFinished, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker, Result: string(a.Result)})
	if a.Requeue {
		r.kick()
	}
	return nil
}
