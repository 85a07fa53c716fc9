//go:build windows

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// On Windows a command runs in the worker process, with pipes: there are
// no process groups to hand to a supervisor, so a command dies with the
// worker process, and its output is buffered in memory.

// supervised is empty on Windows: no command has a supervisor.
type supervised struct {
	index *os.File // always nil: chunks keep their data in memory
}

func (supervised) read(chunkEntry) ([]byte, error) {
	return nil, errors.New("no spool on this platform")
}
func (supervised) init()                          {}
func (supervised) closeFiles()                    {}
func (supervised) saveAcked(*slog.Logger, uint64) {}
func (supervised) markDelivered(*slog.Logger)     {}

// Supervise is the supervisor of `drover __supervise`, which Windows does
// not use.
func Supervise(ctx context.Context, dir string) error {
	return drover.Errorf(drover.Invalid, "supervise %s: commands are not supervised on Windows", dir)
}

// recover finds nothing on Windows: commands do not outlive the worker.
func (a *Agent) recover() {}

// detach is the test hook of a worker that dies; on Windows its commands
// die with it, so it kills them.
func (c *command) detach() {
	c.abandon("worker stopping: killed", shutdownGrace)
}

// dispose forgets a command's files; an in-process command has none.
func (c *command) dispose() {}

// run starts the command, waits for it and records its Finished. It
// returns when every goroutine of the command has ended.
func (c *command) run(dir string, _ []string) {
	start := time.Now()
	wd, err := workdir(dir, c.req.GetBuilder(), c.req.GetWorkdir())
	if err == nil && len(c.req.GetArgv()) == 0 {
		err = errors.New("empty argv")
	}
	if err != nil {
		close(c.exited)
		c.finish(-1, time.Since(start), workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
		return
	}
	proc, outR, errR, err := c.start(wd)
	if err != nil {
		close(c.exited)
		c.finish(-1, time.Since(start), workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
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
		c.finish(code, time.Since(start), k.reason, k.text)
		return
	}
	c.finish(code, time.Since(start), workerproto.FinishReason_FINISH_REASON_EXITED, "")
}

// start starts the process with stdout and stderr on pipes of our own:
// os/exec's StdoutPipe would have Wait close them, and a straggler holding
// them is exactly what run must handle after Wait.
func (c *command) start(wd string) (cmd *exec.Cmd, outR, errR *os.File, err error) {
	argv := c.req.GetArgv()
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Dir = wd
	cmd.Env = environ(c.req.GetEnv(), wd)
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

// read copies one of the command's pipes into its output until EOF.
func (c *command) read(f *os.File, s workerproto.Stream) {
	buf := make([]byte, readBufSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			c.write(s, buf[:n], spoolLoc{})
		}
		if err != nil {
			return
		}
	}
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
