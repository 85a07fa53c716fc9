//go:build unix

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-ci/drover/internal/workerproto"
)

const (
	// tailEvery is how often the agent looks for new output in a spool.
	// Well below flushDelay, so coalescing, not polling, sets the pace.
	tailEvery = 20 * time.Millisecond
	// aliveEvery is how often the agent checks that a command's supervisor
	// still lives, while it has not written exit.json.
	aliveEvery = time.Second
	// reapTimeout bounds the wait for a supervisor to exit after it wrote
	// exit.json, which is the last thing it does.
	reapTimeout = 5 * time.Second
)

// supervised is the agent's side of a command run by a supervisor
// (`drover __supervise DIR/run/<command-id>`): the command's directory,
// the spool it reads chunks back from, and the chunk index it appends to.
// Fields other than detached and once are guarded by the command's mu.
type supervised struct {
	runDir string   // "" for a command that failed before it had one
	spool  *os.File // opened once the supervisor has created it
	index  *os.File // the chunk index, append-only
	acked  uint64   // last seq written to the acked file
	pid    int      // the supervisor's pid, 0 while unknown
	own    bool     // the supervisor is this process's child, reaped with wait4

	// forget, once the command has ended, removes its directory: the
	// master does not want it, or the worker is stopping.
	forget   bool
	detached chan struct{} // closed by detach: the tailer stops, the command lives on
	once     sync.Once
}

func (s *supervised) init() { s.detached = make(chan struct{}) }

// read returns a chunk's data from the spool.
func (s *supervised) read(e chunkEntry) ([]byte, error) {
	if s.spool == nil {
		f, err := os.Open(filepath.Join(s.runDir, spoolFileName))
		if err != nil {
			return nil, fmt.Errorf("open spool: %w", err)
		}
		s.spool = f
	}
	return readSpoolChunk(s.spool, e.loc, e.n)
}

// saveAcked persists the master's latest acknowledgement, so that a
// later worker process replays only what follows it. Losing it only means
// replaying more, which the master dedupes, so it is not synced.
func (s *supervised) saveAcked(log *slog.Logger, seq uint64) {
	if s.runDir == "" || seq <= s.acked {
		return
	}
	if err := os.WriteFile(filepath.Join(s.runDir, ackedFileName), fmt.Appendf(nil, "%d\n", seq), 0o600); err != nil {
		log.Warn("record acknowledged output", "err", err)
		return
	}
	s.acked = seq
}

// markDelivered records that the master acknowledged everything, Finished
// included; a later worker process lists the command only for
// finishedRetention after that.
func (s *supervised) markDelivered(log *slog.Logger) {
	if s.runDir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(s.runDir, deliveredFileName), nil, 0o600); err != nil {
		log.Warn("record delivered command", "err", err)
	}
}

// closeFiles closes the spool and the index; called with c.mu held.
func (s *supervised) closeFiles() {
	if s.spool != nil {
		s.spool.Close()
		s.spool = nil
	}
	if s.index != nil {
		s.index.Close()
		s.index = nil
	}
}

func runDir(dir, id string) string { return filepath.Join(dir, runDirName, id) }

// run starts the command under a supervisor and follows it to its end.
// It returns when the command has finished, or when detach is called.
func (c *command) run(dir string, superArgv []string) {
	start := time.Now()
	startFailed := func(err error) {
		close(c.exited)
		c.finish(-1, time.Since(start), workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
	}
	wd, err := workdir(dir, c.req.GetBuilder(), c.req.GetWorkdir())
	switch {
	case err != nil:
	case len(c.req.GetArgv()) == 0:
		err = errors.New("empty argv")
	case !validCommandID(c.id):
		err = fmt.Errorf("bad command id %q: must be usable as a file name", c.id)
	case len(superArgv) == 0:
		err = errors.New("no supervisor program")
	}
	if err != nil {
		startFailed(err)
		return
	}
	rd := runDir(dir, c.id)
	index, err := c.prepare(rd, wd)
	if err != nil {
		startFailed(err)
		return
	}
	cmd := exec.Command(superArgv[0], append(append([]string(nil), superArgv[1:]...), rd)...)
	cmd.Dir = rd
	// Its own process group: a signal to the worker's group (Ctrl-C, a
	// service manager stopping the worker) must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		index.Close()
		_ = os.RemoveAll(rd)
		startFailed(fmt.Errorf("start supervisor: %w", err))
		return
	}
	pid := cmd.Process.Pid
	// The tailer reaps the supervisor with wait4: it must poll, and
	// os.Process can only wait.
	_ = cmd.Process.Release()
	c.mu.Lock()
	c.sup.runDir, c.sup.index, c.sup.pid, c.sup.own = rd, index, pid, true
	early := c.killed
	c.mu.Unlock()
	c.log.Info("command started", "supervisor", pid, "argv0", c.req.GetArgv()[0], "dir", wd)
	if early != nil {
		c.kill(*early)
	}
	c.tail(spoolLoc{})
}

// prepare creates the command's directory with its spec and an empty
// chunk index.
func (c *command) prepare(rd, wd string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(rd), 0o700); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	if err := os.Mkdir(rd, 0o700); err != nil {
		return nil, fmt.Errorf("create command directory: %w", err)
	}
	spec := commandSpec{
		CommandID:       c.id,
		Builder:         c.req.GetBuilder(),
		Argv:            c.req.GetArgv(),
		Env:             environ(c.req.GetEnv(), wd),
		Workdir:         wd,
		NoOutputTimeout: c.req.GetNoOutputTimeoutMs(),
		MaxTime:         c.req.GetMaxTimeMs(),
		KillGrace:       c.req.GetKillGraceMs(),
	}
	fail := func(err error) (*os.File, error) {
		_ = os.RemoveAll(rd)
		return nil, err
	}
	if err := writeJSONFile(filepath.Join(rd, specFileName), spec); err != nil {
		return fail(err)
	}
	index, err := os.OpenFile(filepath.Join(rd, chunksFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(fmt.Errorf("create chunk index: %w", err))
	}
	return index, nil
}

// tail follows the spool from pos, cutting it into chunks as the buffer
// allows, until the supervisor has written exit.json and every byte of
// the spool is in a chunk; then it records the Finished.
func (c *command) tail(pos spoolLoc) {
	tick := time.NewTicker(tailEvery)
	defer tick.Stop()
	buf := make([]byte, readBufSize)
	nextAliveCheck := time.Now().Add(aliveEvery)
	for {
		// exit.json is written after the spool is closed: seen first, the
		// spool read next is complete.
		st, exited, err := readExit(c.sup.runDir)
		if err != nil {
			c.log.Error("read exit status", "err", err)
		}
		var eof bool
		pos, eof = c.drain(pos, buf)
		if exited && eof {
			close(c.exited)
			c.finish(st.ExitCode, time.Duration(st.DurationMs)*time.Millisecond, st.reason(), st.Error)
			c.ended()
			return
		}
		if !exited && time.Now().After(nextAliveCheck) {
			nextAliveCheck = time.Now().Add(aliveEvery)
			c.checkSupervisor()
		}
		select {
		case <-c.sup.detached:
			return
		case <-tick.C:
		}
	}
}

// drain cuts what the spool holds after pos into chunks, as far as the
// buffer allows; eof reports that all of it was taken.
func (c *command) drain(pos spoolLoc, buf []byte) (spoolLoc, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sup.spool == nil {
		f, err := os.Open(filepath.Join(c.sup.runDir, spoolFileName))
		if errors.Is(err, fs.ErrNotExist) {
			return pos, true
		}
		if err != nil {
			c.log.Error("open spool", "err", err)
			return pos, false
		}
		c.sup.spool = f
	}
	for {
		room := c.maxBuffered - c.outBytes - len(c.pending)
		if c.discard {
			room = readBufSize
		}
		if room <= 0 {
			return pos, false
		}
		r, err := readSpoolRecord(c.sup.spool, pos.rec, buf)
		if errors.Is(err, io.EOF) {
			return pos, true
		}
		if err != nil {
			c.log.Error("read spool", "err", err)
			return pos, false
		}
		n := min(room, len(r.data)-pos.skip)
		c.mu.Unlock()
		c.write(r.stream, r.data[pos.skip:pos.skip+n], pos)
		c.mu.Lock()
		pos.skip += n
		if pos.skip >= len(r.data) {
			pos = spoolLoc{rec: r.at + spoolHeaderSize + int64(len(r.data))}
		}
	}
}

// checkSupervisor makes sure a command whose supervisor died without
// writing exit.json still ends: its process group is killed, and an
// exit status is written on the supervisor's behalf.
func (c *command) checkSupervisor() {
	c.mu.Lock()
	pid, own, rd := c.sup.pid, c.sup.own, c.sup.runDir
	c.mu.Unlock()
	if pid == 0 {
		pid = readPID(filepath.Join(rd, pidFileName))
	}
	if pid != 0 && supervisorAlive(pid, own, rd) {
		return
	}
	if _, ok, _ := readExit(rd); ok {
		return // it finished between the two looks
	}
	c.log.Error("the command's supervisor died; killing the command", "supervisor", pid)
	if cp := readPID(filepath.Join(rd, cmdPIDFileName)); cp != 0 {
		if err := syscall.Kill(-cp, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			c.log.Warn("kill the command's process group", "pgid", cp, "err", err)
		}
	}
	st := exitStatus{ExitCode: -1, Reason: workerproto.FinishReason_FINISH_REASON_CANCELLED.String(),
		Error: "the command's supervisor died: killed"}
	if err := writeJSONFile(filepath.Join(rd, exitFileName), st); err != nil {
		c.log.Error("write exit status", "err", err)
	}
}

// supervisorAlive reports whether pid is still the supervisor of the
// command in rd. Its own child is asked with wait4, which also reaps it;
// another's (a previous worker process's) is checked in /proc where there
// is one, so that a reused pid is not taken for it.
func supervisorAlive(pid int, own bool, rd string) bool {
	if own {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(pid, &ws, wnohang, nil)
		return err == nil && wpid == 0
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc (macOS, FreeBSD): trust kill
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true
	}
	return bytes.Contains(cmdline, []byte("__supervise")) && bytes.Contains(cmdline, []byte(rd))
}

// ended reaps the supervisor, which exits right after exit.json, and
// removes the command's directory if it is to be forgotten.
func (c *command) ended() {
	c.mu.Lock()
	pid, own, forget := c.sup.pid, c.sup.own, c.sup.forget
	c.mu.Unlock()
	if own {
		deadline := time.Now().Add(reapTimeout)
		for supervisorAlive(pid, true, "") && time.Now().Before(deadline) {
			time.Sleep(tailEvery)
		}
	}
	if forget {
		c.dispose()
	}
}

// dispose closes the command's files and removes its directory: nothing
// of it is left to send.
func (c *command) dispose() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sup.closeFiles()
	if c.sup.runDir == "" {
		return
	}
	if err := os.RemoveAll(c.sup.runDir); err != nil {
		c.log.Warn("remove command directory", "err", err)
	}
}

// kill asks the supervisor to stop the command: the reason goes to
// cancel.json, then SIGTERM to the supervisor's process group. It does
// nothing once the command has ended.
func (c *command) kill(r killRequest) {
	select {
	case <-c.exited:
		return
	default:
	}
	c.mu.Lock()
	pid, rd := c.sup.pid, c.sup.runDir
	if rd == "" {
		// Not started yet: run delivers the request once it has.
		if c.killed == nil {
			c.killed = &r
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	req := cancelRequest{Reason: r.reason.String(), Error: r.text, GraceMs: r.grace.Milliseconds()}
	if err := writeJSONFile(filepath.Join(rd, cancelFileName), req); err != nil {
		c.log.Error("write cancel request", "err", err)
	}
	if pid == 0 {
		pid = readPID(filepath.Join(rd, pidFileName))
	}
	if pid == 0 {
		return // no supervisor known: the tailer will find it dead
	}
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		c.log.Warn("signal supervisor", "pid", pid, "err", err)
	}
}

// abandon stops the command and drops its output: the master no longer
// wants it, or the worker is stopping. Its directory goes once it ended.
func (c *command) abandon(text string, grace time.Duration) {
	c.mu.Lock()
	c.discard = true
	c.sup.forget = true
	c.out, c.outBytes, c.pending = nil, 0, nil
	c.cond.Broadcast()
	finished := c.finished != nil
	c.mu.Unlock()
	if finished {
		c.dispose()
		return
	}
	c.kill(killRequest{reason: workerproto.FinishReason_FINISH_REASON_CANCELLED, text: text, grace: grace})
}

// detach stops following the command and leaves it running, as a worker
// process that dies would: a test hook.
func (c *command) detach() {
	c.sup.once.Do(func() { close(c.sup.detached) })
}

// recover adopts the commands a previous worker process left in DIR/run:
// each becomes a command as it was, its numbered chunks rebuilt from the
// index, so that the hello lists it and the welcome decides its fate.
// What cannot be read is killed and removed.
func (a *Agent) recover() {
	root := filepath.Join(a.dir, runDirName)
	entries, err := os.ReadDir(root)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Error("list commands of a previous worker process", "err", err)
		}
		return
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rd := filepath.Join(root, e.Name())
		c, err := a.recoverCommand(e.Name(), rd)
		if err != nil {
			a.log.Error("drop a command of a previous worker process", "command", e.Name(), "err", err)
			killLeftovers(rd)
			if err := os.RemoveAll(rd); err != nil {
				a.log.Warn("remove command directory", "err", err)
			}
			continue
		}
		if c == nil {
			continue
		}
		a.mu.Lock()
		a.cmds[c.id] = c
		a.mu.Unlock()
	}
}

// killLeftovers kills the process groups of a command directory's
// supervisor and command, if they still run.
func killLeftovers(rd string) {
	if pid := readPID(filepath.Join(rd, pidFileName)); pid != 0 && supervisorAlive(pid, false, rd) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		if cp := readPID(filepath.Join(rd, cmdPIDFileName)); cp != 0 {
			_ = syscall.Kill(-cp, syscall.SIGKILL)
		}
	}
}

// recoverCommand rebuilds one command from its directory; nil if it was
// delivered long enough ago to be forgotten.
func (a *Agent) recoverCommand(id, rd string) (*command, error) {
	var spec commandSpec
	if err := readJSON(filepath.Join(rd, specFileName), &spec); err != nil {
		return nil, err
	}
	if spec.CommandID != id {
		return nil, fmt.Errorf("spec names command %q", spec.CommandID)
	}
	var delivered time.Time
	if fi, err := os.Stat(filepath.Join(rd, deliveredFileName)); err == nil {
		delivered = fi.ModTime()
		if time.Since(delivered) > finishedRetention {
			if err := os.RemoveAll(rd); err != nil {
				return nil, fmt.Errorf("remove delivered command: %w", err)
			}
			return nil, nil
		}
	}
	entries, err := readChunkIndex(filepath.Join(rd, chunksFileName))
	if err != nil {
		return nil, err
	}
	index, err := os.OpenFile(filepath.Join(rd, chunksFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open chunk index: %w", err)
	}
	req := &workerproto.RunCommand{CommandId: id, Builder: spec.Builder, Argv: spec.Argv, KillGraceMs: spec.KillGrace}
	c := newCommand(req, a.log, a.notify, a.maxBuffered)
	c.sup.runDir, c.sup.index = rd, index
	c.sup.pid = readPID(filepath.Join(rd, pidFileName))
	c.sup.acked = readAcked(rd)
	c.delivered = delivered
	c.nextSeq = uint64(len(entries)) + 1
	var pos spoolLoc
	if len(entries) > 0 {
		f, err := os.Open(filepath.Join(rd, spoolFileName))
		if err != nil {
			index.Close()
			return nil, fmt.Errorf("open spool: %w", err)
		}
		c.sup.spool = f
		last := entries[len(entries)-1]
		if pos, err = advanceSpool(f, last.loc, last.n); err != nil {
			c.sup.closeFiles()
			return nil, err
		}
	}
	for _, e := range entries {
		if e.seq > c.sup.acked {
			c.out = append(c.out, outChunk{chunkEntry: e})
			c.outBytes += e.n
		}
	}
	a.log.Info("adopting a command of a previous worker process", "command", id, "next_seq", c.nextSeq, "acked", c.sup.acked, "supervisor", c.sup.pid)
	a.cmdWG.Add(1)
	go func() {
		defer a.cmdWG.Done()
		c.tail(pos)
	}()
	return c, nil
}
