package master

// A site is the masters that share one PostgreSQL database. Each claims
// requests from the shared queue for its own workers and drives the builds
// it claimed; the store says which master drives which build. What happens
// on one master and matters to the others crosses as a notice (LISTEN/
// NOTIFY): events for the web UIs, a cancel for the build's master, a
// reload. Every master beats a heartbeat; when one stops beating for the
// site timeout, the others take over its running builds, exactly as a
// restarted master takes over its own: the commands run on, their workers
// reconnect to another master of the site, which re-attaches them.
//
// Liveness is judged by the database's clock (store.Heartbeat,
// drover.Master.SinceBeat), never by comparing two masters' clocks. A
// master that cannot beat fences itself on its own monotonic clock: once
// half the site timeout has passed since its last heartbeat was taken, it
// lets go of its builds and workers and claims nothing, well before the
// others may take over. And every write of a build carries its driver's
// ID (store.BuildWriter), so a late write of a fenced master changes
// nothing.
//
// With SQLite the site is one master: nothing crosses, and a restarted
// master takes over the builds it left.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// masterIDFile keeps a master's ID across restarts, so that a restarted
// master takes its own builds back at once instead of waiting for its old
// heartbeat to go stale.
const masterIDFile = "master-id"

// loadMasterID reads the master's ID from dir, making one on first start:
// the host name and a random suffix, readable in logs and on the site page.
func loadMasterID(dir string) (string, error) {
	path := filepath.Join(dir, masterIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read master ID: %w", err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "master"
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	id := host + "-" + hex.EncodeToString(r[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write master ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write master ID: %w", err)
	}
	return id, nil
}

// siteStore is what the site part keeps in the store.
type siteStore interface {
	Heartbeat(ctx context.Context, m *drover.Master) error
	ListMasters(ctx context.Context) ([]drover.Master, error)
	RemoveMaster(ctx context.Context, id string) error
	AdoptBuild(ctx context.Context, id int64, from, to string) (bool, error)
	MarkDisconnected(ctx context.Context, master string) error
	GetBuild(ctx context.Context, id int64) (*drover.Build, error)
	ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error)
	Notify(ctx context.Context, payload []byte) error
	Listen(ctx context.Context, fn func(payload []byte), lost func()) error
}

// notice is what crosses between the masters of a site. Origin lets a
// master ignore its own notices, which PostgreSQL delivers to it too.
type notice struct {
	Origin string        `json:"o"`
	Kind   string        `json:"k"`
	Event  *events.Event `json:"e,omitempty"`
	// Build and Reason: a cancel, for the build's master.
	Build  int64  `json:"b,omitempty"`
	Reason string `json:"r,omitempty"`
	// Hash: a reload, the config hash the asking master loaded.
	Hash string `json:"h,omitempty"`
}

const (
	noticeEvent  = "event"
	noticeCancel = "cancel"
	noticeReload = "reload"
)

// Site timings.
const (
	// defaultSiteTimeout is the config's site_timeout when unset.
	defaultSiteTimeout = 15 * time.Second
	// noticeTimeout bounds sending one notice: a lost notice costs
	// liveness, never state.
	noticeTimeout = 5 * time.Second
	// forgetAfter is how long a dead master stays on the site's list.
	forgetAfter = 24 * time.Hour
)

// site is this master's membership of its site: the heartbeat, the
// fence, the adoption of dead masters' builds, and the notices.
type site struct {
	id     string
	shared bool // other masters may share the store; false: alone (SQLite)
	store  siteStore
	runner *runner
	hub    *workerhub.Hub
	disp   *dispatcher
	fleet  *fleet
	bus    *events.Bus
	cfg    func() *config.Config
	self   func() drover.Master // this master's record, without times
	// reload reloads this master's config file (a reload notice);
	// compare records how it compares with the asking master's.
	reload  func(ctx context.Context) error
	compare func(origin, hash string)
	// leading tells the pollers whether this master leads the site.
	leading func(bool)
	now     func() time.Time
	logger  *slog.Logger

	adoptMu sync.Mutex // one adoption at a time

	mu       sync.Mutex
	started  time.Time
	lastBeat time.Time // when the last heartbeat that was taken was sent, on the monotonic clock
	fenced   bool      // this master let go of everything after its heartbeat lapsed
	others   int       // live masters besides this one, as of the last look
	leader   bool      // this master leads the site (polls, expires)
}

// timeout is the config's site timeout, with its default.
func (st *site) timeout() time.Duration {
	if d := st.cfg().Master.SiteTimeout; d > 0 {
		return d
	}
	return defaultSiteTimeout
}

// join records this master in its site as it starts: its first heartbeat,
// the workers it had marked disconnected (it has no sessions yet).
func (st *site) join(ctx context.Context) error {
	st.mu.Lock()
	st.started = st.now()
	st.mu.Unlock()
	if err := st.beat(ctx); err != nil {
		if st.shared {
			return fmt.Errorf("join the site: %w", err)
		}
		st.logger.Warn("record this master", "err", err)
	}
	if err := st.store.MarkDisconnected(ctx, st.id); err != nil {
		return fmt.Errorf("mark this master's workers disconnected: %w", err)
	}
	return nil
}

// beat records the heartbeat; it reports whether the store took it.
func (st *site) beat(ctx context.Context) error {
	sent := time.Now() // monotonic: the fence never reads a wall clock
	rec := st.self()
	st.mu.Lock()
	rec.Started = st.started
	st.mu.Unlock()
	bctx, cancel := context.WithTimeout(ctx, st.timeout()/5)
	err := st.store.Heartbeat(bctx, &rec)
	cancel()
	if err == nil {
		st.mu.Lock()
		st.lastBeat = sent
		st.mu.Unlock()
	}
	return err
}

// loop beats the heartbeat every fifth of the site timeout, fences this
// master when it cannot, takes back what is still its own when it can
// again, and takes over the builds of masters that stopped beating. A
// master alone on its store (SQLite) has no one to watch.
func (st *site) loop(ctx context.Context) {
	if !st.shared {
		return
	}
	for {
		t := time.NewTimer(st.timeout() / 5)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		st.tick(ctx)
	}
}

// tick is one turn of loop.
func (st *site) tick(ctx context.Context) {
	st.mu.Lock()
	last := st.lastBeat
	st.mu.Unlock()
	err := st.beat(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		st.logger.Error("site heartbeat", "err", err)
		if time.Since(last) > st.timeout()/2 {
			st.fence(ctx)
		}
		return
	}
	if time.Since(last) > st.timeout()/2 {
		// Beating again after a lapse the loop did not see fail (the
		// process was stopped, say): what this master drove may have
		// been taken over.
		st.fence(ctx)
	}
	st.unfence(ctx)
	if err := st.adoptOrphans(ctx); err != nil && ctx.Err() == nil {
		st.logger.Error("take over the builds of dead masters", "err", err)
	}
}

// fence lets go of every build and worker, and takes no new ones, until
// unfence.
func (st *site) fence(ctx context.Context) {
	st.mu.Lock()
	already := st.fenced
	st.fenced = true
	st.mu.Unlock()
	if already {
		return
	}
	st.disp.hold("fenced")
	st.logger.Error("this master's heartbeat lapsed: letting go of its builds and workers, which another master may take over",
		"builds", st.runner.count(), "site_timeout", st.timeout())
	st.runner.letGo(ctx, fmt.Errorf("heartbeat lapsed: %w", errLetGo))
	st.hub.CloseAll(errors.New("this master lost its place in the site; reconnect"))
}

// unfence takes back the builds still this master's and dispatches again.
func (st *site) unfence(ctx context.Context) {
	st.mu.Lock()
	fenced := st.fenced
	st.mu.Unlock()
	if !fenced {
		return
	}
	if err := st.adoptOwn(ctx); err != nil {
		st.logger.Error("take back builds after a lapsed heartbeat", "err", err)
		return // fenced still: the next beat tries again
	}
	st.mu.Lock()
	st.fenced = false
	st.mu.Unlock()
	st.logger.Info("this master's heartbeat is back: taking builds and workers again")
	st.disp.release("fenced")
}

// refusing refuses workers while this master is fenced.
func (st *site) refusing() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.fenced {
		return drover.Errorf(drover.Unavailable, "this master lost its place in the site; connect to another")
	}
	return nil
}

// alive is the set of masters whose heartbeat is recent by the database's
// clock, this one always included, with every recorded master.
func (st *site) alive(ctx context.Context) (map[string]bool, []drover.Master, error) {
	all, err := st.store.ListMasters(ctx)
	if err != nil {
		return nil, nil, err
	}
	live := map[string]bool{st.id: true}
	for _, x := range all {
		if x.SinceBeat <= st.timeout() {
			live[x.ID] = true
		}
	}
	leader := st.id
	for id := range live {
		leader = min(leader, id)
	}
	st.mu.Lock()
	st.others = len(live) - 1
	st.leader = leader == st.id
	st.mu.Unlock()
	if st.shared {
		st.leading(leader == st.id)
	}
	return live, all, nil
}

// leads tells whether this master leads its site: the one that polls
// sources and expires old logs and artifacts, so that the masters do not
// do it twice. A master alone (SQLite) always leads.
func (st *site) leads() bool {
	if !st.shared {
		return true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.leader
}

// othersAlive tells whether other masters of the site were alive at the
// last look.
func (st *site) othersAlive() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.others > 0
}

// adoptOrphans takes over the running builds of masters that are not
// alive: each is re-attached, or given up as retry.
func (st *site) adoptOrphans(ctx context.Context) error {
	live, all, err := st.alive(ctx)
	if err != nil {
		return err
	}
	for _, x := range all {
		if live[x.ID] {
			continue
		}
		// Its sessions died with it.
		if err := st.store.MarkDisconnected(ctx, x.ID); err != nil {
			return err
		}
		if x.SinceBeat > forgetAfter {
			if err := st.store.RemoveMaster(ctx, x.ID); err != nil {
				return err
			}
		}
	}
	running, err := st.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return err
	}
	for _, b := range running {
		if live[b.Master] {
			continue // this master's own are in hand (see adoptOwn)
		}
		if err := st.adopt(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// adoptOwn takes back the running builds this master drives in the store
// but not in memory: those its previous life left (at start), or those it
// let go of after a lapsed heartbeat that no other master took. It runs
// only while this master claims nothing new, so no fresh build is taken
// for a leftover.
func (st *site) adoptOwn(ctx context.Context) error {
	running, err := st.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return err
	}
	for _, b := range running {
		if b.Master != st.id && b.Master != "" {
			continue
		}
		if err := st.adopt(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// adopt takes build b over from its dead master (or this master's previous
// life): the store says who won it, then it is re-attached or given up.
func (st *site) adopt(ctx context.Context, b drover.Build) error {
	st.adoptMu.Lock()
	defer st.adoptMu.Unlock()
	if st.runner.has(b.ID) {
		return nil
	}
	if b.Master != st.id {
		// Builds from before sites had masters have Master "".
		won, err := st.store.AdoptBuild(ctx, b.ID, b.Master, st.id)
		if err != nil {
			return fmt.Errorf("adopt build %d: %w", b.ID, err)
		}
		if !won {
			return nil // another master was first, or it ended
		}
		st.logger.Warn("taking over a build from a master that stopped beating", "build", b.ID, "builder", b.Builder,
			"from", b.Master, "worker", b.Worker)
		b.Master = st.id
	}
	return st.runner.takeOver(ctx, b)
}

// claimHeld makes this master the driver of the builds whose commands a
// connecting worker still runs, when their master is gone: another master
// of the site died, or this one restarted. A worker holding a command of
// a build another live master drives is sent back (a Conflict), so it
// tries the next master of its list; that master's grace decides if it
// waits.
func (st *site) claimHeld(ctx context.Context, s *workerhub.Session, held []*pb.RunningCommand) error {
	for _, h := range held {
		if _, ok := st.hub.Tracked(s.Name, h.GetCommandId()); ok {
			continue
		}
		var id int64
		var step int
		if _, err := fmt.Sscanf(h.GetCommandId(), "b%d-s%d", &id, &step); err != nil {
			continue // not a command of ours: the worker kills it
		}
		b, err := st.store.GetBuild(ctx, id)
		if err != nil || b.State != drover.BuildRunning || b.Worker != s.Name || b.Master == st.id {
			continue
		}
		live, _, err := st.alive(ctx)
		if err != nil {
			return fmt.Errorf("cannot tell which master drives build %d: %w", id, err)
		}
		if live[b.Master] {
			return drover.Errorf(drover.Conflict, "build %d (command %s) is driven by master %s, which is alive: connect to it", id, h.GetCommandId(), b.Master)
		}
		if err := st.adopt(ctx, *b); err != nil {
			return err
		}
	}
	return nil
}

// leave says this master is gone, as it stops: the other masters take
// over at once what it leaves running.
func (st *site) leave(ctx context.Context) {
	if err := st.store.RemoveMaster(ctx, st.id); err != nil {
		st.logger.Warn("leave the site", "err", err)
	}
}

// status says which master this is and which masters share its database.
func (st *site) status(ctx context.Context) (api.SiteStatus, error) {
	live, all, err := st.alive(ctx)
	if err != nil {
		return api.SiteStatus{}, err
	}
	out := api.SiteStatus{This: st.id}
	for _, x := range all {
		out.Masters = append(out.Masters, api.MasterStatus{Master: x, Alive: live[x.ID]})
	}
	return out, nil
}

// passCancel asks the master of the site that drives b to cancel it;
// false when no other master does.
func (st *site) passCancel(ctx context.Context, b *drover.Build, reason string) bool {
	if !st.shared || b.Master == st.id || b.Master == "" {
		return false
	}
	st.notify(ctx, notice{Kind: noticeCancel, Build: b.ID, Reason: reason})
	return true
}

// notify sends a notice to the other masters. A lost notice costs
// liveness, never state: every master re-reads the store on its own
// schedule, so failures are logged and dropped.
func (st *site) notify(ctx context.Context, n notice) {
	n.Origin = st.id
	b, err := json.Marshal(n)
	if err != nil {
		st.logger.Error("encode site notice", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), noticeTimeout)
	defer cancel()
	if err := st.store.Notify(ctx, b); err != nil {
		st.logger.Warn("send site notice", "kind", n.Kind, "err", err)
	}
}

// forward sends this master's events to the other masters, so a browser
// on any of them sees every build live.
func (st *site) forward(ctx context.Context, sub *events.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.C:
			if !ok {
				return
			}
			if e.Origin != "" {
				continue // came from another master
			}
			st.notify(ctx, notice{Kind: noticeEvent, Event: &e})
		}
	}
}

// listen receives the other masters' notices until ctx ends.
func (st *site) listen(ctx context.Context) error {
	return st.store.Listen(ctx, func(payload []byte) {
		var n notice
		if err := json.Unmarshal(payload, &n); err != nil {
			st.logger.Warn("malformed site notice dropped", "err", err, "bytes", len(payload))
			return
		}
		if n.Origin == st.id || n.Origin == "" {
			return
		}
		st.handle(ctx, n)
	}, func() {
		// Notices may have been missed: everyone looks again.
		st.logger.Warn("site notices may have been missed (listener reconnected)")
		st.bus.Publish(events.Event{Type: events.Lagged, Origin: "site"})
		st.disp.kick()
	})
}

// handle acts on another master's notice.
func (st *site) handle(ctx context.Context, n notice) {
	switch n.Kind {
	case noticeEvent:
		if n.Event == nil {
			return
		}
		e := *n.Event
		e.Origin = n.Origin
		st.bus.Publish(e)
		switch e.Type {
		case events.RequestAdded, events.RequestChanged, events.BuildFinished, events.ConfigLoaded:
			// New work in the queue, or room for it under max_builds.
			st.disp.kick()
		case events.WorkerChanged:
			// An operator's availability set on another master applies
			// here too, should the worker connect here.
			st.fleet.refreshOverride(ctx, e.Worker)
		}
	case noticeCancel:
		if st.runner.has(n.Build) {
			if err := st.runner.cancelBuild(ctx, n.Build, n.Reason); err != nil {
				st.logger.Warn("cancel asked by another master", "build", n.Build, "from", n.Origin, "err", err)
			}
		}
	case noticeReload:
		st.logger.Info("reloading the config, as asked by another master of the site", "from", n.Origin)
		if err := st.reload(ctx); err != nil {
			st.logger.Error("reload asked by another master failed; the previous config stays", "err", err)
		}
		st.compare(n.Origin, n.Hash)
	default:
		st.logger.Warn("unknown site notice dropped", "kind", n.Kind, "from", n.Origin)
	}
}
