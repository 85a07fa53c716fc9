package master

import (
	"context"
	"fmt"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/dispatch"
	"github.com/drover-ci/drover/internal/events"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// resumePoint is where a build re-attached after a master restart goes on:
// step Step, whose command, if Cmd is set, still runs on the worker.
type resumePoint struct {
	step  int
	cmd   *command
	log   *drover.Log
	steps []drover.Step
}

// resumable prepares a build a previous master left running to go on
// here, or says why it cannot.
func (m *Master) resumable(ctx context.Context, b drover.Build) (*buildRun, string) {
	builder, ok := m.Builder(b.Builder)
	if !ok {
		return nil, "its builder is no longer in the config"
	}
	if requestGroup(b.Properties) != "" {
		return nil, "it was a part of a sharded step"
	}
	steps, err := m.store.ListSteps(ctx, b.ID)
	if err != nil || len(steps) != len(builder.Steps) {
		return nil, "its builder's steps changed"
	}
	k := -1
	for i, st := range steps {
		if st.State != drover.StepFinished {
			k = i
			break
		}
		if st.Name != builder.Steps[i].Name {
			return nil, "its builder's steps changed"
		}
	}
	if k < 0 || steps[k].Name != builder.Steps[k].Name || len(steps[k].Parts) > 0 || builder.Steps[k].ShardCount() > 1 {
		return nil, "it cannot be followed from where it stopped"
	}
	rp := &resumePoint{step: k, steps: steps}
	if steps[k].State == drover.StepRunning {
		logs, err := m.store.ListLogs(ctx, b.ID)
		if err != nil {
			return nil, "its logs could not be read"
		}
		for i := range logs {
			if logs[i].StepIndex == k {
				rp.log = &logs[i]
			}
		}
		if rp.log == nil {
			return nil, "its running step has no log"
		}
		info, err := m.logs.Stat(rp.log.ID)
		if err != nil {
			return nil, "its running step's log could not be read"
		}
		id := fmt.Sprintf("b%d-s%d", b.ID, k)
		grace := builder.Steps[k].KillGrace
		if grace == 0 {
			grace = defaultKillGrace
		}
		run := &pb.RunCommand{CommandId: id, Builder: b.Builder, KillGraceMs: grace.Milliseconds(), BuildId: b.ID, Step: int32(k)}
		// A transfer in flight goes on: the master must know what it may touch.
		run.Transfer = recoveredTransfer(&builder.Steps[k], b.Properties)
		rp.cmd = newCommand(id, b.Worker, rp.log.ID, run, rp.log.Seq+1, max(0, info.Bytes-rp.log.SeqBytes))
	}
	ctx2, cancel := context.WithCancelCause(m.ctx)
	r := &buildRun{m: m, build: b, builder: *builder, ctx: ctx2, cancel: cancel, resume: rp}
	return r, ""
}

// startRecovered registers a re-attached build and runs it on.
func (m *Master) startRecovered(r *buildRun) {
	b := r.build
	m.mu.Lock()
	m.wg.Add(1)
	m.builds[b.ID] = r
	m.running[b.Worker]++
	if m.checkouts[b.Worker] == nil {
		m.checkouts[b.Worker] = map[string]bool{}
	}
	m.checkouts[b.Worker][b.Builder] = true
	if c := r.resume.cmd; c != nil {
		// Registered before any worker can connect, so the worker's hello
		// finds it and the master keeps the command.
		m.cmds[c.id] = c
	}
	m.mu.Unlock()
	// The build's own locks are its again (capacity is not checked: it held
	// them before the restart).
	m.locks.restore(r.builder.Locks, b.Worker, drover.LockHolder{BuildID: b.ID, RequestID: b.RequestID, Builder: b.Builder, Number: b.Number, Step: -1, Since: b.Started})
	m.logger.Info("re-attaching a build left running by the previous master", "build", b.ID, "builder", b.Builder,
		"worker", b.Worker, "step", r.resume.step, "command_running", r.resume.cmd != nil)
	go func() {
		defer m.wg.Done()
		defer r.cancel(nil)
		r.resumeRun()
		m.locks.release(b.ID, dispatch.AllSteps)
		m.mu.Lock()
		delete(m.builds, b.ID)
		m.running[b.Worker]--
		m.mu.Unlock()
		m.kick()
	}()
}

// resumeRun goes on with a re-attached build from its resume point.
func (r *buildRun) resumeRun() {
	m := r.m
	b := &r.build
	rp := r.resume
	props := b.Properties.Clone()
	if props == nil {
		props = drover.Properties{}
	}
	var o outcome
	for i := 0; i < rp.step; i++ {
		o.add(&r.builder.Steps[i], rp.steps[i].Result, rp.steps[i].Summary)
	}
	m.bus.Publish(events.Event{Type: events.BuildStarted, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker})
	from := rp.step
	if rp.cmd != nil {
		st, spec := &rp.steps[rp.step], &r.builder.Steps[rp.step]
		sr, ssum, newProps := r.completeCommand(st, spec, rp.cmd, rp.log, false, false)
		if r.abandoned {
			return
		}
		for k, v := range newProps {
			props[k] = v
		}
		if len(newProps) > 0 {
			_ = m.store.SetBuildProperties(context.WithoutCancel(r.ctx), b.ID, props)
		}
		o.add(spec, sr, ssum)
		from++
	}
	r.runSteps(rp.steps, from, props, nil, &o)
	if r.abandoned {
		return
	}
	r.end(&o)
}

// giveUpBuild ends a build a previous master left running that this one
// cannot follow: retry (an infra result), its request queued again — or,
// for a part of a sharded step, cancelled, since its parent runs anew.
func (m *Master) giveUpBuild(ctx context.Context, b drover.Build, why string) error {
	steps, _ := m.store.ListSteps(ctx, b.ID)
	for _, s := range steps {
		if s.State == drover.StepFinished {
			continue
		}
		s.State, s.Result, s.Finished, s.Summary = drover.StepFinished, drover.Retry, m.now(), "master restarted"
		_ = m.store.UpdateStep(ctx, &s)
	}
	logs, _ := m.store.ListLogs(ctx, b.ID)
	for _, l := range logs {
		if !l.Complete {
			m.finishLog(ctx, &l)
		}
	}
	result, requeue := drover.Retry, true
	if requestGroup(b.Properties) != "" {
		result, requeue = drover.Cancelled, false
	}
	if err := m.store.FinishBuild(ctx, b.ID, result, "master restarted during the build: "+why, m.now(), requeue); err != nil {
		return fmt.Errorf("recover build %d: %w", b.ID, err)
	}
	m.logger.Warn("build interrupted by a master restart could not be re-attached", "build", b.ID, "builder", b.Builder, "why", why, "requeued", requeue)
	return nil
}
