package master

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// cancelWait bounds how long a cancelled command may take to report that
// it ended, beyond its kill grace, before the build stops waiting.
const cancelWait = 30 * time.Second

// buildRun drives one build step by step. It owns the build until it
// writes the build's final state, or lets go of it.
type buildRun struct {
	r       *runner
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

	// abandoned is set when this master lets go of the build (errLetGo):
	// its state stays "running" in the store for whoever drives it next.
	abandoned bool
	// resume, for a build re-attached after a restart, is where it goes on.
	resume *resumePoint
	// started, when set, is the build's start, stored with its claim.
	started *store.BuildStart
	// first is the first step's log when the build's start stored the
	// step as running with it (see planStart); runCommandStep takes it.
	first *drover.Log
}

func (br *buildRun) setGroup(g string) {
	br.mu.Lock()
	br.group = g
	br.mu.Unlock()
}

func (br *buildRun) currentGroup() string {
	br.mu.Lock()
	defer br.mu.Unlock()
	return br.group
}

// errLost is why a step ends when its worker did not come back in time.
var errLost = errors.New("worker lost")

// write runs one store call for the build, bounded by storeTimeout and
// detached from the build's cancellation (a cancelled build must still
// record that it ended). A write another master's adoption refuses makes
// this master let go of the build.
func (br *buildRun) write(what string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(br.ctx), storeTimeout)
	defer cancel()
	err := f(ctx)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotDriver):
		br.r.logger.Warn("another master drives this build now: letting go of it", "build", br.build.ID, "write", what, "err", err)
		br.abandoned = true
		br.cancel(fmt.Errorf("%w: %v", errLetGo, err))
	default:
		br.r.logger.Error("store "+what, "build", br.build.ID, "err", err)
	}
	return err
}

// letGo reports whether the build stopped being this master's to drive.
func (br *buildRun) letGo() bool {
	return br.abandoned || errors.Is(context.Cause(br.ctx), errLetGo)
}

func (br *buildRun) run() {
	r := br.r
	b := &br.build
	log := r.logger.With("build", b.ID, "builder", b.Builder, "number", b.Number, "worker", b.Worker)

	var facts drover.Facts
	if s, ok := r.hub.Session(b.Worker); ok {
		facts = r.facts(s)
	}
	start := br.started
	if start == nil {
		start = planStart(&br.builder, b, facts, r.now())
		if err := br.write("build start", func(ctx context.Context) error {
			return r.writes.StartBuild(ctx, b.ID, start.Properties, start.Steps, start.First)
		}); err != nil {
			if !br.letGo() {
				br.finish(drover.Exception, "could not store steps: "+err.Error(), false)
			}
			return
		}
	}
	props, steps := start.Properties, start.Steps
	br.initShard(props)
	br.first = start.First
	r.bus.Publish(events.Event{Type: events.BuildStarted, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker})
	log.Info("build started")

	var o outcome
	br.runSteps(steps, 0, props, facts, &o)
	if br.letGo() {
		log.Info("build left running for whoever drives it next", "why", context.Cause(br.ctx))
		return
	}
	br.end(&o)
}

// planStart is what build b of builder stores as it starts, on a worker
// with facts, at now: its properties, its steps and, when the first
// step's command is sent straight away (no condition stops it, it takes no
// locks and is not sharded), that step as running with its log, so that
// the step's start costs no transaction of its own. It only computes: the
// dispatcher calls it within the claim's transaction (see store.Claim).
func planStart(builder *drover.Builder, b *drover.Build, facts drover.Facts, now time.Time) *store.BuildStart {
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
		st.State, st.Started = drover.StepRunning, now
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
func (br *buildRun) runSteps(steps []drover.Step, from int, props drover.Properties, facts drover.Facts, o *outcome) {
	r := br.r
	b := &br.build
	for i := from; i < len(br.builder.Steps) && i < len(steps); i++ {
		spec := &br.builder.Steps[i]
		st := &steps[i]
		if br.letGo() {
			return
		}
		stopped := br.ctx.Err() != nil
		switch {
		case br.shardOf != 0 && i > br.shardStep:
			br.skip(st, fmt.Sprintf("not run: this build is a part of build %d's step %d", br.shardOf, br.shardStep))
			continue
		case stopped || (o.halted && !spec.AlwaysRun):
			br.skip(st, "not run: "+map[bool]string{true: "build stopped", false: "an earlier step failed"}[stopped])
			continue
		case !conditionsHold(spec.When, props):
			br.skip(st, "not run: condition false")
			continue
		}
		if facts == nil { // a re-attached build learns its worker's facts once it is back
			if s, ok := r.hub.Session(b.Worker); ok {
				facts = r.facts(s)
			}
		}
		sr, ssum, newProps := br.runStepWithLocks(st, spec, props, facts)
		if br.letGo() {
			return
		}
		br.setProperties(props, newProps)
		o.add(spec, sr, ssum)
	}
}

// setProperties adds what a step set to the build's properties, and
// stores them so that a re-attached build has them too.
func (br *buildRun) setProperties(props, set drover.Properties) {
	if len(set) == 0 {
		return
	}
	maps.Copy(props, set)
	_ = br.write("build properties", func(ctx context.Context) error {
		return br.r.writes.SetBuildProperties(ctx, br.build.ID, props)
	}) // logged; the build goes on with them in memory
}

// end records the build's final state, queueing it again after an infra
// failure while it has tries left.
func (br *buildRun) end(o *outcome) {
	r := br.r
	b := &br.build
	result, summary := o.result, o.summary
	if result == "" {
		result = drover.Success
	}
	requeue := false
	if result == drover.Retry {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(br.ctx), storeTimeout)
		req, err := r.store.GetRequest(ctx, b.RequestID)
		cancel()
		switch {
		case err != nil:
			// Without its tries the request is queued again: a retry
			// too many beats a request lost.
			r.logger.Error("read the request of a build to retry", "build", b.ID, "err", err)
			requeue = true
		case req.Tries < r.cfg().Master.MaxRetries:
			requeue = true
		default:
			result = drover.Exception
			summary += fmt.Sprintf(" (gave up after %d tries)", req.Tries)
		}
	}
	br.finish(result, summary, requeue)
	r.logger.Info("build finished", "build", b.ID, "builder", b.Builder, "number", b.Number, "worker", b.Worker,
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

func (br *buildRun) skip(st *drover.Step, why string) {
	r := br.r
	now := r.now()
	st.State, st.Result, st.Summary, st.Started, st.Finished = drover.StepFinished, drover.Skipped, why, now, now
	var l *drover.Log
	if br.first != nil && br.first.StepIndex == st.Index {
		// Stored as starting with the build, then stopped before its
		// command was sent: its empty log is complete.
		l, br.first = br.first, nil
		br.finishLog(l)
	}
	_ = br.write("skipped step", func(ctx context.Context) error { return r.writes.FinishStep(ctx, st, l) })
}

func (br *buildRun) finish(result drover.Result, summary string, requeue bool) {
	r := br.r
	b := &br.build
	if err := br.write("build end", func(ctx context.Context) error {
		return r.writes.FinishBuild(ctx, b.ID, result, strings.TrimSpace(summary), r.now(), requeue)
	}); err != nil {
		// The build stays running in the store: the next start's
		// recovery settles it.
		return
	}
	r.met.buildFinished(b.Builder, result, r.now().Sub(b.Started))
	r.bus.Publish(events.Event{Type: events.BuildFinished, Builder: b.Builder, BuildID: b.ID, Worker: b.Worker, Result: string(result)})
	r.bus.Publish(events.Event{Type: events.RequestChanged, Builder: b.Builder, Request: b.RequestID})
	if requeue {
		r.kick()
	}
}

// runStepWithLocks takes the step's locks (waiting its turn, all or none),
// runs the step, and releases them.
func (br *buildRun) runStepWithLocks(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts) (drover.Result, string, drover.Properties) {
	if len(spec.Locks) == 0 {
		return br.runStep(st, spec, props, facts)
	}
	r := br.r
	b := &br.build
	holder := drover.LockHolder{BuildID: b.ID, RequestID: b.RequestID, Builder: b.Builder, Number: b.Number, Step: st.Index, Since: r.now()}
	st.State, st.Summary = drover.StepPending, "waiting for locks"
	_ = br.write("step", func(ctx context.Context) error { return r.writes.UpdateStep(ctx, st) })
	r.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
	if err := r.locks.acquire(br.ctx, spec.Locks, b.Worker, holder); err != nil {
		if errors.Is(err, errLetGo) {
			return drover.Retry, "this master let go of the build", nil // the next driver runs this step
		}
		br.skip(st, "stopped while waiting for locks")
		return drover.Cancelled, "stopped while waiting for locks", nil
	}
	defer r.kick() // a released lock may let a queued build start
	defer r.locks.release(b.ID, st.Index)
	st.Summary = ""
	return br.runStep(st, spec, props, facts)
}

// runStep runs one step and returns its result, a summary and the
// properties it set.
func (br *buildRun) runStep(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts) (drover.Result, string, drover.Properties) {
	if spec.ShardCount() > 1 && br.shardOf == 0 {
		return br.runShardedStep(st, spec, props, facts)
	}
	var env map[string]string
	if br.shardOf != 0 && st.Index == br.shardStep {
		env = br.shardEnv
	}
	return br.runCommandStep(st, spec, props, facts, env, false)
}

// runCommandStep runs one step's command on the build's worker, with env
// added to the step's own environment. With keepOpen, the step's record is
// left running (a sharded step finishes when all its parts have).
func (br *buildRun) runCommandStep(st *drover.Step, spec *drover.StepSpec, props drover.Properties, facts drover.Facts, env map[string]string, keepOpen bool) (drover.Result, string, drover.Properties) {
	r := br.r
	b := &br.build
	end := func(res drover.Result, summary string) (drover.Result, string, drover.Properties) {
		st.State, st.Result, st.Summary, st.Finished = drover.StepFinished, res, summary, r.now()
		_ = br.write("step", func(ctx context.Context) error { return r.writes.UpdateStep(ctx, st) })
		r.bus.Publish(events.Event{Type: events.StepFinished, Builder: b.Builder, BuildID: b.ID, Step: st.Index, Result: string(res)})
		return res, summary, nil
	}

	// The step's start and its log: one transaction, unless the build's
	// start stored them already.
	l := br.first
	br.first = nil
	if l == nil || l.StepIndex != st.Index {
		st.State, st.Started = drover.StepRunning, r.now()
		stepURLs(spec, st, props, facts)
		l = &drover.Log{BuildID: b.ID, StepIndex: st.Index, Name: "stdio"}
		if err := br.write("step start", func(ctx context.Context) error { return r.writes.StartStep(ctx, st, l) }); err != nil {
			if br.letGo() {
				return drover.Retry, "this master let go of the build", nil
			}
			r.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
			return end(drover.Exception, "could not create log: "+err.Error())
		}
	}
	r.bus.Publish(events.Event{Type: events.StepStarted, Builder: b.Builder, BuildID: b.ID, Step: st.Index})
	id := commandID(b.ID, st.Index)
	var proto uint32
	if s, ok := r.hub.Session(b.Worker); ok {
		proto = s.Protocol
	}
	run := commandFor(id, b, &br.builder, spec, st.Index, props, facts, proto)
	for k, v := range env {
		run.Env[k] = v
	}
	if err := r.logs.Append(l.ID, []byte(logHeader(run, spec, b.Worker))); err != nil {
		return end(drover.Exception, "could not write log: "+err.Error())
	}
	// The header is durable, and recorded as the log's size before any
	// output (sequence 0), so that a restarted master knows where output
	// starts.
	if err := r.logs.Flush(l.ID); err != nil {
		return end(drover.Exception, "could not write log: "+err.Error())
	}
	info, err := r.logs.Stat(l.ID)
	if err != nil {
		return end(drover.Exception, "could not write log: "+err.Error())
	}
	if err := br.write("log progress", func(ctx context.Context) error {
		return r.writes.SetLogProgress(ctx, []drover.Log{{ID: l.ID, SeqBytes: info.Bytes}})
	}); err != nil {
		if br.letGo() {
			return drover.Retry, "this master let go of the build", nil
		}
		return end(drover.Exception, "could not record the log's start: "+err.Error())
	}
	c := r.hub.Track(run, b.Worker, l.ID, 1, 0)
	return br.completeCommand(st, spec, c, l, keepOpen, true)
}

// commandID names the command of step step of build id; a restarted
// master reads the build and step back from it (see claimHeld).
func commandID(build int64, step int) string { return fmt.Sprintf("b%d-s%d", build, step) }

// logHeader is the first lines of a step's log: what runs where.
func logHeader(run *pb.RunCommand, spec *drover.StepSpec, worker string) string {
	switch {
	case run.Transfer != nil:
		return transferHeader(run, worker)
	case run.Checkout != nil:
		co := run.Checkout
		opts := "mode " + co.Mode
		if co.Method != "" {
			opts += ", method " + co.Method
		}
		if co.Depth > 0 {
			opts += fmt.Sprintf(", depth %d", co.Depth)
		}
		if co.Filter != "" {
			opts += ", filter " + co.Filter
		}
		if co.Submodules {
			opts += ", submodules"
		}
		if co.RecloneOnFailure {
			opts += ", reclone on failure"
		}
		return fmt.Sprintf("$ git checkout of %s (branch %q, revision %q; %s), by the worker\n  in %s/%s on %s\n\n",
			co.Url, co.Branch, co.Revision, opts, run.Builder, run.Workdir, worker)
	case spec.Kind == drover.StepCheckout:
		return fmt.Sprintf("$ git checkout of %s (branch %q, revision %q)\n  in %s/%s on %s\n\n",
			run.Env["DROVER_GIT_URL"], run.Env["DROVER_GIT_BRANCH"], run.Env["DROVER_GIT_REVISION"], run.Builder, run.Workdir, worker)
	}
	return fmt.Sprintf("$ %s\n  in %s/%s on %s\n\n", strings.Join(redactArgv(run.Argv), " "), run.Builder, run.Workdir, worker)
}

// completeCommand waits for a tracked command to end (sending it first
// when send is set; a re-attached one is already running) and records the
// step's outcome.
func (br *buildRun) completeCommand(st *drover.Step, spec *drover.StepSpec, c *workerhub.Command, l *drover.Log, keepOpen, send bool) (drover.Result, string, drover.Properties) {
	r := br.r
	b := &br.build
	defer r.hub.Forget(c)
	// end completes the log and records it with the step's end in one
	// transaction (the log alone, when the step stays open).
	end := func(res drover.Result, summary string, exit *int) (drover.Result, string, drover.Properties) {
		urls, _ := c.Published()
		mergeURLs(st, urls) // links the command published stay on the step
		r.hub.Forget(c)
		br.finishLog(l)
		if keepOpen {
			st.ExitCode = exit
			_ = br.write("log", func(ctx context.Context) error { return r.writes.FinishStep(ctx, nil, l) })
			return res, summary, nil
		}
		st.State, st.Result, st.Summary, st.ExitCode, st.Finished = drover.StepFinished, res, summary, exit, r.now()
		_ = br.write("step end", func(ctx context.Context) error { return r.writes.FinishStep(ctx, st, l) })
		r.bus.Publish(events.Event{Type: events.StepFinished, Builder: b.Builder, BuildID: b.ID, Step: st.Index, Result: string(res)})
		return res, summary, nil
	}

	f, err := br.await(c, send)
	if errors.Is(err, errLetGo) {
		// The command keeps running on its worker; whoever drives the
		// build next re-attaches it. Nothing is recorded as ended.
		br.abandoned = true
		ctx, cancel := context.WithTimeout(context.WithoutCancel(br.ctx), storeTimeout)
		if err := r.hub.Flush(ctx, c); err != nil {
			r.logger.Warn("flush the output of a command let go", "command", c.ID, "err", err)
		}
		cancel()
		return drover.Retry, "this master let go of the build", nil
	}
	if err != nil {
		r.appendNote(l.ID, fmt.Sprintf("\n[drover: %v]\n", err))
		switch {
		case errors.Is(err, errLost):
			return end(drover.Retry, err.Error(), nil)
		case errors.Is(context.Cause(br.ctx), errCancelled):
			return end(drover.Cancelled, "cancelled: "+err.Error(), nil)
		}
		return end(drover.Exception, err.Error(), nil)
	}
	// Make the output durable, then let the worker forget the command.
	if err := r.hub.Complete(c, f); err != nil {
		r.logger.Error("complete command", "command", c.ID, "err", err)
	}
	res, summary := stepResult(spec, f)
	exit := int(f.GetExitCode())
	tail := fmt.Sprintf("\n[drover: exit %d after %s", exit, (time.Duration(f.GetDurationMs()) * time.Millisecond).Round(time.Millisecond))
	if f.GetError() != "" {
		tail += "; " + f.GetError()
	}
	if f.GetReason() == pb.FinishReason_FINISH_REASON_SOURCE_FAILED {
		tail += fmt.Sprintf("; an infra failure of source %s, not of worker %s", sourceName(spec), b.Worker)
		r.logger.Warn("a checkout could not fetch from its source", "build", b.ID, "builder", b.Builder,
			"worker", b.Worker, "source", sourceName(spec), "err", f.GetError())
	}
	r.appendNote(l.ID, tail+"]\n")
	_, published := c.Published()
	props := extractProperties(spec, c.Stdout())
	maps.Copy(props, published) // what the command published wins over its output
	r2, s2, _ := end(res, summary, &exit)
	return r2, s2, props
}

// await sends the command and waits for it to finish, riding out a
// worker's disconnection for the grace period.
func (br *buildRun) await(c *workerhub.Command, send bool) (*pb.Finished, error) {
	r := br.r
	grace := r.cfg().Master.WorkerGrace
	var graceC <-chan time.Time
	var cancelC <-chan time.Time
	s, ok := r.hub.Session(c.Worker)
	switch {
	case send && !ok:
		return nil, fmt.Errorf("%w: %s is not connected", errLost, c.Worker)
	case send:
		if err := s.Run(c.Run); err != nil {
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
	ctxDone := br.ctx.Done()
	for {
		var sessDone <-chan struct{}
		if s != nil {
			sessDone = s.Done()
		}
		select {
		case f := <-c.Done():
			return f, nil
		case <-c.Lost():
			return nil, fmt.Errorf("%w: %s came back without the command", errLost, c.Worker)
		case <-sessDone:
			r.logger.Warn("worker disconnected during a step; waiting for it", "worker", c.Worker, "command", c.ID, "grace", grace)
			s = nil
			t := time.NewTimer(grace)
			defer t.Stop()
			graceC = t.C
		case <-c.Reattached():
			if ns, ok := r.hub.Session(c.Worker); ok {
				s, graceC = ns, nil
				r.logger.Info("worker re-attached to its command", "worker", c.Worker, "command", c.ID)
			}
		case <-graceC:
			return nil, fmt.Errorf("%w: %s did not come back within %s", errLost, c.Worker, grace)
		case <-ctxDone:
			ctxDone = nil
			cause := context.Cause(br.ctx)
			if errors.Is(cause, errLetGo) {
				return nil, cause // the command runs on, for the next driver
			}
			if s != nil {
				_ = s.Cancel(c.ID, cause.Error()) // a worker gone meanwhile is the grace's to judge
			}
			t := time.NewTimer(time.Duration(c.Run.KillGraceMs)*time.Millisecond + cancelWait)
			defer t.Stop()
			cancelC = t.C
			if s == nil {
				return nil, cause
			}
		case <-cancelC:
			return nil, fmt.Errorf("%w: the worker did not confirm the kill", context.Cause(br.ctx))
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

// appendNote adds a line of the master's own to a step's log.
func (r *runner) appendNote(logID int64, note string) {
	if err := r.logs.Append(logID, []byte(note)); err != nil {
		r.logger.Warn("append to log", "log", logID, "err", err)
	}
}

// finishLog completes a step's log as the step ends. The step ends
// whatever the log store says; a log it could not finish is reported.
func (br *buildRun) finishLog(l *drover.Log) {
	if err := br.r.finishLogFile(l); err != nil {
		br.r.logger.Error("step log not finished", "build", br.build.ID, "log", l.ID, "err", err)
	}
}

// finishLogFile completes a log in the log store and sets l's size and
// Complete, for the caller to record. A log with no files is complete and
// empty.
func (r *runner) finishLogFile(l *drover.Log) error {
	if err := r.logs.Finish(l.ID); err != nil && drover.KindOf(err) != drover.NotFound {
		return fmt.Errorf("finish log %d: %w", l.ID, err)
	}
	info, err := r.logs.Stat(l.ID)
	switch {
	case err == nil:
		l.Bytes, l.Dropped = info.Bytes, info.Dropped
	case drover.KindOf(err) != drover.NotFound:
		return fmt.Errorf("finish log %d: %w", l.ID, err)
	}
	l.Complete = true
	return nil
}

// mergeURLs adds links to a step, so that writing it keeps them.
func mergeURLs(st *drover.Step, urls map[string]string) {
	if len(urls) == 0 {
		return
	}
	if st.URLs == nil {
		st.URLs = make(map[string]string, len(urls))
	}
	maps.Copy(st.URLs, urls)
}

// stepURLs interpolates a step's configured links as it starts; the
// links already on the step (a re-attached one's) are kept.
func stepURLs(spec *drover.StepSpec, st *drover.Step, props drover.Properties, facts drover.Facts) {
	if len(spec.URLs) == 0 {
		return
	}
	if st.URLs == nil {
		st.URLs = make(map[string]string, len(spec.URLs))
	}
	for name, tmpl := range spec.URLs {
		st.URLs[name] = interpolate(tmpl, props, facts)
	}
}
