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
// With SQLite the site is one master: nothing crosses, and a restarted
// master takes over the builds it left.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/events"
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

// ID is this master's identity in its site.
func (m *Master) ID() string { return m.id }

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

// siteState is what the site part of a master keeps.
type siteState struct {
	mu       sync.Mutex
	started  time.Time
	lastBeat time.Time  // the last heartbeat the store took
	others   int        // live masters besides this one, as of the last look
	leader   bool       // this master leads the site (polls, expires)
	adoptMu  sync.Mutex // one adoption at a time
}

// notify sends a notice to the other masters. A lost notice costs
// liveness, never state: every master re-reads the store on its own
// schedule, so failures are logged and dropped.
func (m *Master) notify(ctx context.Context, n notice) {
	n.Origin = m.id
	b, err := json.Marshal(n)
	if err != nil {
		m.logger.Error("encode site notice", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.store.Notify(ctx, b); err != nil {
		m.logger.Warn("send site notice", "kind", n.Kind, "err", err)
	}
}

// forwardEvents sends this master's events to the other masters, so a
// browser on any of them sees every build live.
func (m *Master) forwardEvents(ctx context.Context, sub *events.Subscription) {
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
			m.notify(ctx, notice{Kind: noticeEvent, Event: &e})
		}
	}
}

// listenSite receives the other masters' notices until ctx ends.
func (m *Master) listenSite(ctx context.Context) error {
	return m.store.Listen(ctx, func(payload []byte) {
		var n notice
		if err := json.Unmarshal(payload, &n); err != nil {
			m.logger.Warn("malformed site notice dropped", "err", err, "bytes", len(payload))
			return
		}
		if n.Origin == m.id || n.Origin == "" {
			return
		}
		m.handleNotice(ctx, n)
	}, func() {
		// Notices may have been missed: everyone looks again.
		m.logger.Warn("site notices may have been missed (listener reconnected)")
		m.bus.Publish(events.Event{Type: events.Lagged, Origin: "site"})
		m.kick()
	})
}

func (m *Master) handleNotice(ctx context.Context, n notice) {
	switch n.Kind {
	case noticeEvent:
		if n.Event == nil {
			return
		}
		e := *n.Event
		e.Origin = n.Origin
		m.bus.Publish(e)
		switch e.Type {
		case events.RequestAdded, events.RequestChanged, events.BuildFinished, events.ConfigLoaded:
			// New work in the queue, or room for it under max_builds.
			m.kick()
		case events.WorkerChanged:
			// An operator's availability set on another master applies
			// here too, should the worker connect here.
			m.refreshOverride(ctx, e.Worker)
		}
	case noticeCancel:
		m.mu.Lock()
		_, ours := m.builds[n.Build]
		m.mu.Unlock()
		if ours {
			if err := m.CancelBuild(ctx, n.Build, n.Reason); err != nil {
				m.logger.Warn("cancel asked by another master", "build", n.Build, "from", n.Origin, "err", err)
			}
		}
	case noticeReload:
		m.logger.Info("reloading the config, as asked by another master of the site", "from", n.Origin)
		if err := m.reloadLocal(ctx); err != nil {
			m.logger.Error("reload asked by another master failed; the previous config stays", "err", err)
		}
		m.compareConfig(n.Origin, n.Hash)
	default:
		m.logger.Warn("unknown site notice dropped", "kind", n.Kind, "from", n.Origin)
	}
}

// siteTimeout is the config's site timeout, with its default.
func (m *Master) siteTimeout() time.Duration {
	if d := m.config().Master.SiteTimeout; d > 0 {
		return d
	}
	return 15 * time.Second
}

// siteLoop beats this master's heartbeat and takes over the builds of
// masters that stopped beating. A master alone on its store (SQLite)
// recorded itself at start and has no one to watch.
func (m *Master) siteLoop(ctx context.Context) {
	if !m.shared {
		return
	}
	for {
		m.beat(ctx)
		if err := m.adoptOrphans(ctx); err != nil && ctx.Err() == nil {
			m.logger.Error("take over the builds of dead masters", "err", err)
		}
		t := time.NewTimer(m.siteTimeout() / 5)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// self is this master's site record.
func (m *Master) self(now time.Time) *drover.Master {
	m.site.mu.Lock()
	started := m.site.started
	m.site.mu.Unlock()
	return &drover.Master{ID: m.id, URL: m.URL(), WorkersAddr: m.WorkersAddr(), Version: m.version, Started: started, Heartbeat: now}
}

// beat records the heartbeat. A master whose heartbeat lapsed beyond the
// site timeout may have had its builds taken over: it lets go of every
// build it drives (their commands run on) and of its workers, which
// reconnect; whatever is still its own it then takes back.
func (m *Master) beat(ctx context.Context) {
	now := m.now()
	bctx, cancel := context.WithTimeout(ctx, m.siteTimeout()/2)
	err := m.store.Heartbeat(bctx, m.self(now))
	cancel()
	m.site.mu.Lock()
	lapsed := now.Sub(m.site.lastBeat) > m.siteTimeout()
	if err == nil {
		m.site.lastBeat = now
	}
	m.site.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			m.logger.Error("site heartbeat", "err", err)
		}
		return
	}
	if lapsed {
		m.fence(ctx, now)
	}
}

// fence lets go of every build and worker after a lapsed heartbeat.
func (m *Master) fence(ctx context.Context, now time.Time) {
	m.mu.Lock()
	runs := make([]*buildRun, 0, len(m.builds))
	for _, r := range m.builds {
		runs = append(runs, r)
	}
	m.fencing = true
	m.mu.Unlock()
	m.logger.Error("this master's heartbeat lapsed: letting go of its builds and workers, which another master may have taken over",
		"builds", len(runs), "site_timeout", m.siteTimeout())
	for _, r := range runs {
		r.cancel(errMasterStopping)
	}
	for {
		m.mu.Lock()
		n := len(m.builds)
		m.mu.Unlock()
		if n == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.hub.CloseAll(errors.New("this master lost its place in the site; reconnect"))
	if err := m.adoptOwn(ctx); err != nil && ctx.Err() == nil {
		m.logger.Error("take back builds after a lapsed heartbeat", "err", err)
	}
	m.mu.Lock()
	m.fencing = false
	m.mu.Unlock()
	m.kick()
}

// alive is the set of masters whose heartbeat is recent, this one always
// included.
func (m *Master) alive(ctx context.Context) (map[string]bool, []drover.Master, error) {
	all, err := m.store.ListMasters(ctx)
	if err != nil {
		return nil, nil, err
	}
	now := m.now()
	live := map[string]bool{m.id: true}
	for _, x := range all {
		if now.Sub(x.Heartbeat) <= m.siteTimeout() {
			live[x.ID] = true
		}
	}
	m.site.mu.Lock()
	m.site.others = len(live) - 1
	m.site.mu.Unlock()
	leader := m.id
	for id := range live {
		leader = min(leader, id)
	}
	m.site.mu.Lock()
	m.site.leader = leader == m.id
	m.site.mu.Unlock()
	if ps := m.pollers.Load(); ps != nil && m.shared {
		ps.setLeader(leader == m.id)
	}
	return live, all, nil
}

// leads tells whether this master leads its site: the one that polls
// sources and expires old logs and artifacts, so that the masters do not
// do it twice. A master alone (SQLite) always leads.
func (m *Master) leads() bool {
	if !m.shared {
		return true
	}
	m.site.mu.Lock()
	defer m.site.mu.Unlock()
	return m.site.leader
}

// othersAlive tells whether other masters of the site were alive at the
// last look.
func (m *Master) othersAlive() bool {
	m.site.mu.Lock()
	defer m.site.mu.Unlock()
	return m.site.others > 0
}

// runningByBuilder counts the site's running builds per builder, for
// max_builds across masters.
func (m *Master) runningByBuilder(ctx context.Context) (map[string]int, error) {
	running, err := m.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return nil, fmt.Errorf("count running builds: %w", err)
	}
	n := map[string]int{}
	for _, b := range running {
		n[b.Builder]++
	}
	return n, nil
}

// forgetAfter is how long a dead master stays on the site's list.
const forgetAfter = 24 * time.Hour

// adoptOrphans takes over the running builds of masters that are not
// alive, and of this master's previous life (a restart): each is
// re-attached, or given up as retry.
func (m *Master) adoptOrphans(ctx context.Context) error {
	live, all, err := m.alive(ctx)
	if err != nil {
		return err
	}
	now := m.now()
	for _, x := range all {
		if live[x.ID] {
			continue
		}
		// Its sessions died with it.
		if err := m.store.MarkDisconnected(ctx, x.ID); err != nil {
			return err
		}
		if now.Sub(x.Heartbeat) > forgetAfter {
			if err := m.store.RemoveMaster(ctx, x.ID); err != nil {
				return err
			}
		}
	}
	running, err := m.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return err
	}
	for _, b := range running {
		if live[b.Master] {
			continue // this master's own are in hand (see adoptOwn)
		}
		if err := m.adopt(ctx, b); err != nil {
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
func (m *Master) adoptOwn(ctx context.Context) error {
	running, err := m.store.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: 100000})
	if err != nil {
		return err
	}
	for _, b := range running {
		if b.Master != m.id && b.Master != "" {
			continue
		}
		if err := m.adopt(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// adopt takes build b over from its dead master (or this master's previous
// life): the store says who won it, then it is re-attached or given up.
func (m *Master) adopt(ctx context.Context, b drover.Build) error {
	m.site.adoptMu.Lock()
	defer m.site.adoptMu.Unlock()
	m.mu.Lock()
	_, mine := m.builds[b.ID]
	m.mu.Unlock()
	if mine {
		return nil
	}
	if b.Master != m.id {
		// Builds from before sites had masters have Master "".
		won, err := m.store.AdoptBuild(ctx, b.ID, b.Master, m.id)
		if err != nil {
			return fmt.Errorf("adopt build %d: %w", b.ID, err)
		}
		if !won {
			return nil // another master was first, or it ended
		}
		m.logger.Warn("taking over a build from a master that stopped beating", "build", b.ID, "builder", b.Builder,
			"from", b.Master, "worker", b.Worker)
		b.Master = m.id
	}
	if r, why := m.resumable(ctx, b); r != nil {
		m.startRecovered(r)
		return nil
	} else {
		return m.giveUpBuild(ctx, b, why)
	}
}

// Site implements api.Backend.
func (m *Master) Site(ctx context.Context) (api.SiteStatus, error) {
	live, all, err := m.alive(ctx)
	if err != nil {
		return api.SiteStatus{}, err
	}
	st := api.SiteStatus{This: m.id}
	for _, x := range all {
		st.Masters = append(st.Masters, api.MasterStatus{Master: x, Alive: live[x.ID]})
	}
	return st, nil
}

// refreshOverride reads a worker's operator override from the store.
func (m *Master) refreshOverride(ctx context.Context, worker string) {
	w, err := m.store.GetWorker(ctx, worker)
	if err != nil {
		return
	}
	m.mu.Lock()
	if w.Override != nil {
		m.overrides[worker] = *w.Override
	} else {
		delete(m.overrides, worker)
	}
	m.mu.Unlock()
	m.kick()
}
