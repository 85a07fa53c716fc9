package master

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
)

// configs holds the config in force and the record of its loads. A load
// that fails is refused: the error is kept for the admin page and the
// config in force stays. Parts read the config through get, once per
// decision, so that a reload takes over at the next one.
type configs struct {
	path   string // the file the master was started from; "": none
	now    func() time.Time
	logger *slog.Logger

	cur atomic.Pointer[config.Config]

	mu     sync.Mutex
	status api.ConfigStatus
}

func newConfigs(cfg *config.Config, path string, now func() time.Time, logger *slog.Logger) *configs {
	c := &configs{path: path, now: now, logger: logger}
	c.cur.Store(cfg)
	c.status = api.ConfigStatus{Hash: cfg.Hash, LoadedAt: now()}
	return c
}

// get is the config in force.
func (c *configs) get() *config.Config { return c.cur.Load() }

// load loads the config file again with the checkconfig loader and, when
// it loads, puts it in force; it returns the new config and the one it
// replaced. A broken file is Invalid, with file:line in the message.
func (c *configs) load() (cfg, old *config.Config, err error) {
	if c.path == "" {
		return nil, nil, drover.Errorf(drover.Unavailable, "this master was not started from a config file")
	}
	cfg, err = config.Load(c.path)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.status.LastError, c.status.ErrorAt = err.Error(), now
		c.logger.Error("config refused; the previous config stays in force", "path", c.path, "err", err)
		return nil, nil, drover.Errorf(drover.Invalid, "config refused: %w", err)
	}
	old = c.cur.Swap(cfg)
	c.status = api.ConfigStatus{Hash: cfg.Hash, LoadedAt: now}
	return cfg, old, nil
}

// state says which config is in force and how the last load went.
func (c *configs) state() api.ConfigStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Path, st.Builders = c.path, len(c.get().Builders)
	return st
}

// compare records whether this master's config differs from the one
// master origin loaded (hash), or, with origin "", clears the record: this
// master's reload sets the site's config.
func (c *configs) compare(origin, hash string) {
	own := c.get().Hash
	c.mu.Lock()
	defer c.mu.Unlock()
	if origin == "" || hash == "" || hash == own {
		c.status.Differs, c.status.DiffersHash = "", ""
		return
	}
	c.status.Differs, c.status.DiffersHash = origin, hash
	c.logger.Warn("this master's config differs from the one another master of the site loaded: deploy the same master.star to every master",
		"other", origin, "other_hash", hash, "hash", own)
}
