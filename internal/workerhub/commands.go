package workerhub

// The hub ingests what running commands send: it keeps the table of the
// commands the master runs on workers now, appends their output to its
// log in sequence (dropping a replay, refusing a gap), makes it durable
// and records how far each log got before it acknowledges the output to
// the worker, stores the links a command publishes, and hands a
// command's end to the build runner waiting for it.
//
//	runner ──Track──▶ table ◀──output(seq)/finished/step update── worker
//	                    │ flusher: Flush, Stat ──▶ log store
//	                    │          SetLogProgress ──▶ store (one transaction)
//	                    └────────── Ack(seq) ──▶ worker
//
// The order is what makes a restart lose nothing: output a worker forgets
// (acked) is output a restarted master knows it has (recorded progress),
// never less.

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Logs is where commands' output goes: the log store.
type Logs interface {
	Append(id int64, p []byte) error
	Flush(id int64) error
	Stat(id int64) (logstore.Info, error)
}

// Publisher tells the rest of the master that something changed.
type Publisher interface {
	Publish(events.Event)
}

// DefaultFlushInterval is how often partial log chunks are written and
// acked: short enough that a live log feels live, long enough to batch
// output.
const DefaultFlushInterval = 200 * time.Millisecond

// storeTimeout bounds each store write the hub makes for a command: a
// stuck database must not hold a session's receive loop or the flusher
// for ever. Output not recorded is not acked, so the worker keeps it.
const storeTimeout = 10 * time.Second

// StdoutCapture bounds the stdout a command keeps for setting properties:
// properties are short values, not whole logs.
const StdoutCapture = 64 << 10

// Command is one step's command in flight on a worker. The runner makes it
// with Track and reads its end from Done; the hub feeds it.
type Command struct {
	ID     string
	Worker string
	LogID  int64
	Run    *pb.RunCommand

	done     chan *pb.Finished // receives the finish once
	reattach chan struct{}     // signalled when the worker comes back holding it
	lost     chan struct{}     // closed when the worker came back without it
	lostOnce sync.Once

	mu       sync.Mutex
	next     uint64 // next sequence number expected
	appended uint64 // last sequence number in the log store
	acked    uint64 // last sequence number acknowledged to the worker
	stdout   []byte
	finished bool
	// skip is how many bytes of replayed output the log already holds
	// (written before a master restart): dropped before appending.
	skip int64
	// What the command published about its step (`drover step url`,
	// `drover step property`).
	urls  map[string]string
	props drover.Properties
}

// Done receives the command's Finished, once.
func (c *Command) Done() <-chan *pb.Finished { return c.done }

// Reattached is signalled when the command's worker comes back on a new
// session still running it.
func (c *Command) Reattached() <-chan struct{} { return c.reattach }

// Lost is closed when the command's worker came back without it.
func (c *Command) Lost() <-chan struct{} { return c.lost }

// Stdout returns the first StdoutCapture bytes of the command's stdout.
func (c *Command) Stdout() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.stdout...)
}

// Published returns copies of the links and properties the command
// published about its step.
func (c *Command) Published() (map[string]string, drover.Properties) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.urls), maps.Clone(c.props)
}

func (c *Command) markLost() { c.lostOnce.Do(func() { close(c.lost) }) }

// commands is the table of commands in flight, by ID.
type commands struct {
	mu   sync.Mutex
	byID map[string]*Command
	// outBytes counts the output bytes received, for metrics.
	outBytes atomic.Uint64
}

// Track records a command in flight on worker, its output going to log
// logID from sequence number next on, the first skip bytes of it being in
// the log already (a re-attached command's replay). Track it before the
// command is sent, or, for a re-attached one, before its worker can
// connect, so that no output is dropped as unknown.
func (h *Hub) Track(run *pb.RunCommand, worker string, logID int64, next uint64, skip int64) *Command {
	c := &Command{
		ID: run.GetCommandId(), Worker: worker, LogID: logID, Run: run,
		next: next, appended: next - 1, acked: next - 1, skip: skip,
		done: make(chan *pb.Finished, 1), reattach: make(chan struct{}, 1), lost: make(chan struct{}),
	}
	h.cmds.mu.Lock()
	h.cmds.byID[c.ID] = c
	h.cmds.mu.Unlock()
	return c
}

// Forget drops c from the table: later messages about it are dropped.
func (h *Hub) Forget(c *Command) {
	h.cmds.mu.Lock()
	defer h.cmds.mu.Unlock()
	if h.cmds.byID[c.ID] == c {
		delete(h.cmds.byID, c.ID)
	}
}

// Tracked returns the command of that ID in flight on worker.
func (h *Hub) Tracked(worker, id string) (*Command, bool) {
	h.cmds.mu.Lock()
	defer h.cmds.mu.Unlock()
	c, ok := h.cmds.byID[id]
	if !ok || c.Worker != worker {
		return nil, false
	}
	return c, true
}

// OutputBytes is how many bytes of command output the hub has received.
func (h *Hub) OutputBytes() uint64 { return h.cmds.outBytes.Load() }

// attach decides, for a worker that connected holding the commands held,
// which to keep: those the table has. They are told their worker is back;
// the table's other commands on that worker are lost.
func (h *Hub) attach(worker string, held []*pb.RunningCommand) []string {
	heldSet := make(map[string]bool, len(held))
	for _, r := range held {
		heldSet[r.GetCommandId()] = true
	}
	var keep []string
	h.cmds.mu.Lock()
	defer h.cmds.mu.Unlock()
	for id, c := range h.cmds.byID {
		if c.Worker != worker {
			continue
		}
		if !heldSet[id] {
			c.markLost()
			continue
		}
		keep = append(keep, id)
		select {
		case c.reattach <- struct{}{}:
		default:
		}
	}
	return keep
}

// command is the table's command id, which must be worker's.
func (h *Hub) command(s *Session, id string) (*Command, error) {
	h.cmds.mu.Lock()
	c := h.cmds.byID[id]
	h.cmds.mu.Unlock()
	if c != nil && c.Worker != s.Name {
		return nil, fmt.Errorf("command %s belongs to worker %s", id, c.Worker)
	}
	return c, nil
}

// output appends a chunk to its command's log, dropping chunks seen
// before (a replay after reconnect) and refusing a gap. The log's size
// and the sequence number change together under c.mu, which persist
// holds too, so that the pair a restarted master relies on is exact.
func (h *Hub) output(s *Session, o *pb.Output) error {
	c, err := h.command(s, o.GetCommandId())
	if err != nil {
		return err
	}
	if c == nil {
		h.logger.Debug("output for an unknown command dropped", "worker", s.Name, "command", o.GetCommandId())
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case o.GetSeq() < c.next:
		return nil // already stored: a replay
	case o.GetSeq() > c.next:
		return fmt.Errorf("sequence gap: got %d, want %d", o.GetSeq(), c.next)
	case c.finished:
		return fmt.Errorf("output after finish")
	}
	data := o.GetData()
	if c.skip > 0 { // a replay of output the log already holds
		n := min(c.skip, int64(len(data)))
		c.skip -= n
		data = data[n:]
	}
	if err := h.logs.Append(c.LogID, data); err != nil {
		// Keep the stream: the worker replays what is not acknowledged.
		h.logger.Error("append log", "log", c.LogID, "err", err)
		return nil
	}
	c.next++
	c.appended = o.GetSeq()
	h.cmds.outBytes.Add(uint64(len(o.GetData())))
	if o.GetStream() == pb.Stream_STREAM_STDOUT && len(c.stdout) < StdoutCapture {
		d := o.GetData()
		if room := StdoutCapture - len(c.stdout); len(d) > room {
			d = d[:room]
		}
		c.stdout = append(c.stdout, d...)
	}
	return nil
}

// finished hands a command's end to the runner waiting for it.
func (h *Hub) finished(s *Session, f *pb.Finished) error {
	c, err := h.command(s, f.GetCommandId())
	if err != nil || c == nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return nil // a replay
	}
	if f.GetLastSeq() != c.next-1 {
		return fmt.Errorf("finished at sequence %d, but output is stored up to %d", f.GetLastSeq(), c.next-1)
	}
	c.finished = true
	c.done <- f
	return nil
}

// stepUpdate stores a running command's links on its step at once (and
// tells the build page), and keeps its properties for the runner, which
// sets them when the step ends so that the later steps interpolate them.
// A link or property that breaks the rules is logged and dropped; the
// stream stays up, since what a build's command says is not the worker's
// fault. An update may come twice (a worker resends after a reconnect):
// applying it again changes nothing.
func (h *Hub) stepUpdate(ctx context.Context, s *Session, u *pb.StepUpdate) error {
	c, err := h.command(s, u.GetCommandId())
	if err != nil {
		return err
	}
	if c == nil {
		h.logger.Debug("step update for an unknown command dropped", "worker", s.Name, "command", u.GetCommandId())
		return nil
	}
	build, step := c.Run.GetBuildId(), int(c.Run.GetStep())
	log := h.logger.With("worker", s.Name, "command", c.ID, "build", build, "step", step)
	changed := false
	for name, url := range u.GetUrls() {
		if err := drover.CheckStepURL(name, url); err != nil {
			log.Warn("link from a running command dropped", "name", name, "err", err)
			continue
		}
		c.mu.Lock()
		same := c.urls[name] == url
		c.mu.Unlock()
		if same {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err := h.store.SetStepURL(sctx, build, step, name, url)
		cancel()
		if err != nil {
			log.Warn("link from a running command not stored", "name", name, "err", err)
			continue
		}
		c.mu.Lock()
		if c.urls == nil {
			c.urls = make(map[string]string)
		}
		c.urls[name] = url
		c.mu.Unlock()
		changed = true
	}
	for key, value := range u.GetProperties() {
		if err := drover.CheckStepProperty(key, value); err != nil {
			log.Warn("property from a running command dropped", "err", err)
			continue
		}
		c.mu.Lock()
		if c.props == nil {
			c.props = make(drover.Properties)
		}
		c.props[key] = value
		c.mu.Unlock()
	}
	if changed && h.events != nil {
		h.events.Publish(events.Event{Type: events.StepUpdated, BuildID: build, Step: step, Worker: s.Name})
	}
	return nil
}

// persist makes c's appended output durable in the log store and returns
// the sequence number it reaches with the log's size just after it, or
// false if there is nothing new. It holds c.mu throughout, as output does
// while it appends, so that the size belongs to exactly that sequence
// number: a restarted master relies on the pair.
func (h *Hub) persist(c *Command) (uint64, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.appended == c.acked {
		return 0, 0, false
	}
	if err := h.logs.Flush(c.LogID); err != nil {
		h.logger.Error("flush log", "log", c.LogID, "err", err)
		return 0, 0, false
	}
	info, err := h.logs.Stat(c.LogID)
	if err != nil {
		h.logger.Error("stat log", "log", c.LogID, "err", err)
		return 0, 0, false
	}
	return c.appended, info.Bytes, true
}

// ack tells c's worker the output up to seq is stored; called only after
// the log's progress is recorded, so a restarted master knows it too.
func (h *Hub) ack(c *Command, seq uint64) {
	s, ok := h.Session(c.Worker)
	if !ok || s.Ack(c.ID, seq) != nil {
		return // acked again at the next flush, or replayed and deduplicated
	}
	c.mu.Lock()
	if seq > c.acked {
		c.acked = seq
	}
	c.mu.Unlock()
}

// Flush makes the output of the commands given durable, records how far
// each log got in one store transaction, and only then acks the workers.
// With no commands given it flushes every command in flight.
func (h *Hub) Flush(ctx context.Context, cs ...*Command) error {
	if len(cs) == 0 {
		h.cmds.mu.Lock()
		cs = make([]*Command, 0, len(h.cmds.byID))
		for _, c := range h.cmds.byID {
			cs = append(cs, c)
		}
		h.cmds.mu.Unlock()
	}
	var progress []drover.Log
	var flushed []*Command
	var seqs []uint64
	for _, c := range cs {
		if seq, bytes, ok := h.persist(c); ok {
			progress = append(progress, drover.Log{ID: c.LogID, Seq: seq, SeqBytes: bytes})
			flushed, seqs = append(flushed, c), append(seqs, seq)
		}
	}
	if len(progress) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := h.store.SetLogProgress(sctx, progress); err != nil {
		return fmt.Errorf("store log progress: %w", err) // no acks: the workers keep the output
	}
	for i, c := range flushed {
		h.ack(c, seqs[i])
	}
	return nil
}

// Complete makes a finished command's output durable and lets its worker
// forget it. The runner records the step's end (and the log's) itself.
func (h *Hub) Complete(c *Command, f *pb.Finished) error {
	if err := h.logs.Flush(c.LogID); err != nil && drover.KindOf(err) != drover.NotFound {
		return fmt.Errorf("flush log %d: %w", c.LogID, err)
	}
	if s, ok := h.Session(c.Worker); ok {
		_ = s.AckFinished(c.ID, f.GetLastSeq()) // unacked, it is sent again and acked after a reconnect
	}
	return nil
}

// RunFlusher flushes every command in flight each flush interval until ctx
// is done.
func (h *Hub) RunFlusher(ctx context.Context) {
	t := time.NewTicker(h.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := h.Flush(ctx); err != nil && ctx.Err() == nil {
				h.logger.Error("flush command output", "err", err)
			}
		}
	}
}
