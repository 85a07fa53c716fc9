package master

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
)

// reloadState guards the record of loads.
type reloadState struct {
	mu     sync.Mutex
	status api.ConfigStatus
}

// ConfigStatus implements api.Backend.
func (m *Master) ConfigStatus() api.ConfigStatus {
	m.reload.mu.Lock()
	defer m.reload.mu.Unlock()
	st := m.reload.status
	st.Path, st.Builders = m.configPath, len(m.config().Builders)
	return st
}

// Reload implements api.Backend: it reloads the config file the master
// was started from, and asks the other masters of the site to reload
// theirs, so a reconfig applies to the whole site.
func (m *Master) Reload(ctx context.Context) error {
	if err := m.reloadLocal(ctx); err != nil {
		return err
	}
	if m.shared {
		m.compareConfig("", "")
		m.notify(ctx, notice{Kind: noticeReload, Hash: m.config().Hash})
	}
	return nil
}

// compareConfig records whether this master's config differs from the
// one master origin loaded (hash), or, with origin "", clears the record:
// this master's reload sets the site's config.
func (m *Master) compareConfig(origin, hash string) {
	own := m.config().Hash
	m.reload.mu.Lock()
	defer m.reload.mu.Unlock()
	if origin == "" || hash == "" || hash == own {
		m.reload.status.Differs, m.reload.status.DiffersHash = "", ""
		return
	}
	m.reload.status.Differs, m.reload.status.DiffersHash = origin, hash
	m.logger.Warn("this master's config differs from the one another master of the site loaded: deploy the same master.star to every master",
		"other", origin, "other_hash", hash, "hash", own)
}

// reloadLocal reloads this master's config file.
func (m *Master) reloadLocal(ctx context.Context) error {
	if m.configPath == "" {
		return drover.Errorf(drover.Unavailable, "this master was not started from a config file")
	}
	if err := m.ReloadFrom(ctx, m.configPath); err != nil {
		return drover.Errorf(drover.Invalid, "%w", err)
	}
	return nil
}

// Reload loads the config from path with the same loader as checkconfig.
// A config that fails to load is refused: the error is logged, kept for
// the admin page, and returned, and the config in force stays. A good one
// takes over for every new decision; running builds keep the builder
// definition they started with, and queued requests stay queued (those of
// removed builders are cancelled with a reason).
func (m *Master) ReloadFrom(ctx context.Context, path string) error {
	cfg, err := config.Load(path)
	now := m.now()
	if err != nil {
		m.reload.mu.Lock()
		m.reload.status.LastError, m.reload.status.ErrorAt = err.Error(), now
		m.reload.mu.Unlock()
		m.logger.Error("config refused; the previous config stays in force", "path", path, "err", err)
		return fmt.Errorf("config refused: %w", err)
	}
	old := m.config()
	m.cfg.Store(cfg)
	m.locks.setDefs(cfg.Locks)
	m.reload.mu.Lock()
	m.reload.status = api.ConfigStatus{Hash: cfg.Hash, LoadedAt: now}
	m.reload.mu.Unlock()
	if !proto.Equal(probesOf(old), probesOf(cfg)) {
		for _, s := range m.hub.Sessions() {
			if err := s.SetProbes(probesOf(cfg)); err != nil {
				m.logger.Warn("send probes", "worker", s.Name, "err", err)
			}
		}
	}
	if ps := m.pollers.Load(); ps != nil {
		ps.apply(cfg.Sources)
	}
	if err := m.cancelOrphanRequests(ctx, cfg); err != nil {
		m.logger.Error("cancel requests of removed builders", "err", err)
	}
	m.logger.Info("config reloaded", "hash", cfg.Hash, "builders", len(cfg.Builders), "previous_builders", len(old.Builders))
	m.bus.Publish(events.Event{Type: events.ConfigLoaded})
	m.kick()
	return nil
}
