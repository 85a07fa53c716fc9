package master

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/dispatch"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// stdoutCapture bounds the stdout a step keeps for setting properties:
// properties are short values, not whole logs.
const stdoutCapture = 64 << 10

// cancelWait bounds how long a cancelled command may take to report that
// it ended, beyond its kill grace, before the build stops waiting.
const cancelWait = 30 * time.Second

// buildRun drives one build step by step. It owns the build until it
// writes the build's final state.
type buildRun struct {
	m       *Master
	build   drover.Build
	builder drover.Builder // a copy: a reload never changes a running build
	ctx     context.Context
	cancel  context.CancelCauseFunc

	// A build that is one part of another build's sharded step: it runs
	// the steps up to that one, that one with shardEnv, and no more.
	shardOf   int64
	shardStep int
	shardEnv  map[string]string

	mu    sync.Mutex
	group string // the sharded step this build runs a part of now, for dispatch

	// abandoned is set when the master stops under the build: its state
	// stays "running" in the store for the next master to re-attach.
	abandoned bool
	// resume, for a build re-attached after a restart, is where it goes on.
	resume *resumePoint
	// started, when set, is the build's start, stored with its claim.
	started *store.BuildStart
	// first is the first step's log when the build's start stored the
	// step as running with it (see planStart); runCommandStep takes it.
	first *drover.Log
}

func (r *buildRun) setGroup(g string) {
	r.mu.Lock()
	r.group = g
	r.mu.Unlock()
}

func (r *buildRun) currentGroup() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.group
}

// errLost is why a step ends when its worker did not come back in time.
var errLost = errors.New("worker lost")

// command is one step's command in flight on a worker.
type command struct {
	id     string
	worker string
	logID  int64
	run    *pb.RunCommand

	done     chan *pb.Finished // receives the finish once
	reattach chan struct{}     // signalled when the worker comes back holding it
	lost     chan struct{}     // closed when the worker came back without it

	mu       sync.Mutex
	next     uint64 // next sequence number expected
	appended uint64 // last sequence number in the log store
	acked    uint64 // last sequence number acknowledged to the worker
	stdout   []byte
	finished bool
	lostOnce sync.Once
	// skip is how many bytes of replayed output the log already holds
	// (written before a master restart): dropped before appending.
	skip int64
	// pub is what the command published about its step (steplinks.go).
	pub published
}

func (c *command) flush(m *Master) {
	seq, bytes, ok := c.persist(m)
	if !ok {
		return
	}
	if err := m.store.SetLogProgress(context.WithoutCancel(m.ctx), []drover.Log{{ID: c.logID, Seq: seq, SeqBytes: bytes}}); err != nil {
		m.logger.Error("store log progress", "log", c.logID, "err", err)
		return
	}
	c.ack(m, seq)
}

// persist makes the command's appended output durable in the log store and
// returns the sequence number it reaches with the log's size just after it,
// or false if there is nothing new. It holds c.mu throughout, as
// CommandOutput does while it appends, so that the size belongs to exactly
// that sequence number: a restarted master relies on the pair.
func (c *command) persist(m *Master) (uint64, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.appended == c.acked {
		return 0, 0, false
	}
	if err := m.logs.Flush(c.logID); err != nil {
		m.logger.Error("flush log", "log", c.logID, "err", err)
		return 0, 0, false
	}
	info, err := m.logs.Stat(c.logID)
	if err != nil {
		m.logger.Error("stat log", "log", c.logID, "err", err)
		return 0, 0, false
	}
	return c.appended, info.Bytes, true
}

// ack tells the worker the output up to seq is stored; called only after
// the log's progress is recorded, so a restarted master knows it too.
func (c *command) ack(m *Master, seq uint64) {
	if s, ok := m.hub.Session(c.worker); ok {
		if err := s.Ack(c.id, seq); err == nil {
			c.mu.Lock()
			if seq > c.acked {
				c.acked = seq
			}
			c.mu.Unlock()
		}
	}
}

// startBuild runs a claimed build in its own goroutine, owned by m.wg.
// started is its start when the claim stored it, else nil.
func (m *Master) startBuild(b drover.Build, builder drover.Builder, started *store.BuildStart) {
	ctx, cancel := context.WithCancelCause(m.ctx)
	r := &buildRun{m: m, build: b, builder: builder, ctx: ctx, cancel: cancel, started: started}
	// Known at once, so the next dispatch round already sees this worker
	// as running a part of its group.
	r.group = requestGroup(b.Properties)
	m.mu.Lock()
	if m.closed {
		// Stopping: the claimed request is put back by the next start's
		// recovery, like any build a stopped master leaves behind.
		m.mu.Unlock()
		cancel(nil)
		m.locks.release(b.ID, dispatch.AllSteps)
		return
	}
	m.wg.Add(1) // under mu, so it never races stopBuilds' Wait
	m.builds[b.ID] = r
	m.running[b.Worker]++
	if m.checkouts[b.Worker] == nil {
		m.checkouts[b.Worker] = map[string]bool{}
	}
	m.checkouts[b.Worker][b.Builder] = true
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		defer cancel(nil)
		r.run()
		m.locks.release(b.ID, dispatch.AllSteps)
		m.mu.Lock()
		delete(m.builds, b.ID)
		m.running[b.Worker]--
		m.mu.Unlock()
		m.kick()
	}()
}

// stopBuilds cancels every running build and waits for them to record it.
func (m *Master) stopBuilds() {
	m.mu.Lock()
	m.closed = true
	runs := make([]*buildRun, 0, len(m.builds))
	for _, r := range m.builds {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, r := range runs {
		r.cancel(errMasterStopping)
	}
	m.wg.Wait()
}

var errMasterStopping = errors.New("master stopping")

func (r *buildRun) run() {
	m := r.m
	b := &r.build
	log := m.logger.With("build", b.ID, "builder", b.Builder, "number", b.Number, "worker", b.Worker)
	// The store context outlives a cancel so that final states are written.
	sctx := context.WithoutCancel(r.ctx)

	var facts drover.Facts
	if s, ok := m.hub.Session(b.Worker); ok {
		facts = m.facts(s)
	}
	start := r.started
	if start == nil {
		start = m.planStart(&r.builder, b, facts)
		if err := m.store.StartBuild(sctx, b.ID, start.Properties, start.Steps, start.First); err != nil {
			r.finish(drover.Exception, "could not store steps: "+err.Error(), false)
			return
		}
	}
	props, steps := start.Properties, start.Steps
	r.initShard(props)
	r.first = start.First
	m.bus.Publish(events.Event{Type: events.BuildStarted, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker})
	log.Info("build started")

	var o outcome
	r.runSteps(steps, 0, props, facts, &o)
	if r.abandoned {
		log.Info("master stopping: build left running for the next master to re-attach")
		return
	}
	r.end(&o)
}

// planStart is what build b of builder stores as it starts, on a worker
// with facts: its properties, its steps and, when the first step's
// command is sent straight away (no condition stops it, it takes no locks
// and is not sharded), that step as running with its log, so that the
// step's start costs no transaction of its own. It only computes: the
// dispatcher calls it within the claim's transaction (see store.Claim).
func (m *Master) planStart(builder *drover.Builder, b *drover.Build, facts drover.Facts) *store.BuildStart {
	props := b.Properties.Clone()
	if props == nil {
		props = drover.Properties{}
	}
	for k, v := range builder.Properties {
		if _, set := props[k]; !set {
			props[k] = v
		}
	}
	props["buildername"] = b.Builder
	props["buildnumber"] = fmt.Sprint(b.Number)
	props["workername"] = b.Worker
	props["branch"] = b.Source.Branch
	props["revision"] = b.Source.Revision
	props["repository"] = b.Source.Repository

	steps := make([]drover.Step, len(builder.Steps))
	for i, spec := range builder.Steps {
		steps[i] = drover.Step{BuildID: b.ID, Index: i, Name: spec.Name, State: drover.StepPending}
	}
	start := &store.BuildStart{Properties: props, Steps: steps}
	if len(steps) == 0 {
		return start
	}
	spec := &builder.Steps[0]
	_, _, shardPart := shardOf(props, len(builder.Steps))
	if len(spec.Locks) == 0 && conditionsHold(spec.When, props) && (spec.ShardCount() <= 1 || shardPart) {
		st := &steps[0]
		st.State, st.Started = drover.StepRunning, m.now()
		stepURLs(spec, st, props, facts)
		start.First = &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	}
	return start
}

// outcome accumulates a build's result as its steps end.
type outcome struct {
	result        drover.Result
	summary       string
	summaryResult drover.Result
	halted        bool
}

// add folds a step's result into the build's.
func (o *outcome) add(spec *drover.StepSpec, sr drover.Result, ssum string) {
	if o.result == "" {
		o.result, o.summaryResult = drover.Success, drover.Success
	}
	var halt bool
	o.result, halt = applyStep(o.result, spec, sr)
	// The summary names the first step with the worst result.
	if !sr.IsGood() && (o.summary == "" || (sr != o.summaryResult && drover.Worst(o.summaryResult, sr) == sr)) {
		o.summary, o.summaryResult = fmt.Sprintf("%s: %s", spec.Name, sr), sr
		if ssum != "" && ssum != string(sr) {
			o.summary += " (" + ssum + ")"
		}
	}
	o.halted = o.halted || halt
}

// runSteps runs steps from index from on, folding results into o.
func (r *buildRun) runSteps(steps []drover.Step, from int, props drover.Properties, facts drover.Facts, o *outcome) {
	m := r.m
	b := &r.build
	sctx := context.WithoutCancel(r.ctx)
	for i := from; i < len(r.builder.Steps) && i < len(steps); i++ {
		spec := &r.builder.Steps[i]
		st := &steps[i]
		stopped := r.ctx.Err() != nil
		switch {
		case r.shardOf != 0 && i > r.shardStep:
			r.skip(st, fmt.Sprintf("not run: this build is a part of build %d's step %d", r.shardOf, r.shardStep))
			continue
		case stopped || (o.halted && !spec.AlwaysRun):
			r.skip(st, "not run: "+map[bool]string{true: "build stopped", false: "an earlier step failed"}[stopped])
			continue
		case !conditionsHold(spec.When, props):
			r.skip(st, "not run: condition false")
			continue
		}
		if facts == nil { // a re-attached build learns its worker's facts once it is back
			if s, ok := m.hub.Session(b.Worker); ok {
				facts = m.facts(s)
			}
		}
		sr, ssum, newProps := r.runStepWithLocks(st, spec, props, facts)
		if r.abandoned {
			return
		}
		for k, v := range newProps {
			props[k] = v
		}
		if len(newProps) > 0 {
			if err := m.store.SetBuildProperties(sctx, b.ID, props); err != nil {
				m.logger.Error("store build properties", "build", b.ID, "err", err)
			}
		}
		o.add(spec, sr, ssum)
	}
}

// end records the build's final state, queueing it again after an infra
// failure while it has tries left.
func (r *buildRun) end(o *outcome) {
	m := r.m
	b := &r.build
	sctx := context.WithoutCancel(r.ctx)
	result, summary := o.result, o.summary
	if result == "" {
		result = drover.Success
	}
	requeue := false
	if result == drover.Retry {
		req, err := m.store.GetRequest(sctx, b.RequestID)
		if err == nil && req.Tries < m.config().Master.MaxRetries {
			requeue = true
		} else {
			result = drover.Exception
			summary += fmt.Sprintf(" (gave up after %d tries)", req.Tries)
		}
	}
	r.finish(result, summary, requeue)
	m.logger.Info("build finished", "build", b.ID, "builder", b.Builder, "number", b.Number, "worker", b.Worker,
		"result", result, "summary", summary, "requeued", requeue)
}

func conditionsHold(cs []drover.Condition, props drover.Properties) bool {
	for _, c := range cs {
		if !c.Holds(props) {
			return false
		}
	}
	return true
}

func (r *buildRun) skip(st *drover.Step, why string) {
	now := r.m.now()
	st.State, st.Result, st.Summary, st.Started, st.Finished = drover.StepFinished, drover.Skipped, why, now, now
	var l *drover.Log
	if r.first != nil && r.first.StepIndex == st.Index {
		// Stored as starting with the build, then stopped before its
		// command was sent: its empty log is complete.
		l, r.first = r.first, nil
		r.m.finishLogFile(l)
	}
	if err := r.m.store.FinishStep(context.WithoutCancel(r.ctx), st, l); err != nil {
		r.m.logger.Error("store step", "build", st.BuildID, "step", st.Index, "err", err)
	}
}

func (r *buildRun) finish(result drover.Result, summary string, requeue bool) {
	m := r.m
	b := &r.build
	sctx := context.WithoutCancel(r.ctx)
	if err := m.store.FinishBuild(sctx, b.ID, result, strings.TrimSpace(summary), m.now(), requeue); err != nil {
		m.logger.Error("finish build", "build", b.ID, "err", err)
	}
	m.met.buildFinished(b.Builder, result, m.now().Sub(b.Started))
	m.bus.Publish(events.Event{Type: events.BuildFinished, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker, Result: string(result)})
	m.bus.Publish(events.Event{Type: events.RequestChanged, Builder: b.Builder, Request: b.RequestID})
	if requeue {
		m.kick()
	}
}

// runStepWithLocks takes the step's locks (waiting its turn, all or none),
// runs the step, and releases them.
func (r *buildRun) runStepWithLocks(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts) (drover.Result, string, drover.Properties) {
	if len(spec.Locks) == 0 {
		return r.runStep(st, spec, props, facts)
	}
	m := r.m
	b := &r.build
	holder := drover.LockHolder{BuildID: b.ID, RequestID: b.RequestID, Builder: b.Builder, Number: b.Number, Step: st.Index, Since: m.now()}
	st.State, st.Summary = drover.StepPending, "waiting for locks"
	if err := m.store.UpdateStep(context.WithoutCancel(r.ctx), st); err != nil {
		m.logger.Error("store step", "build", b.ID, "step", st.Index, "err", err)
	}
	m.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
	if err := m.locks.acquire(r.ctx, spec.Locks, b.Worker, holder); err != nil {
		res := drover.Cancelled
		if errors.Is(err, errMasterStopping) {
			r.abandoned = true // the next master runs this step
			return drover.Retry, "master stopping", nil
		}
		r.skip(st, "stopped while waiting for locks")
		return res, "stopped while waiting for locks", nil
	}
	defer m.kick() // a released lock may let a queued build start
	defer m.locks.release(b.ID, st.Index)
	st.Summary = ""
	return r.runStep(st, spec, props, facts)
}

// runStep runs one step and returns its result, a summary and the
// properties it set.
func (r *buildRun) runStep(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts) (drover.Result, string, drover.Properties) {
	if spec.ShardCount() > 1 && r.shardOf == 0 {
		return r.runShardedStep(st, spec, props, facts)
	}
	var env map[string]string
	if r.shardOf != 0 && st.Index == r.shardStep {
		env = r.shardEnv
	}
	return r.runCommandStep(st, spec, props, facts, env, false)
}

// runCommandStep runs one step's command on the build's worker, with env
// added to the step's own environment. With keepOpen, the step's record is
// left running (a sharded step finishes when all its parts have).
func (r *buildRun) runCommandStep(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts, env map[string]string, keepOpen bool) (drover.Result, string, drover.Properties) {
	m := r.m
	b := &r.build
	sctx := context.WithoutCancel(r.ctx)
	end := func(res drover.Result, summary string) (drover.Result, string, drover.Properties) {
		st.State, st.Result, st.Summary, st.Finished = drover.StepFinished, res, summary, m.now()
		if err := m.store.UpdateStep(sctx, st); err != nil {
			m.logger.Error("store step", "build", b.ID, "step", st.Index, "err", err)
		}
		m.bus.Publish(events.Event{Type: events.StepFinished, Builder: b.Builder, BuildID: b.ID, Step: st.Index, Result: string(res)})
		return res, summary, nil
	}

	// The step's start and its log: one transaction, unless the build's
	// start stored them already.
	l := r.first
	r.first = nil
	if l == nil || l.StepIndex != st.Index {
		st.State, st.Started = drover.StepRunning, m.now()
		stepURLs(spec, st, props, facts)
		l = &drover.Log{BuildID: b.ID, StepIndex: st.Index, Name: "stdio"}
		if err := m.store.StartStep(sctx, st, l); err != nil {
			m.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
			return end(drover.Exception, "could not create log: "+err.Error())
		}
	}
	m.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
	id := fmt.Sprintf("b%d-s%d", b.ID, st.Index)
	run := commandFor(id, b, &r.builder, spec, st.Index, props, facts)
	for k, v := range env {
		run.Env[k] = v
	}
	header := fmt.Sprintf("$ %s\n  in %s/%s on %s\n\n", strings.Join(redactArgv(run.Argv), " "), run.Builder, run.Workdir, b.Worker)
	if spec.Kind == drover.StepCheckout {
		header = fmt.Sprintf("$ git checkout of %s (branch %q, revision %q)\n  in %s/%s on %s\n\n",
			run.Env["DROVER_GIT_URL"], run.Env["DROVER_GIT_BRANCH"], run.Env["DROVER_GIT_REVISION"], run.Builder, run.Workdir, b.Worker)
	}
	if run.Transfer != nil {
		header = transferHeader(run, b.Worker)
	}
	if err := m.logs.Append(l.ID, []byte(header)); err != nil {
		return end(drover.Exception, "could not write log: "+err.Error())
	}
	// The header is durable, and recorded as the log's size before any
	// output (sequence 0), so a restarted master knows where output starts.
	if err := m.logs.Flush(l.ID); err == nil {
		if info, err := m.logs.Stat(l.ID); err == nil {
			_ = m.store.SetLogProgress(sctx, []drover.Log{{ID: l.ID, SeqBytes: info.Bytes}})
		}
	}
	c := newCommand(id, b.Worker, l.ID, run, 1, 0)
	m.mu.Lock()
	m.cmds[id] = c
	m.mu.Unlock()
	return r.completeCommand(st, spec, c, l, keepOpen, true)
}

// newCommand makes the record of a command in flight: its output is
// expected from sequence number next, the first skip bytes of it being
// already in the log (a re-attached command's replay).
func newCommand(id, worker string, logID int64, run *pb.RunCommand, next uint64, skip int64) *command {
	return &command{
		id: id, worker: worker, logID: logID, run: run, next: next, appended: next - 1, acked: next - 1, skip: skip,
		done: make(chan *pb.Finished, 1), reattach: make(chan struct{}, 1), lost: make(chan struct{}),
	}
}

// completeCommand waits for a registered command to end (sending it first
// when send is set; a re-attached one is already running) and records the
// step's outcome.
func (r *buildRun) completeCommand(st *drover.Step, spec *drover.StepSpec, c *command, l *drover.Log, keepOpen, send bool) (drover.Result, string, drover.Properties) {
	m := r.m
	b := &r.build
	sctx := context.WithoutCancel(r.ctx)
	forget := func() {
		m.mu.Lock()
		delete(m.cmds, c.id)
		m.mu.Unlock()
	}
	defer forget()
	// end completes the log and records it with the step's end in one
	// transaction (the log alone, when the step stays open).
	end := func(res drover.Result, summary string, exit *int) (drover.Result, string, drover.Properties) {
		c.mergePublished(st, nil) // links the command published stay on the step
		forget()
		m.finishLogFile(l)
		if keepOpen {
			st.ExitCode = exit
			if err := m.store.FinishStep(sctx, nil, l); err != nil {
				m.logger.Error("store log", "log", l.ID, "err", err)
			}
			return res, summary, nil
		}
		st.State, st.Result, st.Summary, st.ExitCode, st.Finished = drover.StepFinished, res, summary, exit, m.now()
		if err := m.store.FinishStep(sctx, st, l); err != nil {
			m.logger.Error("store step", "build", b.ID, "step", st.Index, "log", l.ID, "err", err)
		}
		m.bus.Publish(events.Event{Type: events.StepFinished, Builder: b.Builder, BuildID: b.ID, Step: st.Index, Result: string(res)})
		return res, summary, nil
	}

	f, err := r.await(c, send)
	if errors.Is(err, errMasterStopping) {
		// The command keeps running on its worker; the next master
		// re-attaches it. Nothing is recorded as ended.
		r.abandoned = true
		c.flush(m)
		return drover.Retry, "master stopping", nil
	}
	if err != nil {
		m.appendNote(l.ID, fmt.Sprintf("\n[drover: %v]\n", err))
		switch {
		case errors.Is(err, errLost):
			return end(drover.Retry, err.Error(), nil)
		case errors.Is(err, errMasterStopping):
			return end(drover.Retry, "master stopping", nil)
		case errors.Is(context.Cause(r.ctx), errCancelled):
			return end(drover.Cancelled, "cancelled: "+err.Error(), nil)
		}
		return end(drover.Exception, err.Error(), nil)
	}
	// Make the output durable, then let the worker forget the command.
	if err := m.logs.Flush(c.logID); err != nil && drover.KindOf(err) != drover.NotFound {
		m.logger.Error("flush log", "log", c.logID, "err", err)
	} else if s, ok := m.hub.Session(c.worker); ok {
		_ = s.AckFinished(c.id, f.GetLastSeq())
	}
	res, summary := stepResult(spec, f)
	if f.GetReason() == pb.FinishReason_FINISH_REASON_CANCELLED && r.ctx.Err() != nil {
		if errors.Is(context.Cause(r.ctx), errMasterStopping) {
			res, summary = drover.Retry, "master stopping"
		}
	}
	exit := int(f.GetExitCode())
	tail := fmt.Sprintf("\n[drover: exit %d after %s", exit, (time.Duration(f.GetDurationMs()) * time.Millisecond).Round(time.Millisecond))
	if f.GetError() != "" {
		tail += "; " + f.GetError()
	}
	m.appendNote(l.ID, tail+"]\n")
	c.mu.Lock()
	out := append([]byte(nil), c.stdout...)
	c.mu.Unlock()
	newProps := c.mergePublished(st, extractProperties(spec, out))
	r2, s2, _ := end(res, summary, &exit)
	return r2, s2, newProps
}

func (m *Master) appendNote(logID int64, note string) {
	if err := m.logs.Append(logID, []byte(note)); err != nil {
		m.logger.Warn("append to log", "log", logID, "err", err)
	}
}

// finishLog completes a log and records its size in the store.
func (m *Master) finishLog(ctx context.Context, l *drover.Log) {
	m.finishLogFile(l)
	if err := m.store.UpdateLog(ctx, l); err != nil {
		m.logger.Error("store log", "log", l.ID, "err", err)
	}
}

// finishLogFile completes a log in the log store and sets l's size and
// Complete, for the caller to record.
func (m *Master) finishLogFile(l *drover.Log) {
	if err := m.logs.Finish(l.ID); err != nil && drover.KindOf(err) != drover.NotFound {
		m.logger.Error("finish log", "log", l.ID, "err", err)
	}
	info, err := m.logs.Stat(l.ID)
	if err == nil {
		l.Bytes, l.Dropped = info.Bytes, info.Dropped
	}
	l.Complete = true
}

var errCancelled = errors.New("cancelled")

// await sends the command and waits for it to finish, riding out a
// worker's disconnection for the grace period.
func (r *buildRun) await(c *command, send bool) (*pb.Finished, error) {
	m := r.m
	grace := m.config().Master.WorkerGrace
	var graceC <-chan time.Time
	var cancelC <-chan time.Time
	s, ok := m.hub.Session(c.worker)
	switch {
	case send && !ok:
		return nil, fmt.Errorf("%w: %s is not connected", errLost, c.worker)
	case send:
		if err := s.Run(c.run); err != nil {
			return nil, fmt.Errorf("%w: %v", errLost, err)
		}
	default:
		// Re-attaching: the worker comes back on its own, holding the
		// command, or the grace period ends it.
		s = nil
		t := time.NewTimer(grace)
		defer t.Stop()
		graceC = t.C
	}
	ctxDone := r.ctx.Done()
	for {
		var sessDone <-chan struct{}
		if s != nil {
			sessDone = s.Done()
		}
		select {
		case f := <-c.done:
			return f, nil
		case <-c.lost:
			return nil, fmt.Errorf("%w: %s came back without the command", errLost, c.worker)
		case <-sessDone:
			m.logger.Warn("worker disconnected during a step; waiting for it", "worker", c.worker, "command", c.id, "grace", grace)
			s = nil
			t := time.NewTimer(grace)
			defer t.Stop()
			graceC = t.C
		case <-c.reattach:
			if ns, ok := m.hub.Session(c.worker); ok {
				s, graceC = ns, nil
				m.logger.Info("worker re-attached to its command", "worker", c.worker, "command", c.id)
			}
		case <-graceC:
			return nil, fmt.Errorf("%w: %s did not come back within %s", errLost, c.worker, grace)
		case <-ctxDone:
			ctxDone = nil
			if errors.Is(context.Cause(r.ctx), errMasterStopping) {
				return nil, errMasterStopping // the command runs on, for the next master
			}
			reason := context.Cause(r.ctx).Error()
			if s != nil {
				_ = s.Cancel(c.id, reason)
			}
			t := time.NewTimer(time.Duration(c.run.KillGraceMs)*time.Millisecond + cancelWait)
			defer t.Stop()
			cancelC = t.C
			if s == nil {
				return nil, context.Cause(r.ctx)
			}
		case <-cancelC:
			return nil, fmt.Errorf("%w: the worker did not confirm the kill", context.Cause(r.ctx))
		}
	}
}

// redactArgv shortens long scripts for the log header.
func redactArgv(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if len(a) > 200 || strings.Contains(a, "\n") {
			first, _, _ := strings.Cut(a, "\n")
			if len(first) > 120 {
				first = first[:120]
			}
			a = first + " …"
		}
		out[i] = a
	}
	return out
}

// CancelBuild implements api.Backend.
func (m *Master) CancelBuild(ctx context.Context, id int64, reason string) error {
	m.mu.Lock()
	r, ok := m.builds[id]
	m.mu.Unlock()
	if !ok {
		b, err := m.store.GetBuild(ctx, id)
		if err != nil {
			return err
		}
		if b.State == drover.BuildFinished {
			return drover.Errorf(drover.Conflict, "build %d has already finished (%s)", id, b.Result)
		}
		if m.shared && b.Master != m.id && b.Master != "" {
			// Another master of the site drives it: ask it.
			if reason == "" {
				reason = "cancelled by request"
			}
			m.notify(ctx, notice{Kind: noticeCancel, Build: id, Reason: reason})
			m.logger.Info("build cancel passed to its master", "build", id, "master", b.Master, "reason", reason)
			return nil
		}
		return drover.Errorf(drover.Conflict, "build %d is not running on this master", id)
	}
	if reason == "" {
		reason = "cancelled by request"
	}
	r.cancel(fmt.Errorf("%w: %s", errCancelled, reason))
	m.logger.Info("build cancelled", "build", id, "reason", reason)
	return nil
}
