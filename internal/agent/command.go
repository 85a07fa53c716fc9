package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
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
	// defaultMaxBuffered bounds a command's unacknowledged output: the
	// chunks sent and not yet acknowledged. When it is full, no more is
	// cut into chunks until the master catches up: a supervised command
	// keeps writing to its spool on disk, an in-process one (Windows)
	// blocks on write. Either way no output is ever dropped.
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

// outChunk is a numbered chunk not yet acknowledged. Its data is in
// memory for an in-process command, else read back from the spool when
// sent, so that memory stays small however much is unacknowledged.
type outChunk struct {
	chunkEntry
	data []byte
}

// command is one RunCommand: the process, its output and its outcome. It
// outlives connections: when the stream breaks, the process keeps running
// and its output accumulates until a later session sends it. Where a
// supervisor runs it (see command_unix.go), it outlives the worker
// process too.
type command struct {
	id          string
	req         *workerproto.RunCommand
	log         *slog.Logger
	notify      func() // wakes the sender: output or Finished is ready
	maxBuffered int

	killCh chan killRequest // to the supervisor; see kill
	exited chan struct{}    // closed once the main process has exited or failed to start
	sup    supervised       // the supervisor's side; see command_unix.go

	mu   sync.Mutex
	cond *sync.Cond // signalled when buffered output shrinks or discard is set
	// out holds the chunks not yet acknowledged, in seq order.
	out      []outChunk
	outBytes int
	// pending is output read but not yet cut into a chunk; pendingLoc is
	// where it starts in the spool.
	pending       []byte
	pendingStream workerproto.Stream
	pendingLoc    spoolLoc
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
	c.sup.init()
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

// environ is a command's environment, in a stable order: the worker's
// own (what its service manager or shell gave it: PATH, HOME, LANG, …)
// without what describes the worker process rather than the step — PWD
// and OLDPWD, and every DROVER_* variable (a worker started from a shell
// that holds an operator's DROVER_TOKEN, or from another build, must not
// pass it on) — then PWD set to dir, the command's directory, then the
// command's own variables from the master and this worker, which win.
// docs/steps.md lists what a step gets.
func environ(extra map[string]string, dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch key := envKey(name); {
		case key == "PWD", key == "OLDPWD", strings.HasPrefix(key, "DROVER_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PWD="+dir)
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

// envKey is a variable's name as the system compares it: Windows ignores
// case.
func envKey(name string) string {
	if runtime.GOOS == "windows" {
		return strings.ToUpper(name)
	}
	return name
}

// write adds output read from stream s, found at loc in the spool,
// cutting chunks of at most maxChunk bytes; it blocks while the buffer is
// full.
func (c *command) write(s workerproto.Stream, data []byte, loc spoolLoc) {
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
		if len(c.pending) == 0 {
			c.pendingLoc = loc
		}
		c.pendingStream = s
		n := min(len(data), maxChunk-len(c.pending))
		c.pending = append(c.pending, data[:n]...)
		data = data[n:]
		loc.skip += n
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
	ch := outChunk{chunkEntry: chunkEntry{seq: c.nextSeq, loc: c.pendingLoc, n: len(c.pending), stream: c.pendingStream}}
	if c.sup.index != nil {
		// Indexed before it can be sent: a later agent must number the
		// same bytes the same way, whatever this one sent.
		if _, err := c.sup.index.Write(ch.marshal()); err != nil {
			c.log.Error("record an output chunk; a worker restart may replay it under another number", "seq", ch.seq, "err", err)
		}
	} else {
		ch.data = c.pending
	}
	c.out = append(c.out, ch)
	c.nextSeq++
	c.outBytes += len(c.pending)
	c.pending = nil
	c.notify()
}

// finish records the command's outcome, after its last output.
func (c *command) finish(code int, d time.Duration, reason workerproto.FinishReason, text string) {
	c.mu.Lock()
	c.flushLocked()
	c.finished = &workerproto.Finished{
		CommandId:  c.id,
		ExitCode:   int32(code),
		DurationMs: d.Milliseconds(),
		Reason:     reason,
		Error:      text,
		LastSeq:    c.nextSeq - 1,
	}
	c.mu.Unlock()
	c.log.Info("command finished", "exit_code", code, "reason", reason.String(), "error", text)
	c.notify()
}

func (c *command) killGrace() time.Duration {
	if ms := c.req.GetKillGraceMs(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return defaultKillGrace
}

// ack drops output the master has stored, up to and including seq. An ack
// covering last_seq that arrives after Finished was sent marks the command
// delivered; it is still listed in the next hello, briefly, so that a
// master that missed the Finished can ask for it again.
func (c *command) ack(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for i < len(c.out) && c.out[i].seq <= seq {
		c.outBytes -= c.out[i].n
		i++
	}
	if i > 0 {
		c.out = append([]outChunk(nil), c.out[i:]...)
		c.cond.Broadcast()
		c.sup.saveAcked(c.log, seq)
	}
	if c.finished != nil && c.finSent && seq >= c.finished.GetLastSeq() && c.delivered.IsZero() {
		c.delivered = time.Now()
		c.sup.markDelivered(c.log)
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
		if o.seq <= c.sentSeq {
			continue
		}
		data := o.data
		if data == nil {
			var err error
			if data, err = c.sup.read(o.chunkEntry); err != nil {
				// Sending later chunks would leave a gap the master
				// cannot fill; stop here, and retry on the next wake.
				c.log.Error("read output chunk from the spool", "seq", o.seq, "err", err)
				return msgs
			}
		}
		out := &workerproto.Output{CommandId: c.id, Seq: o.seq, Stream: o.stream, Data: data}
		msgs = append(msgs, &workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Output{Output: out}})
		c.sentSeq = o.seq
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

// closeFiles closes the files the command reads and writes, when the
// agent lets go of it.
func (c *command) closeFiles() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sup.closeFiles()
}
