package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

const (
	// maxChunk is the largest output chunk sent: big enough that a chatty
	// compiler costs few messages, far below gRPC's 4 MiB message limit.
	maxChunk = 64 << 10
	// flushDelay bounds how long output waits to be coalesced, so a live
	// log stays live while `make` printing a line at a time costs one
	// message per 100 ms, not one per line.
	flushDelay = 100 * time.Millisecond
	// defaultMaxBuffered bounds a command's unacknowledged output. When it
	// is full the command's pipes are no longer read, so the command
	// blocks on write: slower, but no output is ever dropped.
	defaultMaxBuffered = 16 << 20
	// defaultKillGrace is the wait between SIGTERM and SIGKILL when the
	// master does not say.
	defaultKillGrace = 10 * time.Second
	// orphanGrace is how long what is left of a command's process group
	// after its main process exits gets between SIGTERM and SIGKILL. Short:
	// the step is over, and only stragglers holding its pipes remain.
	orphanGrace = 500 * time.Millisecond
	// pipeDrainTimeout bounds the wait for a command's pipes to close after
	// its group was killed: a process that escaped the group (setsid) may
	// hold them forever, and the step must still finish.
	pipeDrainTimeout = 2 * time.Second
	// readBufSize is how much one read of a command's pipe takes.
	readBufSize = 32 << 10
)

// killRequest asks a running command to stop.
type killRequest struct {
	reason workerproto.FinishReason
	text   string        // the Finished error text
	grace  time.Duration // between SIGTERM and SIGKILL
}

// command is one RunCommand: the process, its buffered output and its
// outcome. It outlives connections: when the stream breaks, the process
// keeps running and its output accumulates until a later session sends it.
//
// Goroutines: run (the owner, started by the Agent and counted in its
// WaitGroup) starts the process and waits for it; it starts and waits for
// two pipe readers and a supervisor that enforces timeouts and kills.
type command struct {
	id          string
	req         *workerproto.RunCommand
	log         *slog.Logger
	notify      func() // wakes the sender: output or Finished is ready
	maxBuffered int

	killCh chan killRequest // to the supervisor; see kill
	exited chan struct{}    // closed once the main process has exited or failed to start

	mu   sync.Mutex
	cond *sync.Cond // signalled when buffered output shrinks or discard is set
	// out holds the chunks not yet acknowledged, in seq order.
	out      []*workerproto.Output
	outBytes int
	// pending is output read but not yet cut into a chunk.
	pending       []byte
	pendingStream workerproto.Stream
	flushTimer    *time.Timer
	nextSeq       uint64 // seq of the next chunk
	sentSeq       uint64 // highest seq sent on the current session
	lastOutput    time.Time
	blocked       bool // a reader waits for buffer space
	killed        *killRequest
	finished      *workerproto.Finished
	finSent       bool // Finished was sent on the current session
	delivered     time.Time
	discard       bool // abandoned: drop output, send nothing
}

func newCommand(req *workerproto.RunCommand, log *slog.Logger, notify func(), maxBuffered int) *command {
	c := &command{
		id:          req.GetCommandId(),
		req:         req,
		log:         log.With("command", req.GetCommandId(), "builder", req.GetBuilder()),
		notify:      notify,
		maxBuffered: maxBuffered,
		killCh:      make(chan killRequest),
		exited:      make(chan struct{}),
		nextSeq:     1,
	}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// workdir resolves and creates the command's working directory,
// DIR/<builder>/<workdir>, refusing names that would leave DIR/<builder>.
func workdir(dir, builder, sub string) (string, error) {
	switch {
	case builder == "" || builder == "." || builder == "..":
		return "", fmt.Errorf("bad builder name %q", builder)
	case strings.ContainsAny(builder, `/\`) || strings.ContainsRune(builder, os.PathSeparator) || filepath.IsAbs(builder) || filepath.VolumeName(builder) != "":
		return "", fmt.Errorf("bad builder name %q: must be one path element", builder)
	}
	if sub == "" {
		sub = "."
	}
	if !filepath.IsLocal(sub) {
		return "", fmt.Errorf("bad workdir %q: must be a relative path inside the builder's directory", sub)
	}
	path := filepath.Join(dir, builder, sub)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return "", fmt.Errorf("create workdir: %w", err)
	}
	return path, nil
}

// environ is the worker's own environment with the command's on top, in
// a stable order.
func environ(extra map[string]string) []string {
	env := os.Environ()
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k]) // later entries win in os/exec
	}
	return env
}

// run starts the command, waits for it and records its Finished. It
// returns when every goroutine of the command has ended.
func (c *command) run(dir string) {
	start := time.Now()
	wd, err := workdir(dir, c.req.GetBuilder(), c.req.GetWorkdir())
	if err == nil && len(c.req.GetArgv()) == 0 {
		err = errors.New("empty argv")
	}
	if err != nil {
		close(c.exited)
		c.finish(-1, start, workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
		return
	}
	proc, outR, errR, err := c.start(wd)
	if err != nil {
		close(c.exited)
		c.finish(-1, start, workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
		return
	}
	c.log.Info("command started", "pid", proc.Process.Pid, "argv0", c.req.GetArgv()[0], "dir", wd)

	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); c.read(outR, workerproto.Stream_STREAM_STDOUT) }()
	go func() { defer readers.Done(); c.read(errR, workerproto.Stream_STREAM_STDERR) }()
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()

	superDone := make(chan struct{})
	go func() { defer close(superDone); c.supervise(proc.Process) }()

	if err := proc.Wait(); err != nil {
		// A non-zero exit is an *exec.ExitError, reported in Finished;
		// anything else is the worker's trouble, not the command's.
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) {
			c.log.Warn("wait for command", "err", err)
		}
	}
	close(c.exited)
	<-superDone

	// The main process is gone; nothing in its group may outlive the step
	// and keep its pipes open. Ask what is left to stop, then make it. The
	// group's id stays reserved while any member lives, so signalling it
	// after the leader was reaped reaches only the stragglers, or nothing.
	if err := terminateGroup(proc.Process); err != nil {
		c.log.Warn("stop leftover processes", "err", err)
	}
	if !waitTimeout(readersDone, orphanGrace) {
		c.log.Info("processes left after the command exited hold its output open; killing them")
	}
	if err := killGroup(proc.Process); err != nil {
		c.log.Warn("kill leftover processes", "err", err)
	}
	if !waitTimeout(readersDone, pipeDrainTimeout) {
		// Closing the read ends makes the readers' Read return.
		c.log.Warn("a process outside the command's group holds its output open; closing the pipes")
	}
	outR.Close()
	errR.Close()
	<-readersDone

	code := proc.ProcessState.ExitCode() // -1 when killed by a signal
	c.mu.Lock()
	k := c.killed
	c.mu.Unlock()
	if k != nil {
		c.finish(code, start, k.reason, k.text)
		return
	}
	c.finish(code, start, workerproto.FinishReason_FINISH_REASON_EXITED, "")
}

// start starts the process with stdout and stderr on pipes of our own:
// os/exec's StdoutPipe would have Wait close them, and a straggler holding
// them is exactly what run must handle after Wait.
func (c *command) start(wd string) (cmd *exec.Cmd, outR, errR *os.File, err error) {
	argv := c.req.GetArgv()
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Dir = wd
	cmd.Env = environ(c.req.GetEnv())
	cmd.Stdin = nil // the null device
	setProcessGroup(cmd)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close() // the child has its copies; ours would keep the pipes open
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return cmd, outR, errR, nil
}

func waitTimeout(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// read copies one of the command's pipes into its output until EOF.
func (c *command) read(f *os.File, s workerproto.Stream) {
	buf := make([]byte, readBufSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			c.write(s, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// write adds output read from stream s, cutting chunks of at most
// maxChunk bytes; it blocks while the buffer is full.
func (c *command) write(s workerproto.Stream, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(data) > 0 {
		for c.outBytes+len(c.pending) >= c.maxBuffered && !c.discard {
			c.blocked = true
			c.cond.Wait()
		}
		c.blocked = false
		c.lastOutput = time.Now()
		if c.discard {
			return
		}
		if len(c.pending) > 0 && c.pendingStream != s {
			c.flushLocked() // keep the interleaving of stdout and stderr
		}
		c.pendingStream = s
		n := min(len(data), maxChunk-len(c.pending))
		c.pending = append(c.pending, data[:n]...)
		data = data[n:]
		if len(c.pending) >= maxChunk {
			c.flushLocked()
		} else if c.flushTimer == nil {
			c.flushTimer = time.AfterFunc(flushDelay, c.flushTimed)
		}
	}
}

func (c *command) flushTimed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushTimer = nil
	c.flushLocked()
}

// flushLocked turns pending output into the next numbered chunk.
func (c *command) flushLocked() {
	if c.flushTimer != nil {
		c.flushTimer.Stop()
		c.flushTimer = nil
	}
	if len(c.pending) == 0 {
		return
	}
	c.out = append(c.out, &workerproto.Output{
		CommandId: c.id,
		Seq:       c.nextSeq,
		Stream:    c.pendingStream,
		Data:      c.pending,
	})
	c.nextSeq++
	c.outBytes += len(c.pending)
	c.pending = nil
	c.notify()
}

// finish records the command's outcome, after its last output.
func (c *command) finish(code int, start time.Time, reason workerproto.FinishReason, text string) {
	c.mu.Lock()
	c.flushLocked()
	c.finished = &workerproto.Finished{
		CommandId:  c.id,
		ExitCode:   int32(code),
		DurationMs: time.Since(start).Milliseconds(),
		Reason:     reason,
		Error:      text,
		LastSeq:    c.nextSeq - 1,
	}
	c.mu.Unlock()
	c.log.Info("command finished", "exit_code", code, "reason", reason.String(), "error", text)
	c.notify()
}

// supervise enforces the command's timeouts and carries out kill requests
// until the main process exits.
func (c *command) supervise(p *os.Process) {
	var noOutput, maxTime, escalate <-chan time.Time
	idleLimit := time.Duration(c.req.GetNoOutputTimeoutMs()) * time.Millisecond
	var idleTimer *time.Timer
	if idleLimit > 0 {
		idleTimer = time.NewTimer(idleLimit)
		defer idleTimer.Stop()
		noOutput = idleTimer.C
	}
	if d := time.Duration(c.req.GetMaxTimeMs()) * time.Millisecond; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		maxTime = t.C
	}
	var escTimer *time.Timer
	var escAt time.Time
	defer func() {
		if escTimer != nil {
			escTimer.Stop()
		}
	}()
	terminate := func(r killRequest) {
		c.mu.Lock()
		if c.killed == nil {
			c.killed = &r
		}
		c.mu.Unlock()
		c.log.Info("stopping command", "why", r.text, "grace", r.grace)
		if err := terminateGroup(p); err != nil {
			c.log.Warn("stop command", "err", err)
		}
		if at := time.Now().Add(r.grace); escTimer == nil || at.Before(escAt) {
			if escTimer != nil {
				escTimer.Stop()
			}
			escAt, escTimer = at, time.NewTimer(r.grace)
			escalate = escTimer.C
		}
	}
	grace := c.killGrace()
	for {
		select {
		case <-c.exited:
			return
		case <-noOutput:
			c.mu.Lock()
			idle, blocked := time.Since(c.lastOutput), c.blocked
			if c.lastOutput.IsZero() {
				idle = idleLimit
			}
			c.mu.Unlock()
			if blocked || idle < idleLimit {
				// Output came, or the command waits on our full buffer,
				// which is not its silence.
				idleTimer.Reset(max(idleLimit-idle, time.Millisecond))
				continue
			}
			noOutput = nil
			terminate(killRequest{
				reason: workerproto.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT,
				text:   fmt.Sprintf("no output for %s: killed", idleLimit),
				grace:  grace,
			})
		case <-maxTime:
			maxTime = nil
			terminate(killRequest{
				reason: workerproto.FinishReason_FINISH_REASON_MAX_TIME,
				text:   fmt.Sprintf("still running after max time %s: killed", time.Duration(c.req.GetMaxTimeMs())*time.Millisecond),
				grace:  grace,
			})
		case r := <-c.killCh:
			terminate(r)
		case <-escalate:
			escalate = nil
			c.log.Info("command still running after SIGTERM; killing its process group")
			if err := killGroup(p); err != nil {
				c.log.Warn("kill command", "err", err)
			}
		}
	}
}

func (c *command) killGrace() time.Duration {
	if ms := c.req.GetKillGraceMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return defaultKillGrace
}

// kill asks the supervisor to stop the command; it does nothing once the
// main process has exited (run then deals with what is left).
func (c *command) kill(r killRequest) {
	select {
	case c.killCh <- r:
	case <-c.exited:
	}
}

// abandon stops the command and drops its output: the master no longer
// wants it, or the worker is stopping.
func (c *command) abandon(text string, grace time.Duration) {
	c.mu.Lock()
	c.discard = true
	c.out, c.outBytes, c.pending = nil, 0, nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.kill(killRequest{reason: workerproto.FinishReason_FINISH_REASON_CANCELLED, text: text, grace: grace})
}

// ack drops output the master has stored, up to and including seq. An ack
// covering last_seq that arrives after Finished was sent marks the command
// delivered; it is still listed in the next hello, briefly, so that a
// master that missed the Finished can ask for it again.
func (c *command) ack(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for i < len(c.out) && c.out[i].GetSeq() <= seq {
		c.outBytes -= len(c.out[i].GetData())
		i++
	}
	if i > 0 {
		c.out = append([]*workerproto.Output(nil), c.out[i:]...)
		c.cond.Broadcast()
	}
	if c.finished != nil && c.finSent && seq >= c.finished.GetLastSeq() && c.delivered.IsZero() {
		c.delivered = time.Now()
	}
}

// resume prepares the command for a new session, which replays whatever
// is unacknowledged.
func (c *command) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sentSeq, c.finSent = 0, false
}

// unsent returns the messages the current session has not yet sent, at
// most limit of them, and counts them as sent.
func (c *command) unsent(limit int) []*workerproto.WorkerMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.discard {
		return nil
	}
	var msgs []*workerproto.WorkerMessage
	for _, o := range c.out {
		if len(msgs) == limit {
			return msgs
		}
		if o.GetSeq() <= c.sentSeq {
			continue
		}
		msgs = append(msgs, &workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Output{Output: o}})
		c.sentSeq = o.GetSeq()
	}
	if c.finished != nil && !c.finSent && len(msgs) < limit {
		msgs = append(msgs, &workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Finished{Finished: c.finished}})
		c.finSent = true
	}
	return msgs
}

// held describes the command for a hello.
func (c *command) held() *workerproto.RunningCommand {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &workerproto.RunningCommand{
		CommandId: c.id,
		NextSeq:   c.nextSeq,
		Finished:  c.finished != nil,
	}
}

// deliveredAt is when the master acknowledged the command's Finished, or
// the zero time.
func (c *command) deliveredAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered
}
