//go:build unix

package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// Supervise runs the command described by dir/spec.json to its end: it is
// `drover __supervise DIR/run/<command-id>`, started by the agent in a
// process group of its own. It spools the command's output to
// dir/out.spool, enforces its timeouts, stops it when sent SIGTERM (for
// the reason in dir/cancel.json), kills whatever the command left running
// when it exits, and writes dir/exit.json last. It needs nothing of the
// agent but the directory, so it outlives a worker process that dies.
//
// The command runs in a process group of its own, not the supervisor's:
// the supervisor must survive the SIGKILL that ends the command's group,
// to write exit.json after it. ctx ending counts as a SIGTERM.
func Supervise(ctx context.Context, dir string) error {
	var spec commandSpec
	if err := readJSON(filepath.Join(dir, specFileName), &spec); err != nil {
		return drover.Errorf(drover.Invalid, "supervise %s: %w", dir, err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, superLogFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("supervise %s: open log: %w", dir, err)
	}
	defer logf.Close()
	log := slog.New(slog.NewTextHandler(logf, nil)).With("command", spec.CommandID)

	// Caught, not ignored: an ignored signal would stay ignored in the
	// command too, across exec.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := writePID(filepath.Join(dir, pidFileName), os.Getpid()); err != nil {
		return fmt.Errorf("supervise %s: %w", dir, err)
	}
	s := &supervisor{dir: dir, spec: spec, log: log, sigs: sigs}
	st := s.run(ctx)
	if err := writeJSONFile(filepath.Join(dir, exitFileName), st); err != nil {
		log.Error("write exit status", "err", err)
		return fmt.Errorf("supervise %s: %w", dir, err)
	}
	log.Info("command finished", "exit_code", st.ExitCode, "reason", st.Reason, "error", st.Error)
	return nil
}

type supervisor struct {
	dir  string
	spec commandSpec
	log  *slog.Logger
	sigs <-chan os.Signal

	mu         sync.Mutex
	lastOutput time.Time
	spoolErr   error
}

func (s *supervisor) run(ctx context.Context) exitStatus {
	start := time.Now()
	fail := func(err error) exitStatus {
		return exitStatus{ExitCode: -1, Reason: workerproto.FinishReason_FINISH_REASON_START_FAILED.String(),
			DurationMs: time.Since(start).Milliseconds(), Error: err.Error()}
	}
	if len(s.spec.Argv) == 0 {
		return fail(errors.New("empty argv"))
	}
	spool, err := os.OpenFile(filepath.Join(s.dir, spoolFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(fmt.Errorf("open spool: %w", err))
	}
	defer spool.Close()
	w := &spoolWriter{f: spool}

	cmd := exec.Command(s.spec.Argv[0], s.spec.Argv[1:]...)
	cmd.Dir = s.spec.Workdir
	cmd.Env = s.spec.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("stdout pipe: %w", err))
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fail(fmt.Errorf("stderr pipe: %w", err))
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fail(fmt.Errorf("start %s: %w", s.spec.Argv[0], err))
	}
	p := cmd.Process
	if err := writePID(filepath.Join(s.dir, cmdPIDFileName), p.Pid); err != nil {
		s.log.Error("record the command's pid", "err", err)
	}
	s.log.Info("command started", "pid", p.Pid, "argv0", s.spec.Argv[0], "dir", s.spec.Workdir)

	// Both readers write to one spool, a record per read, so the
	// interleaving of stdout and stderr is kept.
	var spoolMu sync.Mutex
	var readers sync.WaitGroup
	for _, r := range []struct {
		f *os.File
		s workerproto.Stream
	}{{outR, workerproto.Stream_STREAM_STDOUT}, {errR, workerproto.Stream_STREAM_STDERR}} {
		readers.Go(func() {
			buf := make([]byte, readBufSize)
			for {
				n, err := r.f.Read(buf)
				if n > 0 {
					spoolMu.Lock()
					werr := w.write(r.s, buf[:n])
					spoolMu.Unlock()
					s.mu.Lock()
					s.lastOutput = time.Now()
					if werr != nil && s.spoolErr == nil {
						s.spoolErr = werr
					}
					s.mu.Unlock()
				}
				if err != nil {
					return
				}
			}
		})
	}
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()

	exited := make(chan struct{})
	var killed *exitStatus
	superDone := make(chan struct{})
	go func() { defer close(superDone); killed = s.watch(ctx, p, exited) }()

	if err := cmd.Wait(); err != nil {
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) {
			s.log.Warn("wait for command", "err", err)
		}
	}
	close(exited)
	<-superDone

	// The main process is gone; nothing of its group may outlive the step
	// and keep its pipes open. The group's id stays reserved while any
	// member lives, so signalling it reaches only stragglers, or nothing.
	if err := terminateGroup(p); err != nil {
		s.log.Warn("stop leftover processes", "err", err)
	}
	if !waitTimeout(readersDone, orphanGrace) {
		s.log.Info("processes left after the command exited hold its output open; killing them")
	}
	if err := killGroup(p); err != nil {
		s.log.Warn("kill leftover processes", "err", err)
	}
	if !waitTimeout(readersDone, pipeDrainTimeout) {
		s.log.Warn("a process outside the command's group holds its output open; closing the pipes")
	}
	outR.Close()
	errR.Close()
	<-readersDone

	st := exitStatus{
		ExitCode:   cmd.ProcessState.ExitCode(),
		Reason:     workerproto.FinishReason_FINISH_REASON_EXITED.String(),
		DurationMs: time.Since(start).Milliseconds(),
	}
	if killed != nil {
		st.Reason, st.Error = killed.Reason, killed.Error
	}
	s.mu.Lock()
	if s.spoolErr != nil {
		// The command ran, but part of its output is lost: say so rather
		// than report a clean run.
		st.Error = joinText(st.Error, "output lost: "+s.spoolErr.Error())
	}
	s.mu.Unlock()
	return st
}

func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// watch enforces the timeouts and carries out stop requests until the
// main process exits; it returns why the command was stopped, or nil.
func (s *supervisor) watch(ctx context.Context, p *os.Process, exited <-chan struct{}) *exitStatus {
	var noOutput, maxTime, escalate <-chan time.Time
	idleLimit := time.Duration(s.spec.NoOutputTimeout) * time.Millisecond
	var idleTimer *time.Timer
	if idleLimit > 0 {
		idleTimer = time.NewTimer(idleLimit)
		defer idleTimer.Stop()
		noOutput = idleTimer.C
	}
	if d := time.Duration(s.spec.MaxTime) * time.Millisecond; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		maxTime = t.C
	}
	grace := defaultKillGrace
	if s.spec.KillGrace > 0 {
		grace = time.Duration(s.spec.KillGrace) * time.Millisecond
	}
	var killed *exitStatus
	var escTimer *time.Timer
	var escAt time.Time
	defer func() {
		if escTimer != nil {
			escTimer.Stop()
		}
	}()
	terminate := func(reason workerproto.FinishReason, text string, grace time.Duration) {
		if killed == nil {
			killed = &exitStatus{Reason: reason.String(), Error: text}
		}
		s.log.Info("stopping command", "why", text, "grace", grace)
		if err := terminateGroup(p); err != nil {
			s.log.Warn("stop command", "err", err)
		}
		if at := time.Now().Add(grace); escTimer == nil || at.Before(escAt) {
			if escTimer != nil {
				escTimer.Stop()
			}
			escAt, escTimer = at, time.NewTimer(grace)
			escalate = escTimer.C
		}
	}
	// One SIGTERM may arrive twice, as the signal and as ctx ending (the
	// drover binary's main catches SIGTERM too): a request already acted
	// on is not acted on again.
	lastRequest := "unset"
	cancelled := func() {
		path := filepath.Join(s.dir, cancelFileName)
		key := "none"
		if fi, err := os.Stat(path); err == nil {
			key = fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
		}
		if key == lastRequest {
			return
		}
		lastRequest = key
		var req cancelRequest
		err := readJSON(path, &req)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("read cancel request", "err", err)
			}
			req = cancelRequest{Error: "supervisor terminated: killed", GraceMs: grace.Milliseconds()}
		}
		reason := workerproto.FinishReason_FINISH_REASON_CANCELLED
		if v, ok := workerproto.FinishReason_value[req.Reason]; ok {
			reason = workerproto.FinishReason(v)
		}
		g := time.Duration(req.GraceMs) * time.Millisecond
		if g <= 0 {
			g = grace
		}
		terminate(reason, req.Error, g)
	}
	done := ctx.Done()
	for {
		select {
		case <-exited:
			return killed
		case <-done:
			done = nil
			cancelled()
		case sig := <-s.sigs:
			if sig == syscall.SIGHUP {
				continue // a closed terminal is no reason to stop a build
			}
			cancelled()
		case <-noOutput:
			s.mu.Lock()
			idle := idleLimit
			if !s.lastOutput.IsZero() {
				idle = time.Since(s.lastOutput)
			}
			s.mu.Unlock()
			if idle < idleLimit {
				idleTimer.Reset(idleLimit - idle)
				continue
			}
			noOutput = nil
			terminate(workerproto.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT, fmt.Sprintf("no output for %s: killed", idleLimit), grace)
		case <-maxTime:
			maxTime = nil
			terminate(workerproto.FinishReason_FINISH_REASON_MAX_TIME,
				fmt.Sprintf("still running after max time %s: killed", time.Duration(s.spec.MaxTime)*time.Millisecond), grace)
		case <-escalate:
			escalate = nil
			s.log.Info("command still running after SIGTERM; killing its process group")
			if err := killGroup(p); err != nil {
				s.log.Warn("kill command", "err", err)
			}
		}
	}
}
